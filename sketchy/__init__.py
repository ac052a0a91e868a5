"""Sketchy: memory-efficient adaptive regularization with Frequent Directions, for Optax.

Optimizers are plain :class:`optax.GradientTransformation` s. ``scale_by_*`` give the
preconditioned direction; the short names chain momentum, weight decay and the learning
rate. Adam is :func:`optax.adamw`.
"""

from sketchy import kradagrad, memory, oco, spectra
from sketchy.frequent_directions import FDState, fd_covariance, fd_init, fd_update
from sketchy.kronecker import KroneckerRule, KroneckerState, scale_by_kronecker
from sketchy.shampoo import ShampooFactor, scale_by_shampoo, shampoo
from sketchy.sketchy import scale_by_sketchy, sketchy

__all__ = [
    "FDState",
    "KroneckerRule",
    "KroneckerState",
    "ShampooFactor",
    "fd_covariance",
    "fd_init",
    "fd_update",
    "kradagrad",
    "memory",
    "oco",
    "scale_by_kronecker",
    "scale_by_shampoo",
    "scale_by_sketchy",
    "shampoo",
    "sketchy",
    "spectra",
]
