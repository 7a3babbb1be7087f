"""Moved to :mod:`safelab.models.interventions` (hooks on the model); kept for old imports."""

from safelab.models.interventions import *  # noqa: F403
