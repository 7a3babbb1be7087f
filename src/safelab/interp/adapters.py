"""Moved to :mod:`safelab.models.adapters` (adapters belong with the model); kept for old imports."""

from safelab.models.adapters import *  # noqa: F403
