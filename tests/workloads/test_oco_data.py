"""workloads.oco: the LIBSVM reader and the offline data sets of online logistic regression."""

import numpy as np
import pytest

from workloads.oco import load_breast_cancer, load_digits, load_libsvm


def test_libsvm_reader(tmp_path):
    path = tmp_path / "tiny"
    path.write_text("+1 1:0.5 3:1.0\n-1 2:2.0\n+1 1:1 2:1 3:1\n0 3:-1\n")
    x, y, info = load_libsvm(str(path))
    want = np.array([[0.5, 0, 1, 1], [0, 2, 0, 1], [1, 1, 1, 1], [0, 0, -1, 1]], float)
    np.testing.assert_array_equal(x, want)
    np.testing.assert_array_equal(y, [1, -1, 1, -1])  # label y > 0, as for cifar10's class 0
    assert info["features"] == 3 and info["dimension"] == 4 and x.dtype == np.float64


def test_libsvm_missing_file_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="LIBSVM file not found") as err:
        load_libsvm(str(tmp_path / "a9a"))
    message = str(err.value)
    assert "\n" not in message and "a9a" in message and "libsvmtools" in message


@pytest.mark.parametrize(
    ("load", "shape"), [(load_breast_cancer, (569, 31)), (load_digits, (1797, 65))]
)
def test_offline_sets_have_an_intercept_and_signed_labels(load, shape):
    x, y, info = load()
    assert x.shape == shape and x.dtype == np.float64
    np.testing.assert_array_equal(x[:, -1], 1.0)
    assert set(np.unique(y)) == {-1.0, 1.0}
    assert info["dimension"] == shape[1] and 0 < info["positive_fraction"] < 1
