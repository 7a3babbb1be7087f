"""An Inspect scorer that scores a sample by a linear probe over the response tokens.

Two sources for the per-token scores, in this order:

1. the record the ``safelab/<model>`` provider wrote when run with ``-M probe=<probe>``
   (``output.metadata["safelab"]["probes"][name]``);
2. with ``probe=<path>``: the probe run here, on a white-box copy of ``model``, over the
   conversation with the final assistant message as the response. This scores any transcript,
   whichever model produced it (e.g. prefilled replies).

The value is the mean, max or last token score; a sample with no response tokens or no probe
record is *unscored* (``Score.unscored``, with the reason), never a low score.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Literal

from inspect_ai.scorer import Score, Scorer, Target, mean, scorer, stderr
from inspect_ai.solver import TaskState

Reduce = Literal["mean", "max", "last"]


def probe_name(path: str) -> str:
    """The name the provider files a probe under (the folder name, or the file's stem)."""
    p = Path(path)
    return p.stem if p.suffix else p.name


def _chat(state: TaskState) -> list[dict[str, str]] | None:
    messages = []
    for m in state.messages:
        if m.role not in ("system", "user", "assistant"):
            continue
        messages.append({"role": m.role, "content": m.text})
    if not messages or messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        return None
    return messages


def _white_box_scores(model_spec: str, probe_path: str, chat: list[dict[str, str]]) -> list[float]:
    import torch

    from safelab.interp.probes import LinearProbe
    from safelab.models.loading import load_model
    from safelab.models.openmp import release_workers

    # The monitor's own copy of the weights, used by one thread at a time: capture hooks must
    # never reach the provider's model, which may be generating for a judge at the same time.
    with _LOCK:
        if model_spec not in _MODELS:
            _MODELS[model_spec] = load_model(model_spec)
        if probe_path not in _PROBES:
            _PROBES[probe_path] = LinearProbe.load(probe_path)
        model, probe = _MODELS[model_spec], _PROBES[probe_path]
        try:
            acts = model.capture([chat], probe.site, position="response")
            with torch.inference_mode():
                return [float(v) for v in probe.score(acts[probe.site]).tolist()]
        finally:
            # this is a worker thread of the event loop, idle until the next sample: free its
            # OpenMP workers so that they do not slow the provider's thread (models.openmp)
            release_workers()


_PROBES: dict[str, Any] = {}
_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


def reduce_scores(scores: list[float], how: Reduce) -> float:
    if how == "mean":
        return sum(scores) / len(scores)
    if how == "max":
        return max(scores)
    if how == "last":
        return scores[-1]
    raise ValueError(f"unknown reduction {how!r}: use mean, max or last")


@scorer(metrics=[mean(), stderr()])
def probe_monitor(
    probe: str | None = None,
    name: str | None = None,
    reduce: Reduce = "mean",
    model: str = "default",
    flip: bool = False,
) -> Scorer:
    """Score each sample by a probe's token scores over the response.

    Args:
        probe: probe folder or ``.safetensors``; needed unless the provider recorded it.
        name: the provider's record name (default: derived from ``probe``; else the only one).
        reduce: ``mean``, ``max`` or ``last`` over the response tokens.
        model: white-box model for scoring here (when the provider did not record the probe).
        flip: report ``1 - score`` (e.g. a truth probe used as a lie detector).
    """
    if reduce not in ("mean", "max", "last"):
        raise ValueError(f"unknown reduction {reduce!r}: use mean, max or last")
    wanted = name or (probe_name(probe) if probe else None)

    async def score(state: TaskState, target: Target) -> Score:
        records = ((state.output.metadata or {}).get("safelab") or {}).get("probes") or {}
        rec = (
            records.get(wanted)
            if wanted
            else (next(iter(records.values())) if len(records) == 1 else None)
        )
        source = "provider"
        scores: list[float] = list(rec.get("scores") or []) if rec else []
        if not scores and probe:
            chat = _chat(state)
            if chat is None:
                return Score.unscored(reason="no_response", answer="unscored (no assistant reply)")
            source = "white_box"
            scores = await asyncio.to_thread(_white_box_scores, model, probe, chat)
        if not scores:
            why = "no probe record in output metadata" if not rec else "no response tokens"
            return Score.unscored(reason="no_probe_scores", answer=f"unscored ({why})")
        value = reduce_scores(scores, reduce)
        if flip:
            value = 1.0 - value
        return Score(
            value=value,
            answer=f"{reduce} probe score {value:.3f}",
            metadata={
                "reduce": reduce,
                "n_tokens": len(scores),
                "source": source,
                "flip": flip,
                "probe": wanted,
            },
        )

    return score
