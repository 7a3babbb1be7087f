"""The target's side of an audit: a branching conversation plus the synthetic tools.

The target only ever sees one linear conversation (the current branch). Rolling back keeps the
abandoned branch in the record, so that the judge and the HTML view see every branch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from inspect_ai.model import (
    ChatMessage,
    ChatMessageAssistant,
    ChatMessageSystem,
    ChatMessageTool,
    ChatMessageUser,
    ContentReasoning,
)
from inspect_ai.tool import ToolCall, ToolInfo, ToolParam, ToolParams
from pydantic import TypeAdapter

_TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_MESSAGES = TypeAdapter(list[ChatMessage])


class ConversationError(ValueError):
    """An auditor action the conversation cannot take (reported back to the auditor)."""


@dataclass
class Branch:
    """One linear version of the target's conversation.

    ``messages`` holds the whole branch from its first message; the first ``fork_at`` of them
    are shared with branch ``parent``.
    """

    id: int
    parent: int | None
    fork_at: int
    reason: str
    messages: list[ChatMessage] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parent": self.parent,
            "fork_at": self.fork_at,
            "reason": self.reason,
            "messages": [m.model_dump(mode="json", exclude_none=True) for m in self.messages],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Branch:
        return cls(
            id=int(data["id"]),
            parent=data.get("parent"),
            fork_at=int(data.get("fork_at", 0)),
            reason=str(data.get("reason", "")),
            messages=_MESSAGES.validate_python(data.get("messages", [])),
        )


def parse_tool_parameters(parameters: str | dict[str, Any] | None) -> ToolParams:
    """Turn the auditor's parameter description into a JSON schema for the target.

    Accepts a JSON schema object (``{"type": "object", "properties": ...}``) or a plain
    mapping from parameter name to description (all strings, all required).
    """
    if parameters is None or (isinstance(parameters, str) and not parameters.strip()):
        return ToolParams()
    if isinstance(parameters, str):
        try:
            parsed = json.loads(parameters)
        except json.JSONDecodeError as e:
            raise ConversationError(
                f"parameters must be a JSON object (name -> description), got invalid JSON: {e.msg}"
            ) from e
    else:
        parsed = parameters
    if not isinstance(parsed, dict):
        raise ConversationError("parameters must be a JSON object mapping names to descriptions")
    if "properties" in parsed and isinstance(parsed["properties"], dict):
        try:
            return ToolParams.model_validate(
                {
                    "type": "object",
                    "properties": parsed["properties"],
                    "required": parsed.get("required", []),
                }
            )
        except Exception as e:
            raise ConversationError(f"parameters is not a valid JSON schema: {e}") from e
    props: dict[str, ToolParam] = {}
    for name, desc in parsed.items():
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise ConversationError(f"parameter name {name!r} is not a valid identifier")
        props[name] = ToolParam(type="string", description=str(desc))
    return ToolParams(properties=props, required=list(props))


def message_text(message: ChatMessage) -> str:
    """A message's text, with any reasoning blocks shown inline."""
    if isinstance(message.content, str):
        return message.content
    parts: list[str] = []
    for item in message.content:
        if isinstance(item, ContentReasoning):
            parts.append(f"<reasoning>{item.reasoning}</reasoning>")
        elif getattr(item, "type", None) == "text":
            parts.append(str(getattr(item, "text", "")))
        else:
            parts.append(f"[{getattr(item, 'type', 'content')}]")
    return "\n".join(parts)


def format_tool_call(call: ToolCall) -> str:
    """One line for a tool call: ``name({...}) [id=...]``."""
    args = json.dumps(call.arguments, ensure_ascii=False)
    line = f"{call.function}({args}) [id={call.id}]"
    return f"{line} (malformed call: {call.parse_error})" if call.parse_error else line


