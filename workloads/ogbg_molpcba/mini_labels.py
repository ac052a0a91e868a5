"""128 real binary molecular properties for the offline mini dataset.

ogbg-molpcba's labels are 128 bioassay outcomes: sparse (most positive rates are a few
percent), partly missing, and only partly explained by substructures. We cannot run assays,
so each task is a real, deterministic property of the molecule, from three sources:

- ``filter``: a structural alert of RDKit's FilterCatalog (Brenk, Glaxo, LINT) matches;
- ``fragment``: an ``rdkit.Chem.Fragments`` functional-group count reaches 1 (or 2);
- ``descriptor``: a physico-chemical descriptor (logP, TPSA, ...) lies in its upper or lower
  tail or in a band around its median (quantile thresholds of this dataset), which
  substructure fingerprints capture only approximately.

Every kept task has a positive rate (over its labelled molecules) within [1%, 50%], and
near-duplicate tasks are dropped. Labels are then hidden at random per task (NaN), as
molpcba's untested molecule/assay pairs are.
"""

import numpy as np
from rdkit import Chem
from rdkit.Chem import Descriptors, Fragments
from rdkit.Chem.FilterCatalog import FilterCatalog, FilterCatalogParams

NUM_TASKS = 128
MIN_RATE, MAX_RATE = 0.01, 0.50
# Quotas per source, in selection order; descriptors fill whatever the others leave.
QUOTAS = (("filter", 32), ("fragment", 32), ("descriptor", NUM_TASKS))
# Cheap catalogs (PAINS/NIH are 5x slower per molecule and add few tasks above 1%).
FILTER_CATALOGS = ("BRENK", "CHEMBL_Glaxo", "CHEMBL_LINT")
FRAGMENTS = sorted(name for name in dir(Fragments) if name.startswith("fr_"))
DESCRIPTORS = (
    "MolLogP", "TPSA", "MolWt", "NumHDonors", "NumHAcceptors", "NumRotatableBonds",
    "RingCount", "FractionCSP3", "NumAromaticRings", "MolMR", "LabuteASA", "NumHeteroatoms",
    "Kappa1", "Chi1v", "BalabanJ", "NumAliphaticRings", "NumValenceElectrons",
    "NumSaturatedRings", "HallKierAlpha", "Kappa2", "Chi0v", "NumAromaticHeterocycles",
)  # fmt: skip
# (region, positive rate) pairs; thresholds are quantiles of the dataset's descriptor values.
# A "band" around the median is non-monotonic in the descriptor: hard for linear models.
DESCRIPTOR_REGIONS = (
    ("high", 0.03), ("low", 0.05), ("band", 0.10), ("high", 0.10), ("low", 0.20), ("band", 0.25),
    ("high", 0.30),
)  # fmt: skip
# Per-task fraction of hidden (missing) labels is drawn from this range.
MISSING_RANGE = (0.02, 0.40)
# Two tasks whose positive sets overlap more than this (Jaccard) count as duplicates.
MAX_JACCARD = 0.9


