"""Moved to :mod:`safelab.models.sites` (sites belong with the model); kept for old imports."""

from safelab.models.sites import BLOCK_KINDS, GLOBAL_SITES, Site, all_sites, resolve_sites

__all__ = ["BLOCK_KINDS", "GLOBAL_SITES", "Site", "all_sites", "resolve_sites"]
