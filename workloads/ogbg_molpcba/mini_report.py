"""Report on the offline mini ogbg_molpcba: label statistics and simple baselines.

Usage: ``python -m workloads.ogbg_molpcba.mini_report [--data_dir DIR] [--max_molecules N]``

Prints per-task positive and missing rates, how many tasks each label source gave, and the
validation/test mean average precision of (a) a constant predictor and (b) a Morgan
fingerprint + logistic regression model per task, so a GNN's numbers can be judged.
"""

import argparse
import collections
import time

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator
from sklearn.linear_model import LogisticRegression

from workloads.base import default_data_dir
from workloads.ogbg_molpcba import mini_dataset
from workloads.ogbg_molpcba.metrics import mean_average_precision


def morgan_fingerprints(smiles: np.ndarray, radius: int = 2, bits: int = 2048) -> np.ndarray:
    """``(n, bits)`` Morgan (ECFP4-like) bit vectors."""
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=bits)
    return np.stack([gen.GetFingerprintAsNumPy(Chem.MolFromSmiles(s)) for s in smiles])


def fingerprint_baseline(data: dict) -> dict[str, float]:
    """Validation/test mAP of per-task L2 logistic regression on Morgan fingerprints."""
    x = morgan_fingerprints(data["smiles"]).astype(np.float32)
    labels, split = data["labels"], data["split"]
    mask = ~np.isnan(labels)
    scores = np.zeros_like(labels)
    train = split == 0
    for task in range(labels.shape[1]):
        rows = train & mask[:, task]
        y = labels[rows, task]
        if y.min() == y.max():
            scores[:, task] = y[0]
            continue
        model = LogisticRegression(C=0.1, solver="liblinear")
        scores[:, task] = model.fit(x[rows], y).predict_proba(x)[:, 1]
    return _evaluate(scores, labels, mask, split)


def constant_baseline(data: dict) -> dict[str, float]:
    """mAP of predicting every molecule alike (AP = the positive rate of each task)."""
    labels = data["labels"]
    return _evaluate(np.zeros_like(labels), labels, ~np.isnan(labels), data["split"])


def _evaluate(scores, labels, mask, split) -> dict[str, float]:
    labels = np.nan_to_num(labels)
    return {
        name: mean_average_precision(scores[split == k], labels[split == k], mask[split == k])
        for k, name in enumerate(mini_dataset.SPLITS)
        if name != "train"
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=default_data_dir())
    parser.add_argument("--max_molecules", type=int, default=None)
    args = parser.parse_args()

    start = time.perf_counter()
    path = mini_dataset.prepare(args.data_dir, args.max_molecules)
    print(f"dataset: {path} (ready in {time.perf_counter() - start:.1f} s)")
    data = mini_dataset.load(args.data_dir, args.max_molecules, progress=False)
    labels = data["labels"]
    labelled = ~np.isnan(labels)
    rates = np.nansum(labels, 0) / labelled.sum(0)
    sizes = {name: len(split) for name, split in data["splits"].items()}
    print(f"molecules per split: {sizes}")
    print(f"tasks per source: {dict(collections.Counter(data['task_sources']))}")
    print(
        f"positive rate: min {rates.min():.4f}, median {np.median(rates):.4f}, "
        f"max {rates.max():.4f}; missing labels: {1 - labelled.mean():.3f}"
    )
    print(f"{'task':>4}  {'pos rate':>8}  {'missing':>7}  name")
    for task, name in enumerate(data["task_names"]):
        print(f"{task:>4}  {rates[task]:8.4f}  {1 - labelled[:, task].mean():7.3f}  {name}")
    for title, fn in (
        ("constant predictor", constant_baseline),
        ("Morgan fingerprint + logistic regression", fingerprint_baseline),
    ):
        start = time.perf_counter()
        result = fn(data)
        print(
            f"{title}: validation mAP {result['validation']:.4f}, "
            f"test mAP {result['test']:.4f} ({time.perf_counter() - start:.1f} s)"
        )


if __name__ == "__main__":
    main()
