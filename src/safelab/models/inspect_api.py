"""Moved to :mod:`safelab.provider` (api, args, batcher, chat); kept for old imports."""

from safelab.provider.api import DEFAULT_MAX_TOKENS, SafelabModelAPI
from safelab.provider.args import ProviderArgs
from safelab.provider.batcher import (
    Batcher,
    Interventions,
    share_model,
    shared_batcher,
    shared_model,
)
from safelab.provider.chat import TOOL_PROMPT, parse_tool_calls, to_chat

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "TOOL_PROMPT",
    "Batcher",
    "Interventions",
    "ProviderArgs",
    "SafelabModelAPI",
    "parse_tool_calls",
    "share_model",
    "shared_batcher",
    "shared_model",
    "to_chat",
]
