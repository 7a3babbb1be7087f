"""What capture reads: texts and chats, tokenised, with their response spans and positions.

Kept free of torch so that data loaders can import it without loading the model stack.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from safelab.errors import SafelabError

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel

Message = dict[str, str]
Input = str | Sequence[Message]
"""A raw text, or a chat (a list of ``{"role", "content"}`` messages)."""

Position = Literal["all", "last", "response"] | int


@dataclass(frozen=True)
class Encoded:
    """One tokenised input and, for chats ending in an assistant turn, its response span."""

    ids: list[int]
    response: tuple[int, int] | None = None


def encode_inputs(model: WhiteBoxModel, inputs: Sequence[Input]) -> list[Encoded]:
    """Tokenise texts and chats; chats go through the tokenizer's chat template."""
    if len(inputs) == 0:
        raise SafelabError("empty input list: give at least one text or chat to capture")
    return [_encode_one(model, x, i) for i, x in enumerate(inputs)]


def _encode_one(model: WhiteBoxModel, x: Input, i: int) -> Encoded:
    tok = model.tokenizer
    if isinstance(x, str):
        ids = tok(x, add_special_tokens=True)["input_ids"]
        if not ids:
            raise SafelabError(f"input {i} is empty: every text needs at least one token")
        return Encoded(list(ids))
    messages = list(x)
    if not messages or not all(
        isinstance(m, dict) and "role" in m and "content" in m for m in messages
    ):
        raise SafelabError(
            f"input {i} is not a text or a chat: a chat is a non-empty list of "
            '{"role": ..., "content": ...} messages'
        )
    ends_with_response = messages[-1]["role"] == "assistant"
    text = model.render_chat(messages, add_generation_prompt=not ends_with_response)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    if not ends_with_response:
        return Encoded(ids)
    prompt = model.render_chat(messages[:-1], add_generation_prompt=True)
    content = messages[-1]["content"]
    start_char = text.find(content, len(prompt) if text.startswith(prompt) else 0)
    if start_char < 0 or not content:
        return Encoded(ids)
    end_char = start_char + len(content)
    span = [j for j, (a, b) in enumerate(enc["offset_mapping"]) if b > start_char and a < end_char]
    return Encoded(ids, (span[0], span[-1] + 1) if span else None)


def input_fingerprint(encoded: Sequence[Encoded]) -> str:
    """A hash of the token ids and spans: a store resumes only over the same inputs."""
    h = hashlib.sha256()
    for e in encoded:
        h.update(json.dumps([e.ids, e.response]).encode())
    return h.hexdigest()[:16]


def processing_order(encoded: Sequence[Encoded]) -> list[int]:
    """Longest first (stable): batches of similar length waste little on padding."""
    return sorted(range(len(encoded)), key=lambda i: -len(encoded[i].ids))
