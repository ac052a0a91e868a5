"""ImageNet / ResNet-50, the paper's first workload (see :mod:`.workload`)."""

from workloads.imagenet.workload import Imagenet

__all__ = ["Imagenet"]