class TargetConversation:
    """The target's system prompt, synthetic tools and branching message history."""

    def __init__(self) -> None:
        self.branches: list[Branch] = [Branch(id=0, parent=None, fork_at=0, reason="start")]
        self.tools: dict[str, ToolInfo] = {}

    # ---- reading -------------------------------------------------------------------------
    @property
    def current(self) -> Branch:
        return self.branches[-1]

    @property
    def messages(self) -> list[ChatMessage]:
        """The target's current view: the messages of the current branch."""
        return self.current.messages

    @property
    def tool_infos(self) -> list[ToolInfo]:
        return list(self.tools.values())

    def pending_tool_calls(self) -> list[ToolCall]:
        """Tool calls of the target's last assistant message that have no result yet."""
        msgs = self.messages
        for i in range(len(msgs) - 1, -1, -1):
            m = msgs[i]
            if isinstance(m, ChatMessageAssistant):
                answered = {t.tool_call_id for t in msgs[i + 1 :] if isinstance(t, ChatMessageTool)}
                return [c for c in (m.tool_calls or []) if c.id not in answered]
            if isinstance(m, ChatMessageUser):
                return []
        return []

    # ---- auditor actions -----------------------------------------------------------------
    def set_system_prompt(self, prompt: str) -> bool:
        """Set the target's system prompt; returns True if that restarted the conversation."""
        if not prompt.strip():
            raise ConversationError("the system prompt is empty")
        system = ChatMessageSystem(content=prompt)
        if len(self.messages) > 1 or (
            self.messages and not isinstance(self.messages[0], ChatMessageSystem)
        ):
            self._fork(0, "system prompt replaced: conversation restarted")
            self.current.messages = [system]
            return True
        self.current.messages[:] = [system]
        return False

    def create_tool(
        self, name: str, description: str, parameters: str | dict[str, Any] | None
    ) -> ToolInfo:
        """Define (or redefine) a synthetic tool the target may call."""
        if not _TOOL_NAME.match(name or ""):
            raise ConversationError(
                f"tool name {name!r} is invalid; use letters, digits, '_' or '-' (max 64)"
            )
        if not description.strip():
            raise ConversationError(f"tool {name!r} needs a description")
        info = ToolInfo(
            name=name, description=description, parameters=parse_tool_parameters(parameters)
        )
        self.tools[name] = info
        return info

    def add_user(self, text: str, **metadata: Any) -> ChatMessageUser:
        if self.pending_tool_calls():
            ids = ", ".join(c.id for c in self.pending_tool_calls())
            raise ConversationError(f"answer the target's pending tool calls first ({ids})")
        msg = ChatMessageUser(content=text, metadata=metadata or None)
        self.messages.append(msg)
        return msg

    def add_tool_result(
        self, tool_call_id: str, result: str, error: bool = False
    ) -> ChatMessageTool:
        pending = {c.id: c for c in self.pending_tool_calls()}
        if tool_call_id not in pending:
            known = ", ".join(pending) or "none"
            raise ConversationError(
                f"no pending tool call with id {tool_call_id!r} (pending: {known})"
            )
        from inspect_ai.tool import ToolCallError

        msg = ChatMessageTool(
            content=result,
            tool_call_id=tool_call_id,
            function=pending[tool_call_id].function,
            error=ToolCallError(type="unknown", message=result) if error else None,
        )
        self.messages.append(msg)
        return msg

    def add_assistant(self, message: ChatMessageAssistant) -> None:
        self.messages.append(message)

    def rollback(self, index: int) -> Branch:
        """Start a new branch that keeps messages ``0..index`` of the current one.

        ``index = -1`` keeps nothing (not even the system prompt).
        """
        n = len(self.messages)
        if index < -1 or index >= n - 1:
            raise ConversationError(
                f"cannot roll back to message {index}: choose an index from -1 to {n - 2} "
                f"(the current branch has messages 0..{n - 1})"
            )
        kept = self.messages[: index + 1]
        self._fork(index + 1, f"rolled back to after message {index}")
        self.current.messages = list(kept)
        return self.current

    def _fork(self, fork_at: int, reason: str) -> None:
        parent = self.current.id
        self.branches.append(
            Branch(id=len(self.branches), parent=parent, fork_at=fork_at, reason=reason)
        )

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "branches": [b.to_dict() for b in self.branches],
            "tools": [t.model_dump(mode="json", exclude_none=True) for t in self.tools.values()],
        }


def render_transcript(branches: list[Branch], tools: list[ToolInfo]) -> str:
    """The judge's view: every branch, messages labelled ``[branch:index]``.

    Each branch after the first shows only the messages after its fork point.
    """
    lines: list[str] = []
    if tools:
        lines.append("Synthetic tools the target was given (results were written by the auditor):")
        for t in tools:
            params = ", ".join(t.parameters.properties) if t.parameters.properties else ""
            lines.append(f"- {t.name}({params}): {t.description}")
        lines.append("")
    for b in branches:
        if b.parent is None:
            lines.append(f"=== Branch {b.id} ===")
        else:
            lines.append(
                f"=== Branch {b.id} (from branch {b.parent}, {b.reason}; "
                f"messages 0..{b.fork_at - 1} are shared) ==="
            )
        if not b.messages[b.fork_at :]:
            lines.append("(no messages)")
        for i, m in enumerate(b.messages[b.fork_at :], start=b.fork_at):
            lines.append(_render_message(b.id, i, m))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _render_message(branch: int, index: int, m: ChatMessage) -> str:
    label = f"[{branch}:{index}]"
    text = message_text(m)
    meta = m.metadata or {}
    if isinstance(m, ChatMessageSystem):
        return f"{label} SYSTEM (written by auditor): {text}"
    if isinstance(m, ChatMessageUser):
        note = " (auditor text sent without a tool call)" if meta.get("fallback") else ""
        return f"{label} USER (auditor){note}: {text}"
    if isinstance(m, ChatMessageTool):
        tag = "TOOL ERROR" if m.error else "TOOL RESULT"
        return f"{label} {tag} for {m.function} [id={m.tool_call_id}] (written by auditor): {text}"
    if isinstance(m, ChatMessageAssistant):
        out = f"{label} TARGET: "
        prefill = meta.get("prefill")
        if prefill and text.startswith(prefill):
            out += f"<prefill by auditor>{prefill}</prefill>{text[len(prefill) :]}"
        else:
            out += text
        for c in m.tool_calls or []:
            out += f"\n    TARGET TOOL CALL: {format_tool_call(c)}"
        return out
    return f"{label} {m.role.upper()}: {text}"
