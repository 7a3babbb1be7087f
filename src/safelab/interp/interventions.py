"""Moved to :mod:`safelab.models.interventions` (hooks on the model); kept for old imports."""

from safelab.models.interventions import StepPositions, ablate, patch, steer

__all__ = ["StepPositions", "ablate", "patch", "steer"]
