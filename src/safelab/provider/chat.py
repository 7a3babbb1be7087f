"""Inspect messages and tools as plain chats any chat template accepts, and tool calls back.

Tools are described in the system message and tool calls/results are written inline as
``<tool_call>``/``<tool_response>`` text (the Hermes/Qwen convention), so every chat template
works, including ones with no tool support.

Tools are described in full (each tool's JSON schema) or, for small context windows, compactly
(``name(arg: type, ...): first sentence``). Consecutive assistant messages (a prefill and its
continuation) are joined exactly, without a separator.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from inspect_ai.model import (
    ChatMessage,
    ChatMessageAssistant,
    ChatMessageSystem,
    ChatMessageTool,
)
from inspect_ai.tool import ToolCall, ToolChoice, ToolFunction, ToolInfo

TOOL_PROMPT = """You can call tools. To call one, reply with exactly one line:
<tool_call>{{"name": "<tool name>", "arguments": {{...}}}}</tool_call>
Tools:
{tools}"""

ToolDescriptions = Literal["full", "compact"]

_TOOL_CALL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*(?:</tool_call>|$)", re.DOTALL)


def to_chat(
    messages: Sequence[ChatMessage],
    tools: Sequence[ToolInfo],
    descriptions: ToolDescriptions = "full",
) -> list[dict[str, str]]:
    """Inspect messages as plain ``{role, content}`` dicts (see the module docstring)."""
    out: list[dict[str, str]] = []
    if tools:
        described = "\n".join(describe_tool(t, descriptions) for t in tools)
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
            calls = [
                "<tool_call>"
                + json.dumps({"name": call.function, "arguments": call.arguments})
                + "</tool_call>"
                for call in m.tool_calls or []
            ]
            text = "\n".join([m.text, *calls]) if m.text else "\n".join(calls)
            # Not stripped: a prefill's exact text is what the continuation follows.
            out.append({"role": "assistant", "content": text})
        else:
            out.append({"role": "user", "content": m.text})
    return _merge_same_role(out)


def describe_tool(tool: ToolInfo, descriptions: ToolDescriptions = "full") -> str:
    """One tool for the system message: its JSON schema, or one compact line."""
    if descriptions == "full":
        return json.dumps(
            {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters.model_dump(exclude_none=True),
            }
        )
    props: dict[str, Any] = tool.parameters.model_dump(exclude_none=True).get("properties", {})
    required = set(tool.parameters.required or [])
    args = ", ".join(
        f"{name}{'' if name in required else '?'}: {_type_name(p)}" for name, p in props.items()
    )
    first = re.split(r"(?<=[.!?])\s", " ".join(tool.description.split()), maxsplit=1)[0]
    return f"- {tool.name}({args}): {first}"


def _type_name(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "|".join(json.dumps(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return f"list[{_type_name(schema.get('items') or {})}]"
    if kind is None and "anyOf" in schema:
        return "|".join(_type_name(s) for s in schema["anyOf"])
    return str(kind or "any")


def forced_call_prefix(tool_choice: ToolChoice, tools: Sequence[ToolInfo]) -> str:
    """Text that starts the reply so that the model makes the call ``tool_choice`` asks for.

    ``ToolFunction(name)`` forces a call of that tool, ``any`` a call of some tool; ``auto`` and
    ``none`` force nothing.
    """
    if isinstance(tool_choice, ToolFunction):
        return '<tool_call>{"name": ' + json.dumps(tool_choice.name) + ', "arguments": '
    if tool_choice == "any" and tools:
        return '<tool_call>{"name": "'
    return ""


def forced_call(name: str, calls: list[ToolCall] | None, text: str) -> list[ToolCall]:
    """The call a ``ToolFunction`` choice asked for, even when the model's arguments did not
    parse (then with a ``parse_error`` Inspect reports back to the model)."""
    if calls:
        first = calls[0]
        if first.function != name:
            first = ToolCall(
                id=first.id,
                function=name,
                arguments=first.arguments,
                parse_error=first.parse_error or f"the reply named {first.function!r}",
            )
        return [first, *calls[1:]]
    return [
        ToolCall(
            id=f"call_{uuid.uuid4().hex[:12]}",
            function=name,
            arguments={},
            parse_error=f"malformed tool call {text[:200]!r}",
        )
    ]


def _merge_same_role(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    merged: list[dict[str, str]] = []
    for m in messages:
        if merged and merged[-1]["role"] == m["role"] and m["role"] != "system":
            # Assistant after assistant is a prefill and its continuation: joined exactly.
            sep = "" if m["role"] == "assistant" else "\n\n"
            merged[-1] = {"role": m["role"], "content": merged[-1]["content"] + sep + m["content"]}
        else:
            merged.append(dict(m))
    return merged


def parse_tool_calls(text: str, *, parallel: bool = True) -> tuple[str, list[ToolCall] | None]:
    """Split ``<tool_call>{...}</tool_call>`` blocks out of a completion.

    With ``parallel=False`` (Inspect's ``parallel_tool_calls=False``) only the first call is
    kept; the text of the others is removed too.
    """
    calls: list[ToolCall] = []
    for match in _TOOL_CALL_RE.finditer(text):
        if calls and not parallel:
            break
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
