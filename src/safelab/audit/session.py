"""One audit in progress: the target conversation, the target model and the budgets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inspect_ai.model import ChatMessageAssistant, GenerateConfig, Model, ModelOutput

from safelab.audit.budgets import AuditBudgets, resolve_audit_budgets
from safelab.audit.conversation import TargetConversation, format_tool_call, message_text


@dataclass(frozen=True)
class AuditConfig:
    """Requested budgets and prompts of the auditor loop; None means "resolve at run time".

    Budgets left at None are resolved per audit from the models in use
    (:func:`safelab.audit.budgets.resolve_audit_budgets`): small ones for in-process models,
    larger ones for API models.

    Attributes:
        max_turns: auditor generations before the audit stops.
        token_budget: total tokens (input + output) of auditor and target calls; the audit
            stops once it is spent (a turn in progress may overshoot it by one turn).
        auditor_max_tokens: max_tokens of each auditor generation.
        target_max_tokens: max_tokens of each target reply (None: ``--max-tokens`` if given,
            else the target's default).
        budgets: which defaults fill the gaps: ``auto`` (per role, from its model), ``local``
            or ``api``.
        auditor_prompt: Markdown template of the auditor's system prompt (None: safelab's).
    """

    max_turns: int | None = None
    token_budget: int | None = None
    auditor_max_tokens: int | None = None
    target_max_tokens: int | None = None
    budgets: str = "auto"
    auditor_prompt: str | None = None

    def resolve(self, auditor: Model, target: Model) -> AuditBudgets:
        """The budgets of one audit with these models in the auditor and target roles."""
        return resolve_audit_budgets(
            auditor,
            target,
            max_turns=self.max_turns,
            token_budget=self.token_budget,
            auditor_max_tokens=self.auditor_max_tokens,
            target_max_tokens=self.target_max_tokens,
            # a role's own max_tokens counts; the eval's model carries --max-tokens (the target's)
            auditor_role_max_tokens=auditor.config.max_tokens if auditor is not target else None,
            target_config_max_tokens=target.config.max_tokens,
            budgets=self.budgets,
        )


def output_tokens_used(output: ModelOutput) -> int:
    """Tokens a generation cost, estimated from text length when the provider gives none."""
    if output.usage is not None and output.usage.total_tokens:
        return int(output.usage.total_tokens)
    return max(1, len(output.completion) // 4)


class AuditSession:
    """State shared by the auditor's tools during one audit."""

    def __init__(self, target: Model, budgets: AuditBudgets) -> None:
        self.target = target
        self.budgets = budgets
        self.conversation = TargetConversation()
        self.tokens_used = 0
        self.turns = 0
        self.ended_by: str | None = None
        self.end_reason: str = ""
        self.fallbacks = 0
        self.target_calls = 0

    @property
    def budget_left(self) -> int:
        return self.budgets.token_budget - self.tokens_used

    def count(self, output: ModelOutput) -> None:
        self.tokens_used += output_tokens_used(output)

    async def target_reply(self, prefill: str = "") -> ChatMessageAssistant:
        """Generate the target's next message on the current branch and append it.

        With ``prefill`` the target continues an assistant message that starts with it; the
        stored message holds prefill + continuation and records the prefill in metadata.
        """
        conv = self.conversation
        messages = list(conv.messages)
        if prefill:
            messages.append(ChatMessageAssistant(content=prefill))
        output = await self.target.generate(
            messages,
            tools=conv.tool_infos,
            config=GenerateConfig(max_tokens=self.budgets.target_max_tokens),
        )
        self.count(output)
        self.target_calls += 1
        reply = output.message
        text = message_text(reply) if reply.content else ""
        metadata: dict[str, Any] = dict(reply.metadata or {})
        if prefill:
            metadata["prefill"] = prefill
            if not text.startswith(prefill):
                sep = "" if prefill.endswith((" ", "\n")) or text.startswith((" ", "\n")) else " "
                text = prefill + sep + text if text else prefill
        stored = ChatMessageAssistant(
            content=text,
            tool_calls=reply.tool_calls or None,
            model=reply.model or self.target.name,
            metadata=metadata or None,
        )
        conv.add_assistant(stored)
        return stored

    def describe_reply(self, reply: ChatMessageAssistant) -> str:
        """What the auditor reads back after the target answered."""
        index = len(self.conversation.messages) - 1
        text = message_text(reply).strip() or "(empty reply)"
        out = f'<target_response index="{index}">\n{text}\n</target_response>'
        if reply.tool_calls:
            calls = "\n".join(f"- {format_tool_call(c)}" for c in reply.tool_calls)
            out += (
                f"\n<target_tool_calls>\n{calls}\n</target_tool_calls>\n"
                "Answer each call with send_tool_result(tool_call_id, result)."
            )
        out += f"\n(turn {self.turns} of {self.budgets.max_turns}; about {max(0, self.budget_left)} tokens left)"
        return out

    def record(self) -> dict[str, Any]:
        """The audit as stored in the sample's store (JSON-serialisable)."""
        return {
            **self.conversation.to_dict(),
            "turns": self.turns,
            "tokens_used": self.tokens_used,
            "token_budget": self.budgets.token_budget,
            "max_turns": self.budgets.max_turns,
            "budgets": self.budgets.to_dict(),
            "ended_by": self.ended_by,
            "end_reason": self.end_reason,
            "fallbacks": self.fallbacks,
            "target_calls": self.target_calls,
            "target_model": str(self.target),
        }
