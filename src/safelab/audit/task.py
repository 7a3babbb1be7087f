"""The ``safelab/audit`` Inspect task."""

from __future__ import annotations

from inspect_ai import Task, task

from safelab.audit.auditor import auditor_agent
from safelab.audit.judge import audit_judge
from safelab.audit.seeds import seeds_dataset
from safelab.audit.session import AuditConfig


@task
def audit(
    seeds: str | None = None,
    tags: str | None = None,
    max_turns: int = 6,
    token_budget: int = 40_000,
    auditor_max_tokens: int = 512,
    judge_max_tokens: int = 1024,
    dimensions: str | None = None,
    auditor_prompt: str | None = None,
    judge_prompt: str | None = None,
) -> Task:
    """Alignment audit: an auditor model probes the target (the eval's model), a judge scores it.

    Model roles: ``auditor`` and ``judge`` (each defaults to the eval's model).

    Args:
        seeds: JSONL file of seed instructions (None: safelab's own seeds).
        tags: keep seeds with any of these comma-separated tags.
        max_turns: auditor turns per audit.
        token_budget: tokens (input + output) of auditor and target calls per audit.
        auditor_max_tokens: max_tokens of each auditor generation.
        judge_max_tokens: max_tokens of the judge's generation.
        dimensions: YAML file of judge dimensions (None: safelab's).
        auditor_prompt: Markdown template of the auditor's system prompt.
        judge_prompt: Markdown template of the judge's prompt.
    """
    config = AuditConfig(
        max_turns=max_turns,
        token_budget=token_budget,
        auditor_max_tokens=auditor_max_tokens,
        auditor_prompt=auditor_prompt,
    )
    return Task(
        dataset=seeds_dataset(seeds, tags),
        solver=auditor_agent(config),
        scorer=audit_judge(dimensions, judge_max_tokens=judge_max_tokens, template=judge_prompt),
        metadata={"safelab_component": "audit"},
    )
