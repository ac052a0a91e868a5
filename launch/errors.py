"""User-facing errors: reported as one line and a non-zero exit by ``launch/train.py``.

Exit codes: 2 for bad input (config, mesh, batch size, data, run directory, checkpoints
of another run), 3 for a run stopped by the non-finite policy (its last good checkpoint is
kept; see ``trainer.max_nonfinite_steps``).
"""


class UserError(Exception):
    """Bad input (config, mesh, batch size, missing data): the message names problem and fix."""

    exit_code = 2


class NonFiniteError(UserError):
    """Too many consecutive non-finite steps: the run stopped, its last checkpoint is good."""

    exit_code = 3


def warn(message: str) -> None:
    """One ``warning: ...`` line on stderr (the counterpart of the one-line errors)."""
    import sys

    print("warning: " + " ".join(str(message).split()), file=sys.stderr, flush=True)
