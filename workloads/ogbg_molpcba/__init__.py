"""ogbg_molpcba: the paper's GNN on molecular graphs (tfds data or an offline mini dataset)."""

from workloads.ogbg_molpcba.workload import OgbgMolpcba

__all__ = ["OgbgMolpcba"]
