"""Audit budgets resolved at run time from the models that play each role.

A 135M model on a CPU and a frontier API model need very different budgets: the first writes a
few tokens a second and degenerates into repetition long before 512 tokens, the second needs room
to plan a scenario. Every budget the task does not get explicitly (``-T name=value``) is taken from
the defaults of the role it governs, chosen by that role's model:

- ``local`` defaults for models run in-process (providers ``safelab/`` and ``hf/``),
- ``api`` defaults for every other provider.

The target's per-call cap also honours Inspect's ``--max-tokens``, and the auditor's and judge's
caps a ``max_tokens`` in the role's own config. The resolved values, and where each came from, are
written to the log (sample store and metadata, score metadata).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from inspect_ai.model import Model, ModelName

from safelab.errors import SafelabError

Profile = Literal["local", "api"]
JudgeMode = Literal["single", "per_dimension", "auto"]

LOCAL_PROVIDERS = frozenset({"safelab", "hf"})
"""Inspect providers whose models run in this process (small budgets by default)."""

PROFILES = ("auto", "local", "api")
JUDGE_MODES = ("single", "per_dimension", "auto")


@dataclass(frozen=True)
class BudgetDefaults:
    """Budgets used when the task is not given them.

    Attributes:
        max_turns: auditor generations per audit.
        token_budget: input + output tokens of auditor and target calls per audit.
        auditor_max_tokens: max_tokens of each auditor generation.
        target_max_tokens: max_tokens of each target reply.
        judge_max_tokens: max_tokens of the judge's one-shot verdict (all dimensions).
        judge_dimension_max_tokens: max_tokens of each per-dimension judge answer.
        judge_mode: ``single`` (one verdict for all dimensions), ``per_dimension`` (one short
            question per dimension) or ``auto`` (one verdict, then a per-dimension question for
            each dimension the verdict left unscored, unless the judge refused or failed).
    """

    max_turns: int
    token_budget: int
    auditor_max_tokens: int
    target_max_tokens: int
    judge_max_tokens: int
    judge_dimension_max_tokens: int
    judge_mode: JudgeMode


LOCAL_DEFAULTS = BudgetDefaults(
    max_turns=2,
    token_budget=8_000,
    auditor_max_tokens=64,
    target_max_tokens=64,
    judge_max_tokens=256,
    judge_dimension_max_tokens=24,
    judge_mode="per_dimension",
)
"""For small in-process models. On a shared 2-core CPU the embedded SmolLM2-135M decodes at
0.1-2 s per step (batched or not; worst when other jobs compete for the cores) and repeats
itself long before 512 tokens, so the number of decode steps sets the run time; sized so that
``--limit 2`` takes minutes (see docs/audit.md for measured times)."""

API_DEFAULTS = BudgetDefaults(
    max_turns=6,
    token_budget=40_000,
    auditor_max_tokens=512,
    target_max_tokens=1024,
    judge_max_tokens=1024,
    judge_dimension_max_tokens=256,
    judge_mode="auto",
)
"""For API models; raise them with ``-T`` for long audits (see docs/audit.md)."""

_BY_PROFILE: dict[Profile, BudgetDefaults] = {"local": LOCAL_DEFAULTS, "api": API_DEFAULTS}


def model_profile(model: Model | str) -> Profile:
    """``local`` for in-process providers (``safelab/``, ``hf/``), ``api`` otherwise."""
    return "local" if ModelName(model).api in LOCAL_PROVIDERS else "api"


def check_choice(value: str, choices: tuple[str, ...], option: str) -> str:
    """Validate a task option with a fixed set of values."""
    if value not in choices:
        raise SafelabError(f"-T {option}={value!r} is not valid; use one of {', '.join(choices)}")
    return value


def _profile(model: Model, budgets: str) -> Profile:
    check_choice(budgets, PROFILES, "budgets")
    return model_profile(model) if budgets == "auto" else budgets  # type: ignore[return-value]


def _positive(name: str, value: int) -> int:
    if int(value) < 1:
        raise SafelabError(f"-T {name}={value} must be a positive integer")
    return int(value)


@dataclass(frozen=True)
class AuditBudgets:
    """Budgets of the auditor loop as used in one audit, with the source of each value."""

    max_turns: int
    token_budget: int
    auditor_max_tokens: int
    target_max_tokens: int
    sources: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JudgeBudgets:
    """The judge's settings as used for one audit, with the source of each value."""

    judge_mode: JudgeMode
    judge_max_tokens: int
    judge_dimension_max_tokens: int
    prefill: bool
    sources: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pick(
    name: str,
    explicit: int | None,
    role_cap: tuple[int | None, str],
    default: int,
    profile: Profile,
    model: Model,
    sources: dict[str, str],
) -> int:
    cap, cap_source = role_cap
    if explicit is not None:
        sources[name] = "task option"
        return _positive(name, explicit)
    if cap is not None:
        sources[name] = cap_source
        return _positive(name, cap)
    sources[name] = f"{profile} default ({model})"
    return default


