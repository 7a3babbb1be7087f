"""``safelab/monitor_replies``: honest and deceptive replies with ground truth, for monitors.

Each sample is a scenario (the user's turn) and a reply written in the data (the assistant's
turn, prefilled, not generated), labelled in metadata: ``deceptive`` (1 = a lie) and ``honest``.
The monitors score the reply; ``safelab monitor report <log> --label deceptive`` then gives
each monitor's ROC curve, AUROC and recall at 1% FPR against that ground truth.

::

    inspect eval safelab/monitor_replies --model safelab/default \\
        -T data=../shared/data/truth/datasets/real_world_scenarios/all_unambiguous_replies.csv \\
        -T probe=runs/probe/probe -T flip=true
"""

from __future__ import annotations

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import ChatMessageAssistant, ChatMessageUser, ModelOutput
from inspect_ai.scorer import Scorer
from inspect_ai.solver import Generate, Solver, TaskState, solver

from safelab.errors import SafelabError, inspect_errors
from safelab.interp.contrast import load_replies
from safelab.monitors.judge_monitor import check_scoring, judge_monitor
from safelab.monitors.probe_monitor import Reduce, probe_monitor


@solver
def prefilled_reply() -> Solver:
    """Append the sample's recorded reply as the assistant's turn (no generation)."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        reply = str(state.metadata["reply"])
        state.messages.append(ChatMessageAssistant(content=reply, source="generate"))
        state.output = ModelOutput.from_content(model="data", content=reply)
        return state

    return solve


def reply_samples(data: str, limit: int | None = None, seed: int = 0) -> list[Sample]:
    replies = load_replies(data, limit=limit, seed=seed)
    return [
        Sample(
            id=f"r{i}",
            input=[ChatMessageUser(content=e.prompt)],
            target=str(e.label),
            metadata={
                "reply": e.text,
                "honest": e.label,
                "deceptive": 1 - e.label,
                "where": e.where,
            },
        )
        for i, e in enumerate(replies.examples)
    ]


@task
@inspect_errors
def monitor_replies(
    data: str = "",
    limit: int | None = None,
    seed: int = 0,
    probe: str | None = None,
    reduce: Reduce = "mean",
    flip: bool = False,
    judge: bool = True,
    judge_max_tokens: int = 256,
    judge_scoring: str = "text",
) -> Task:
    """Monitors on prefilled honest/deceptive replies (a lie/honest ``statement,label`` CSV).

    Args:
        data: the CSV (rows end with ``<Speaker>: <reply>``; label 1 = honest, 0 = lie).
        limit: a seeded random sample of this many rows.
        probe: a probe for the probe monitor (scored here on the white-box default model).
        reduce: mean, max or last token score.
        flip: use ``1 - probe score`` (a truth probe as a lie detector).
        judge: include the judge monitor.
        judge_max_tokens: the judge's reply budget.
        judge_scoring: ``text``, ``logprobs`` or ``auto`` (see :func:`judge_monitor`).
    """
    if not data:
        raise SafelabError("monitor_replies needs -T data=<lie/honest replies CSV>")
    scorers: list[Scorer] = []
    if probe:
        scorers.append(probe_monitor(probe=probe, reduce=reduce, flip=bool(flip)))
    if judge:
        scorers.append(
            judge_monitor(max_tokens=judge_max_tokens, scoring=check_scoring(judge_scoring))
        )
    if not scorers:
        raise SafelabError(
            "monitor_replies has no monitor: give -T probe=<probe> and/or keep -T judge=true"
        )
    return Task(
        dataset=MemoryDataset(reply_samples(data, limit, seed), name="monitor_replies"),
        solver=prefilled_reply(),
        scorer=scorers,
    )
