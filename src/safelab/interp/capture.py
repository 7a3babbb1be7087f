"""Moved to :mod:`safelab.models.capture` (the model's own forward hooks); kept for old imports."""

from safelab.models.capture import *  # noqa: F403
