"""Online convex optimization problems (paper Appendix A): the data of one-pass online
logistic regression. Each loader returns ``(x [n, d] float64 with the intercept column last,
y [n] in {-1, +1}, info)``; ``configs/oco/problem/*.yaml`` names the loader and its arguments.
Observation 2's synthetic linear losses come from ``sketchy.oco.online``.
"""

from workloads.oco.data import load_breast_cancer, load_digits, load_libsvm, load_mnist

__all__ = ["load_breast_cancer", "load_digits", "load_libsvm", "load_mnist"]
