"""Masked multi-task binary cross-entropy and OGB's mean average precision."""

import warnings

import jax.numpy as jnp
import numpy as np
import optax
from sklearn.metrics import average_precision_score


def masked_bce(
    logits: jnp.ndarray, labels: jnp.ndarray, weights: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Summed sigmoid binary cross-entropy over labelled entries.

    Args:
        logits: ``(n_graph, n_task)`` model outputs.
        labels: ``(n_graph, n_task)`` in {0, 1}; missing labels must already be replaced by
            any finite value (their weight is 0).
        weights: ``(n_graph, n_task)``; 1 for a labelled entry of a real graph, else 0.

    Returns:
        ``(summed loss, number of labelled entries)``.
    """
    per_entry = optax.sigmoid_binary_cross_entropy(logits, labels)
    # `where`, not a product: an inf/NaN on a padding entry must not leak into the sum.
    summed = jnp.sum(jnp.where(weights > 0, per_entry * weights, 0.0))
    return summed, jnp.sum(weights)


def mean_average_precision(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> float:
    """Mean average precision as OGB's ``ogbg-molpcba`` evaluator defines it.

    Per task, sklearn's ``average_precision_score`` over the labelled rows; tasks whose
    labelled rows lack a positive or a negative are skipped; the mean is over the rest.

    Args:
        scores: ``(n, n_task)`` predicted scores (probabilities or logits: AP uses ranks).
        labels: ``(n, n_task)`` in {0, 1} where labelled.
        mask: ``(n, n_task)`` boolean or 0/1, true where the label is present.

    Returns:
        The mean AP, or NaN if no task has both classes (e.g. a tiny split).
    """
    mask = np.asarray(mask) > 0
    per_task = []
    for task in range(labels.shape[1]):
        y = labels[mask[:, task], task]
        if y.size == 0 or y.min() == y.max():
            continue
        per_task.append(average_precision_score(y, scores[mask[:, task], task]))
    if not per_task:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(per_task))
