"""Prints the mini ImageNet's make-up and the top-1 error of simple baselines.

Usage: ``python -m workloads.imagenet.mini_report [--data_dir DIR] [--image_size 32]``

Baselines (what a trained ResNet must beat for the task to mean anything): chance, the
majority class, and multinomial logistic regression on the eval crop's standardized
pixels (scikit-learn), fitted on train and scored on validation and test.
"""

import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from workloads.base import default_data_dir
from workloads.imagenet import mini_dataset, preprocess


def pixels(split, image_size: int) -> np.ndarray:
    crops = [preprocess.eval_image(split[i]["image"], image_size) for i in range(len(split))]
    return np.stack(crops).reshape(len(split), -1).astype(np.float32)


def baselines(data_dir: str, image_size: int = 32) -> dict[str, dict[str, float]]:
    """``{baseline: {"validation/error": e, "test/error": e}}``."""
    splits = mini_dataset.load(data_dir)
    x = {s: pixels(v, image_size) for s, v in splits.items()}
    y = {s: v.labels for s, v in splits.items()}
    scaler = StandardScaler().fit(x["train"])
    model = LogisticRegression(C=0.01, max_iter=300).fit(scaler.transform(x["train"]), y["train"])
    majority = np.bincount(y["train"]).argmax()
    out = {"chance": {}, "majority class": {}, "logistic regression on pixels": {}}
    for split in ("validation", "test"):
        key = f"{split}/error"
        out["chance"][key] = 1 - 1 / mini_dataset.NUM_CLASSES
        out["majority class"][key] = float(np.mean(y[split] != majority))
        predicted = model.predict(scaler.transform(x[split]))
        out["logistic regression on pixels"][key] = float(np.mean(predicted != y[split]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=default_data_dir())
    parser.add_argument("--image_size", type=int, default=32)
    args = parser.parse_args()
    splits = mini_dataset.load(args.data_dir)
    for name, split in splits.items():
        sizes = [len(split[i]["image"]) for i in range(len(split))]
        print(f"{name}: {len(split)} images, {np.bincount(split.labels).tolist()} per class, "
              f"JPEG {np.mean(sizes):.0f} bytes on average")  # fmt: skip
    print(f"photographs: {len(mini_dataset.PHOTOS)}")
    print("| baseline | validation top-1 error | test top-1 error |\n|---|---|---|")
    for name, errors in baselines(args.data_dir, args.image_size).items():
        print(f"| {name} | {errors['validation/error']:.3f} | {errors['test/error']:.3f} |")


if __name__ == "__main__":
    main()
