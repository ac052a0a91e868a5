"""Learning-rate schedules, as functions of ``(peak_value, total_steps)`` built on optax.

The ``schedule`` config group instantiates one of these as a partial; the trainer entry
point supplies the optimizer's peak ``learning_rate`` and ``trainer.steps``.
"""

import optax


def constant(peak_value: float, total_steps: int) -> optax.Schedule:
    del total_steps
    return optax.constant_schedule(peak_value)


def warmup_cosine(
    peak_value: float, total_steps: int, warmup_fraction: float = 0.05, end_fraction: float = 0.0
) -> optax.Schedule:
    """Linear warmup for ``warmup_fraction`` of the steps, then cosine decay to
    ``end_fraction * peak_value`` (the paper's runs: warmup, then decay from ~5%)."""
    if not 0 <= warmup_fraction < 1:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction!r}")
    warmup = int(warmup_fraction * total_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak_value,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=end_fraction * peak_value,
    )


def warmup_linear(
    peak_value: float, total_steps: int, warmup_fraction: float = 0.05, end_fraction: float = 0.0
) -> optax.Schedule:
    """Linear warmup, then linear decay to ``end_fraction * peak_value`` at ``total_steps``."""
    warmup = int(warmup_fraction * total_steps)
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak_value, max(warmup, 1)),
            optax.linear_schedule(
                peak_value, end_fraction * peak_value, max(total_steps - warmup, 1)
            ),
        ],
        boundaries=[warmup],
    )
