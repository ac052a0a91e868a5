"""librispeech: the paper's Conformer with CTC (tfds or AlgoPerf .npy data, or an offline
mini dataset of synthesized speech)."""

from workloads.librispeech.workload import Librispeech

__all__ = ["Librispeech"]