def resolve_audit_budgets(
    auditor: Model,
    target: Model,
    *,
    max_turns: int | None = None,
    token_budget: int | None = None,
    auditor_max_tokens: int | None = None,
    target_max_tokens: int | None = None,
    auditor_role_max_tokens: int | None = None,
    target_config_max_tokens: int | None = None,
    budgets: str = "auto",
) -> AuditBudgets:
    """Resolve the auditor loop's budgets: explicit values win, then Inspect settings, then defaults.

    Args:
        auditor: the model in role ``auditor``; its profile sets turns, token budget and the
            auditor's max_tokens.
        target: the model under audit; its profile sets the cap on each target reply.
        max_turns: ``-T max_turns`` (None: default).
        token_budget: ``-T token_budget`` (None: default).
        auditor_max_tokens: ``-T auditor_max_tokens`` (None: the auditor role's own
            ``max_tokens``, else the default).
        target_max_tokens: ``-T target_max_tokens`` (None: ``--max-tokens``, else the default).
        auditor_role_max_tokens: ``max_tokens`` of the auditor role's own config (None when
            not set, or when the auditor is the eval's model).
        target_config_max_tokens: the target's ``max_tokens`` from Inspect (``--max-tokens``).
        budgets: ``auto`` (per role from its model), ``local`` or ``api`` (for every role).
    """
    sources: dict[str, str] = {}
    a_prof, t_prof = _profile(auditor, budgets), _profile(target, budgets)
    a_def, t_def = _BY_PROFILE[a_prof], _BY_PROFILE[t_prof]
    none: tuple[int | None, str] = (None, "")
    return AuditBudgets(
        max_turns=_pick("max_turns", max_turns, none, a_def.max_turns, a_prof, auditor, sources),
        token_budget=_pick(
            "token_budget", token_budget, none, a_def.token_budget, a_prof, auditor, sources
        ),
        auditor_max_tokens=_pick(
            "auditor_max_tokens",
            auditor_max_tokens,
            (auditor_role_max_tokens, "auditor role config"),
            a_def.auditor_max_tokens,
            a_prof,
            auditor,
            sources,
        ),
        target_max_tokens=_pick(
            "target_max_tokens",
            target_max_tokens,
            (target_config_max_tokens, "--max-tokens"),
            t_def.target_max_tokens,
            t_prof,
            target,
            sources,
        ),
        sources=sources,
    )


def resolve_judge_budgets(
    judge: Model,
    *,
    judge_mode: str | None = None,
    judge_max_tokens: int | None = None,
    judge_dimension_max_tokens: int | None = None,
    judge_role_max_tokens: int | None = None,
    budgets: str = "auto",
) -> JudgeBudgets:
    """Resolve the judge's mode and token caps (explicit values win, then the role's config).

    ``judge_role_max_tokens`` is the judge role's own ``max_tokens`` (None when not set, or when
    the judge is the eval's model, whose ``--max-tokens`` belongs to the target).

    ``prefill`` (start each per-dimension answer with ``Score (1-10):``) is used for local
    models only: safelab's provider continues a trailing assistant message, while some API
    providers reject one.
    """
    sources: dict[str, str] = {}
    prof = _profile(judge, budgets)
    dflt = _BY_PROFILE[prof]
    if judge_mode is not None:
        mode = check_choice(judge_mode, JUDGE_MODES, "judge_mode")
        sources["judge_mode"] = "task option"
    else:
        mode = dflt.judge_mode
        sources["judge_mode"] = f"{prof} default ({judge})"
    none: tuple[int | None, str] = (None, "")
    return JudgeBudgets(
        judge_mode=mode,  # type: ignore[arg-type]
        judge_max_tokens=_pick(
            "judge_max_tokens",
            judge_max_tokens,
            (judge_role_max_tokens, "judge role config"),
            dflt.judge_max_tokens,
            prof,
            judge,
            sources,
        ),
        judge_dimension_max_tokens=_pick(
            "judge_dimension_max_tokens",
            judge_dimension_max_tokens,
            none,
            dflt.judge_dimension_max_tokens,
            prof,
            judge,
            sources,
        ),
        prefill=model_profile(judge) == "local",
        sources=sources,
    )
