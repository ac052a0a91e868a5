"""Workloads of the paper: model, input pipeline, loss, metrics and an offline mini dataset.

Never imports :mod:`sketchy` or :mod:`launch` (layering rule; a test scans imports).
"""
