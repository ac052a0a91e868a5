"""Offline mini ogbg_molpcba: RDKit's 5,000 NCI molecules in the tfds ogbg_molpcba format.

Graphs are the exact OGB features (``ogb.utils.smiles2graph``: 9 atom and 3 bond features),
stored with each bond once as tfds stores them; labels are 128 real molecular properties
(:mod:`.mini_labels`) with NaN for hidden ones; the split is OGB's scaffold split (80/10/10).
Prepared once (about 20 s on one core), cached as one ``.npz`` under ``data_dir`` and written
atomically, so an interrupted preparation leaves nothing behind.
"""

import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import rdkit
from ogb.utils import smiles2graph
from rdkit import Chem, RDLogger
from rdkit.Chem.Scaffolds import MurckoScaffold
from tqdm import tqdm

from workloads.ogbg_molpcba import mini_labels

# Bump when the preparation changes, so stale caches are not reused.
VERSION = 1
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
NCI_SMILES = Path(rdkit.__file__).parent / "Data" / "NCI" / "first_5K.smi"


def cache_path(data_dir: str | os.PathLike, max_molecules: int | None) -> Path:
    """Where the prepared mini dataset lives (one file per version and size)."""
    size = "all" if max_molecules is None else str(max_molecules)
    return Path(data_dir).expanduser() / "ogbg_molpcba_mini" / f"v{VERSION}_{size}.npz"


def scaffold_split(mols: list[Chem.Mol]) -> np.ndarray:
    """OGB's scaffold split: split id (0/1/2) per molecule.

    Molecules are grouped by Bemis-Murcko scaffold; groups go, largest first, to train
    until it would exceed 80%, then to validation until 90%, then to test, so validation
    and test hold scaffolds never seen in training (as in ogbg-molpcba).
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, mol in enumerate(mols):
        groups[MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=True)].append(i)
    ordered = sorted(groups.values(), key=lambda g: (len(g), g[0]), reverse=True)
    n = len(mols)
    train_cut, valid_cut = SPLIT_FRACTIONS[0] * n, (SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]) * n
    split = np.zeros(n, np.int8)
    n_train = n_valid = 0
    for group in ordered:
        if n_train + len(group) <= train_cut:
            n_train += len(group)
        elif n_train + n_valid + len(group) <= valid_cut:
            split[group] = 1
            n_valid += len(group)
        else:
            split[group] = 2
    return split


def _graph_one_direction(smiles: str) -> dict[str, np.ndarray]:
    graph = smiles2graph(smiles)
    # smiles2graph lists every bond as (i, j) then (j, i); tfds keeps one direction.
    return {
        "node_feat": graph["node_feat"].astype(np.float32),
        "edge_feat": graph["edge_feat"][::2].astype(np.float32),
        "edge_index": graph["edge_index"][:, ::2].T.astype(np.int64),
    }


def build(max_molecules: int | None = None, progress: bool = True) -> dict[str, np.ndarray]:
    """Computes the whole mini dataset in memory (see :func:`prepare` to cache it)."""
    RDLogger.DisableLog("rdApp.*")  # a few NCI SMILES are invalid; they are skipped below
    lines = NCI_SMILES.read_text().splitlines()[:max_molecules]
    parsed = [(line.split()[0], Chem.MolFromSmiles(line.split()[0])) for line in lines if line]
    parsed = [(smi, mol) for smi, mol in parsed if mol is not None]
    featurize = mini_labels.MoleculeFeaturizer()
    graphs, hits, counts, values = [], [], [], []
    # Redirected output (CI, log files) gets a line every 10 s instead of every update.
    interval = 0.1 if sys.stderr.isatty() else 10.0
    bar = tqdm(
        parsed, desc="mini ogbg_molpcba", disable=not progress, unit="mol", mininterval=interval
    )
    for smi, mol in bar:
        graphs.append(_graph_one_direction(smi))
        h, c, v = featurize(mol)
        hits.append(h)
        counts.append(c)
        values.append(v)
    names, sources, positives = mini_labels.candidate_tasks(
        featurize.filter_names, np.stack(hits), np.stack(counts), np.stack(values)
    )
    missing = mini_labels.missing_mask(*positives.shape)
    chosen = mini_labels.select_tasks(sources, positives, missing)
    labels = positives[:, chosen].astype(np.float32)
    labels[missing[:, chosen]] = np.nan
    return {
        "smiles": np.array([smi for smi, _ in parsed]),
        "split": scaffold_split([mol for _, mol in parsed]),
        "num_nodes": np.array([len(g["node_feat"]) for g in graphs], np.int64),
        "num_edges": np.array([len(g["edge_index"]) for g in graphs], np.int64),
        "node_feat": np.concatenate([g["node_feat"] for g in graphs]),
        "edge_feat": np.concatenate([g["edge_feat"] for g in graphs]),
        "edge_index": np.concatenate([g["edge_index"] for g in graphs]),
        "labels": labels,
        "task_names": np.array([names[j] for j in chosen]),
        "task_sources": np.array([sources[j] for j in chosen]),
    }


def prepare(
    data_dir: str | os.PathLike, max_molecules: int | None = None, progress: bool = True
) -> Path:
    """Builds and caches the mini dataset unless already cached; returns its path."""
    path = cache_path(data_dir, max_molecules)
    if path.exists():
        return path
    arrays = build(max_molecules, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Temp file in the same directory + os.replace: readers never see a partial file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


class MiniSplit:
    """Random-access examples of one split, in the tfds ``ogbg_molpcba`` format."""

    def __init__(self, arrays: dict[str, np.ndarray], indices: np.ndarray) -> None:
        self._a = arrays
        self._indices = indices
        self._node_start = np.concatenate([[0], np.cumsum(arrays["num_nodes"])])
        self._edge_start = np.concatenate([[0], np.cumsum(arrays["num_edges"])])

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        j = self._indices[i]
        nodes = slice(self._node_start[j], self._node_start[j + 1])
        edges = slice(self._edge_start[j], self._edge_start[j + 1])
        return {
            "num_nodes": self._a["num_nodes"][j : j + 1],
            "node_feat": self._a["node_feat"][nodes],
            "num_edges": self._a["num_edges"][j : j + 1],
            "edge_feat": self._a["edge_feat"][edges],
            "edge_index": self._a["edge_index"][edges],
            "labels": self._a["labels"][j],
        }


def load(
    data_dir: str | os.PathLike, max_molecules: int | None = None, progress: bool = True
) -> dict:
    """Prepares if needed, then loads: ``{"splits": {name: MiniSplit}, "labels": ..., ...}``."""
    with np.load(prepare(data_dir, max_molecules, progress)) as f:
        arrays = {k: f[k] for k in f.files}
    return {
        "splits": {
            name: MiniSplit(arrays, np.flatnonzero(arrays["split"] == k))
            for k, name in enumerate(SPLITS)
        },
        "task_names": [str(s) for s in arrays["task_names"]],
        "task_sources": [str(s) for s in arrays["task_sources"]],
        "smiles": arrays["smiles"],
        "split": arrays["split"],
        "labels": arrays["labels"],
    }
