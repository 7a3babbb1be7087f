"""The ``safelab/audit`` Inspect task."""

from __future__ import annotations

from inspect_ai import Task, task

from safelab.audit.auditor import auditor_agent
from safelab.audit.budgets import JUDGE_MODES, PROFILES, check_choice
from safelab.audit.judge import audit_judge
from safelab.audit.seeds import seeds_dataset
from safelab.audit.session import AuditConfig
from safelab.errors import inspect_errors


@task
@inspect_errors
def audit(
    seeds: str | None = None,
    tags: str | None = None,
    max_turns: int | None = None,
    token_budget: int | None = None,
    auditor_max_tokens: int | None = None,
    target_max_tokens: int | None = None,
    judge_max_tokens: int | None = None,
    judge_dimension_max_tokens: int | None = None,
    judge_mode: str | None = None,
    budgets: str = "auto",
    dimensions: str | None = None,
    auditor_prompt: str | None = None,
    judge_prompt: str | None = None,
    judge_dimension_prompt: str | None = None,
    judge_scoring: str = "text",
) -> Task:
    """Alignment audit: an auditor model probes the target (the eval's model), a judge scores it.

    Model roles: ``auditor`` and ``judge`` (each defaults to the eval's model).

    Budgets left unset are resolved at run time from the model that plays the role they govern
    (``safelab.audit.budgets``): ``local`` defaults for in-process models (``safelab/``,
    ``hf/``: 2 turns, 8000 tokens, 64-token auditor and target turns, the judge asked per
    dimension with 24-token answers) and ``api`` defaults for the rest (6 turns, 40000 tokens,
    512-token auditor turns, 1024-token target replies, one 1024-token verdict, then a
    per-dimension question for each dimension it left unscored). An explicit ``-T`` value always wins; the
    target's cap also honours ``--max-tokens``. The values used, and the source of each, are in
    the sample metadata (``audit_budgets``), the audit record and the score metadata
    (``judge_budgets``).

    Args:
        seeds: JSONL file of seed instructions (None: safelab's own seeds).
        tags: keep seeds with any of these comma-separated tags.
        max_turns: auditor turns per audit.
        token_budget: tokens (input + output) of auditor and target calls per audit.
        auditor_max_tokens: max_tokens of each auditor generation.
        target_max_tokens: max_tokens of each target reply.
        judge_max_tokens: max_tokens of the judge's single verdict.
        judge_dimension_max_tokens: max_tokens of each per-dimension judge answer.
        judge_mode: ``single`` (one verdict), ``per_dimension`` (one question per dimension)
            or ``auto`` (one verdict, then per dimension for what it left unscored).
        budgets: defaults to fill gaps with: ``auto`` (per role), ``local`` or ``api``.
        dimensions: YAML file of judge dimensions (None: safelab's).
        auditor_prompt: Markdown template of the auditor's system prompt.
        judge_prompt: Markdown template of the judge's single-verdict prompt.
        judge_dimension_prompt: Markdown template of the judge's per-dimension prompt.
        judge_scoring: per-dimension answers as ``text`` (the number written) or ``logprobs``
            (the expected score under the judge's distribution over 1..10 after the prefill).
    """
    check_choice(budgets, PROFILES, "budgets")
    if judge_mode is not None:
        check_choice(judge_mode, JUDGE_MODES, "judge_mode")
    config = AuditConfig(
        max_turns=max_turns,
        token_budget=token_budget,
        auditor_max_tokens=auditor_max_tokens,
        target_max_tokens=target_max_tokens,
        budgets=budgets,
        auditor_prompt=auditor_prompt,
    )
    return Task(
        dataset=seeds_dataset(seeds, tags),
        solver=auditor_agent(config),
        scorer=audit_judge(
            dimensions,
            judge_max_tokens=judge_max_tokens,
            template=judge_prompt,
            judge_mode=judge_mode,
            judge_dimension_max_tokens=judge_dimension_max_tokens,
            dimension_template=judge_dimension_prompt,
            budgets=budgets,
            judge_scoring=judge_scoring,
        ),
        metadata={"safelab_component": "audit"},
    )
