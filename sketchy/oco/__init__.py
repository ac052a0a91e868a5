"""Online convex optimization (paper Sec. 3 and Appendix A) as Optax transformations.

Each algorithm is a function returning an :class:`optax.GradientTransformation` over any
parameter pytree (raveled into one vector ``x in R^d``, preconditioned by one ``d x d``
matrix). The update already includes the learning rate and, when ``radius`` is given, the
projection onto the ball ``||x||_2 <= radius`` in the algorithm's own norm; apply it with
:func:`optax.apply_updates`. State arrays take the parameters' dtype (float64 under
``jax_enable_x64``).

- :func:`s_adagrad`: S-AdaGrad, paper Alg. 2 (FD sketch + dynamic diagonal ``rho_{1:t}``).
- :func:`ada_fd`: Ada-FD (Wan & Zhang 2018), FD sketch + fixed ``delta``.
- :func:`fd_son`, :func:`rfd_son`: sketched Online Newton Step (Luo et al. 2016, 2019).
- :func:`diag_adagrad`, :func:`full_adagrad`, :func:`ogd`: unsketched baselines.

:mod:`sketchy.oco.online` runs them over a hyperparameter grid (logistic regression of
Appendix A; regret on the Observation 2 instance).
"""

from sketchy.oco.dense import (
    DiagAdagradState,
    FullAdagradState,
    OGDState,
    diag_adagrad,
    full_adagrad,
    ogd,
)
from sketchy.oco.metric import Metric, pinv_apply, project_ball
from sketchy.oco.sketched import SketchedOCOState, ada_fd, fd_son, rfd_son, s_adagrad

__all__ = [
    "DiagAdagradState",
    "FullAdagradState",
    "Metric",
    "OGDState",
    "SketchedOCOState",
    "ada_fd",
    "diag_adagrad",
    "fd_son",
    "full_adagrad",
    "ogd",
    "pinv_apply",
    "project_ball",
    "rfd_son",
    "s_adagrad",
]
