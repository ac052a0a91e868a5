"""User-facing errors: reported as one line and a non-zero exit by ``launch/train.py``."""


class UserError(Exception):
    """Bad input (config, mesh, batch size, missing data): the message names problem and fix."""
