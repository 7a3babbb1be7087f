"""Moved to :mod:`safelab.models.inputs` (what the model reads); kept for old imports."""

from safelab.models.inputs import *  # noqa: F403
