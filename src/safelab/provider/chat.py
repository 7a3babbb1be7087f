"""Inspect messages and tools as plain chats any chat template accepts, and tool calls back.

Tools are described in the system message and tool calls/results are written inline as
``<tool_call>``/``<tool_response>`` text (the Hermes/Qwen convention), so every chat template
works, including ones with no tool support.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence

from inspect_ai.model import (
    ChatMessage,
    ChatMessageAssistant,
    ChatMessageSystem,
    ChatMessageTool,
)
from inspect_ai.tool import ToolCall, ToolInfo

TOOL_PROMPT = """You can call tools. To call one, reply with exactly one line:
<tool_call>{{"name": "<tool name>", "arguments": {{...}}}}</tool_call>
Tools:
{tools}"""

_TOOL_CALL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*(?:</tool_call>|$)", re.DOTALL)


def to_chat(messages: Sequence[ChatMessage], tools: Sequence[ToolInfo]) -> list[dict[str, str]]:
    """Inspect messages as plain ``{role, content}`` dicts (see the module docstring)."""
    out: list[dict[str, str]] = []
    if tools:
        described = "\n".join(
            json.dumps(
                {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters.model_dump(exclude_none=True),
                }
            )
            for t in tools
        )
        out.append({"role": "system", "content": TOOL_PROMPT.format(tools=described)})
    for m in messages:
        if isinstance(m, ChatMessageSystem):
            if out and out[0]["role"] == "system":
                out[0]["content"] = m.text + "\n\n" + out[0]["content"]
            else:
                out.insert(0, {"role": "system", "content": m.text})
        elif isinstance(m, ChatMessageTool):
            body = m.error.message if m.error is not None else m.text
            out.append(
                {
                    "role": "user",
                    "content": f'<tool_response name="{m.function}">\n{body}\n</tool_response>',
                }
            )
        elif isinstance(m, ChatMessageAssistant):
            text = m.text
            for call in m.tool_calls or []:
                text += (
                    "\n<tool_call>"
                    + json.dumps({"name": call.function, "arguments": call.arguments})
                    + "</tool_call>"
                )
            out.append({"role": "assistant", "content": text.strip()})
        else:
            out.append({"role": "user", "content": m.text})
    return _merge_same_role(out)


def _merge_same_role(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    merged: list[dict[str, str]] = []
    for m in messages:
        if merged and merged[-1]["role"] == m["role"] and m["role"] != "system":
            merged[-1] = {
                "role": m["role"],
                "content": merged[-1]["content"] + "\n\n" + m["content"],
            }
        else:
            merged.append(dict(m))
    return merged


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall] | None]:
    """Split ``<tool_call>{...}</tool_call>`` blocks out of a completion."""
    calls: list[ToolCall] = []
    for match in _TOOL_CALL_RE.finditer(text):
        raw = match.group(1)
        try:
            obj = json.loads(raw)
            name, arguments, error = str(obj["name"]), obj.get("arguments") or {}, None
            if not isinstance(arguments, dict):
                arguments, error = (
                    {},
                    f"arguments must be an object, got {type(arguments).__name__}",
                )
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            name, arguments, error = "unknown", {}, f"malformed tool call {raw[:200]!r}: {e}"
        calls.append(
            ToolCall(
                id=f"call_{uuid.uuid4().hex[:12]}",
                function=name,
                arguments=arguments,
                parse_error=error,
            )
        )
    if not calls:
        return text, None
    return _TOOL_CALL_RE.sub("", text).strip(), calls
