"""Moved to :mod:`safelab.provider` (the provider's own package); kept for old imports."""

from safelab.provider import safelab_provider

__all__ = ["safelab_provider"]
