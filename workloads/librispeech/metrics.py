"""CTC loss, greedy CTC decoding and corpus word error rate.

The loss is ``optax.ctc_loss`` (blank id 0) summed over utterances, with the number of
target tokens as the count, as AlgoPerf does; padding examples have weight 0. WER is the
total word edits (substitutions + deletions + insertions) over all utterances divided by
the total number of reference words, computed with ``jiwer`` (a well-kept Levenshtein
implementation) on SentencePiece-detokenized hypotheses and references.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import jiwer
import numpy as np
import optax

BLANK_ID = 0


def length_paddings(lengths: jax.Array, size: int) -> jax.Array:
    """``(batch, size)`` float paddings: 1.0 at positions ``>= lengths``."""
    return (jnp.arange(size)[None, :] >= lengths[:, None]).astype(jnp.float32)


def ctc_loss_sum(
    logits: jax.Array,
    logit_paddings: jax.Array,
    targets: jax.Array,
    target_lengths: jax.Array,
    weights: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """``(sum of weighted per-utterance CTC losses, weighted number of target tokens)``."""
    label_paddings = length_paddings(target_lengths, targets.shape[1])
    per_utterance = optax.ctc_loss(
        logits, logit_paddings, targets, label_paddings, blank_id=BLANK_ID
    )
    # A zero-weight row may be empty or over-long (huge loss): never let it leak as 0 * inf.
    summed = jnp.sum(jnp.where(weights > 0, per_utterance, 0.0) * weights)
    count = jnp.sum(target_lengths.astype(jnp.float32) * weights)
    return summed, count


def greedy_decode(ids: np.ndarray, paddings: np.ndarray) -> list[list[int]]:
    """Best-path CTC decoding of per-frame argmax ``ids``: drop padding frames, collapse
    repeats, then remove blanks (so ``a a _ a`` is ``a a``)."""
    out = []
    for row, pad in zip(np.asarray(ids), np.asarray(paddings), strict=True):
        row = row[pad < 0.5]
        if row.size:
            keep = np.concatenate([[True], row[1:] != row[:-1]])
            row = row[keep]
        out.append([int(t) for t in row if t != BLANK_ID])
    return out


def word_errors(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[int, int]:
    """``(total word edits, total reference words)`` over utterance pairs.

    Utterances with an empty reference add their hypothesis words as insertions.
    """
    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r.split()]
    empty = [h for r, h in zip(references, hypotheses, strict=True) if not r.split()]
    edits = sum(len(h.split()) for h in empty)
    words = 0
    if pairs:
        out = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
        edits += out.substitutions + out.deletions + out.insertions
        words = out.substitutions + out.deletions + out.hits
    return edits, words


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: total edits / total reference words (not a mean of per-utterance WERs)."""
    edits, words = word_errors(references, hypotheses)
    return edits / max(words, 1)