class MoleculeFeaturizer:
    """Raw properties of one molecule, from which candidate tasks are built."""

    def __init__(self) -> None:
        self.catalogs = {}
        for name in FILTER_CATALOGS:
            params = FilterCatalogParams()
            params.AddCatalog(getattr(FilterCatalogParams.FilterCatalogs, name))
            self.catalogs[name] = FilterCatalog(params)
        self.filter_names = sorted(
            {
                f"{cat}:{catalog.GetEntryWithIdx(i).GetDescription()}"
                for cat, catalog in self.catalogs.items()
                for i in range(catalog.GetNumEntries())
            }
        )
        self._filter_index = {name: i for i, name in enumerate(self.filter_names)}
        self._fragment_fns = [getattr(Fragments, name) for name in FRAGMENTS]
        self._descriptor_fns = [getattr(Descriptors, name) for name in DESCRIPTORS]

    def __call__(self, mol: Chem.Mol) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Returns (filter hits (F,) bool, fragment counts (85,), descriptor values (16,))."""
        hits = np.zeros(len(self.filter_names), bool)
        for cat, catalog in self.catalogs.items():
            for entry in catalog.GetMatches(mol):
                hits[self._filter_index[f"{cat}:{entry.GetDescription()}"]] = True
        counts = np.array([fn(mol) for fn in self._fragment_fns], np.int32)
        values = np.array([fn(mol) for fn in self._descriptor_fns], np.float64)
        return hits, counts, np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)


def candidate_tasks(
    filter_names: list[str], hits: np.ndarray, counts: np.ndarray, values: np.ndarray
) -> tuple[list[str], list[str], np.ndarray]:
    """All candidate binary tasks: ``(names, sources, positives (n_mol, n_candidates) bool)``."""
    names, sources, columns = [], [], []
    for j, name in enumerate(filter_names):
        names.append(f"filter:{name}")
        sources.append("filter")
        columns.append(hits[:, j])
    for j, name in enumerate(FRAGMENTS):
        for at_least in (1, 2):
            names.append(f"fragment:{name}>={at_least}")
            sources.append("fragment")
            columns.append(counts[:, j] >= at_least)
    # Tail-major order, so that every descriptor contributes before any gets a second task.
    for region, rate in DESCRIPTOR_REGIONS:
        for j, name in enumerate(DESCRIPTORS):
            v = values[:, j]
            if region == "high":
                t = np.quantile(v, 1.0 - rate)
                columns.append(v > t)
                names.append(f"descriptor:{name}>{t:.4g}")
            elif region == "low":
                t = np.quantile(v, rate)
                columns.append(v < t)
                names.append(f"descriptor:{name}<{t:.4g}")
            else:
                lo, hi = np.quantile(v, [0.5 - rate / 2, 0.5 + rate / 2])
                columns.append((v >= lo) & (v <= hi))
                names.append(f"descriptor:{lo:.4g}<={name}<={hi:.4g}")
            sources.append("descriptor")
    return names, sources, np.stack(columns, axis=1)


def missing_mask(num_molecules: int, num_tasks: int, seed: int = 0) -> np.ndarray:
    """Which (molecule, task) labels are hidden; each task hides its own random fraction."""
    rng = np.random.default_rng(seed)
    fraction = rng.uniform(*MISSING_RANGE, size=num_tasks)
    return rng.random((num_molecules, num_tasks)) < fraction


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def select_tasks(sources: list[str], positives: np.ndarray, missing: np.ndarray) -> list[int]:
    """Picks ``NUM_TASKS`` candidate columns: rate within bounds, no near-duplicates.

    Args:
        sources: Source of each candidate column.
        positives: ``(n_mol, n_candidates)`` bool.
        missing: ``(n_mol, n_candidates)`` bool, labels that will be hidden.

    Raises:
        ValueError: if fewer than ``NUM_TASKS`` candidates qualify (too few molecules).
    """
    labelled = ~missing
    rates = (positives & labelled).sum(0) / np.maximum(labelled.sum(0), 1)
    eligible = (rates >= MIN_RATE) & (rates <= MAX_RATE)
    chosen: list[int] = []
    for source, quota in QUOTAS:
        taken = 0
        for j in np.flatnonzero(eligible & (np.array(sources) == source)):
            if len(chosen) == NUM_TASKS or taken == quota:
                break
            if all(_jaccard(positives[:, j], positives[:, k]) <= MAX_JACCARD for k in chosen):
                chosen.append(int(j))
                taken += 1
    if len(chosen) < NUM_TASKS:
        raise ValueError(
            f"Only {len(chosen)} of {NUM_TASKS} mini-dataset tasks have a positive rate in "
            f"[{MIN_RATE}, {MAX_RATE}]; use more molecules (max_molecules of 100 or more)."
        )
    return chosen
