"""Inspect's ``mockllm/model`` offline: its token counter needs a tiktoken download.

mockllm counts the input tokens of every output that carries no usage with tiktoken's
``o200k_base`` encoding, which tiktoken downloads on first use; offline that raises a connection
error inside every sample, so ``inspect eval safelab/<task> --model mockllm/model`` (Inspect's
usual smoke test) fails. :func:`offline_mockllm_token_counts` keeps Inspect's count whenever
tiktoken can give it and falls back to an estimate (4 characters a token) only when the
encoding cannot be loaded. Applied once when Inspect loads safelab's entry point.
"""

from __future__ import annotations

import logging
from typing import Any

_log = logging.getLogger(__name__)
_APPLIED = False


def offline_mockllm_token_counts() -> None:
    """Let mockllm count tokens without tiktoken's download (see the module docstring)."""
    global _APPLIED
    if _APPLIED:
        return
    from inspect_ai.model._providers.mockllm import MockLLM

    original = MockLLM.count_text_tokens
    state = {"offline": False}

    async def count_text_tokens(self: Any, text: str) -> int:
        if not state["offline"]:
            try:
                return int(await original(self, text))
            except OSError as e:  # requests' ConnectionError is an OSError
                state["offline"] = True
                _log.warning(
                    "mockllm: tiktoken's o200k_base is not available offline (%s); counting "
                    "tokens as 4 characters each",
                    type(e).__name__,
                )
        return max(1, len(text) // 4)

    MockLLM.count_text_tokens = count_text_tokens  # type: ignore[method-assign]
    _APPLIED = True
