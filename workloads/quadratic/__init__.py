"""quadratic: the KrADagrad paper's synthetic ill-conditioned quadratic (no data)."""

from workloads.quadratic.workload import Quadratic

__all__ = ["Quadratic"]
