"""safelab: an AI-safety lab in a box for language models.

Behavioural evaluations (Inspect tasks, an auditing agent) and white-box tools (activation
capture, probes, steering) on the same models, in the same runs.

Heavy imports (torch, transformers) happen lazily, so ``import safelab`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from safelab.errors import SafelabError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from safelab.models.loading import load_model
    from safelab.models.sites import Site
    from safelab.models.whitebox import WhiteBoxModel

__all__ = ["SafelabError", "Site", "WhiteBoxModel", "__version__", "load_model"]

_LAZY = {
    "load_model": "safelab.models.loading",
    "WhiteBoxModel": "safelab.models.whitebox",
    "Site": "safelab.models.sites",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'safelab' has no attribute {name!r}")
