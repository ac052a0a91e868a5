"""CTC loss, greedy CTC decoding and corpus WER on hand-made cases with hand-computed values."""

import jax.numpy as jnp
import numpy as np
import pytest

from workloads.librispeech import metrics


def _log_probs(rows):
    return jnp.log(jnp.asarray(rows, jnp.float32))[None]


def test_ctc_loss_single_alignment():
    # Target "1 1" in 3 frames: the only path is 1, blank, 1 -> p = 0.9^3.
    logits = _log_probs([[0.1, 0.9], [0.9, 0.1], [0.1, 0.9]])
    summed, count = metrics.ctc_loss_sum(
        logits, jnp.zeros((1, 3)), jnp.array([[1, 1]]), jnp.array([2]), jnp.ones(1)
    )
    assert float(summed) == pytest.approx(-3 * np.log(0.9), rel=1e-5)
    assert float(count) == 2.0


def test_ctc_loss_sums_all_alignments_and_ignores_padding_frames():
    # Target "1" in 2 valid frames: paths (1,1), (1,_), (_,1); a third, padded frame is
    # ignored however improbable its token is.
    p = [[0.5, 0.5], [0.2, 0.8], [0.99, 0.01]]
    logits = _log_probs(p)
    summed, _ = metrics.ctc_loss_sum(
        logits, jnp.array([[0.0, 0.0, 1.0]]), jnp.array([[1, 0]]), jnp.array([1]), jnp.ones(1)
    )
    prob = 0.5 * 0.8 + 0.5 * 0.2 + 0.5 * 0.8
    assert float(summed) == pytest.approx(-np.log(prob), rel=1e-5)


def test_ctc_loss_weights_and_token_count():
    logits = jnp.concatenate([_log_probs([[0.1, 0.9], [0.9, 0.1], [0.1, 0.9]])] * 2)
    targets, lengths = jnp.array([[1, 1], [1, 0]]), jnp.array([2, 1])
    summed, count = metrics.ctc_loss_sum(
        logits, jnp.zeros((2, 3)), targets, lengths, jnp.array([1.0, 0.0])
    )
    assert float(count) == 2.0  # only the weighted utterance's tokens count
    assert float(summed) == pytest.approx(-3 * np.log(0.9), rel=1e-5)


def test_greedy_decode_collapses_repeats_then_drops_blanks():
    ids = np.array([[3, 3, 0, 3, 5, 5, 0, 0, 2, 7], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    pads = np.zeros_like(ids, dtype=np.float32)
    pads[0, 9] = 1.0  # the last frame is padding: its 7 is not decoded
    assert metrics.greedy_decode(ids, pads) == [[3, 3, 5, 2], []]


@pytest.mark.parametrize(
    ("refs", "hyps", "edits", "words"),
    [
        (["the cat sat"], ["the cat sat"], 0, 3),
        (["the cat sat"], ["the bat sat down"], 2, 3),  # 1 substitution + 1 insertion
        (["the cat sat on the mat"], ["cat sat on mat"], 2, 6),  # 2 deletions
        (["a b c d", "e"], ["a b c d", "f"], 1, 5),
        (["hello world"], [""], 2, 2),  # empty hypothesis: everything deleted
    ],
)
def test_word_errors_hand_computed(refs, hyps, edits, words):
    assert metrics.word_errors(refs, hyps) == (edits, words)
    assert metrics.word_error_rate(refs, hyps) == pytest.approx(edits / words)


def test_wer_is_total_edits_over_total_words_not_a_mean():
    # Per utterance 0/4 and 1/1: the mean would be 0.5, the corpus WER is 1/5.
    assert metrics.word_error_rate(["a b c d", "e"], ["a b c d", "f"]) == pytest.approx(0.2)
