"""Registration of the ``safelab/`` model API with Inspect.

The factory defers the import of torch and transformers until Inspect actually creates a
``safelab/...`` model, so that listing tasks or using other providers stays fast.
"""

from __future__ import annotations

from typing import Any

from inspect_ai.model import modelapi


@modelapi(name="safelab")
def safelab_provider() -> type[Any]:
    from safelab.models.inspect_api import SafelabModelAPI

    return SafelabModelAPI
