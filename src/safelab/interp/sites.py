"""Moved to :mod:`safelab.models.sites` (sites belong with the model); kept for old imports."""

from safelab.models.sites import *  # noqa: F403
