"""The ``safelab/`` Inspect model provider: white-box models inside any Inspect eval.

- :mod:`safelab.provider.api`: the ``ModelAPI`` (``--model safelab/<model>``);
- :mod:`safelab.provider.args`: its ``-M`` model args, one frozen dataclass;
- :mod:`safelab.provider.batcher`: one worker thread per model batching concurrent samples;
- :mod:`safelab.provider.chat`: chat and tool-call formatting.

This module only registers the provider with Inspect. The factory defers the import of torch and
transformers until Inspect actually creates a ``safelab/...`` model, so that listing tasks or
using other providers stays fast.
"""

from __future__ import annotations

from typing import Any

from inspect_ai.model import modelapi


@modelapi(name="safelab")
def safelab_provider() -> type[Any]:
    from safelab.provider.api import SafelabModelAPI

    return SafelabModelAPI
