"""Moved to :mod:`safelab.models.adapters` (adapters belong with the model); kept for old imports."""

from safelab.models.adapters import (
    LLAMA_LIKE,
    ArchitectureAdapter,
    GemmaAdapter,
    GPT2Adapter,
    HookFn,
    HookPoint,
    ResolvedSite,
    adapter_for,
)

__all__ = [
    "LLAMA_LIKE",
    "ArchitectureAdapter",
    "GPT2Adapter",
    "GemmaAdapter",
    "HookFn",
    "HookPoint",
    "ResolvedSite",
    "adapter_for",
]
