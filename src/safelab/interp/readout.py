"""Per-sample white-box records: activation summaries and per-token probe scores.

The Inspect provider calls :func:`read_samples` after generating, under the same
interventions, and stores each record in the sample's ``output.metadata["safelab"]``, so the
white-box view lands in the Inspect log next to the transcript.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch

from safelab.interp.probes import LinearProbe
from safelab.models.capture import Encoded, iter_capture

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel


class TokenReader(Protocol):
    """Anything that reads a record from one site's response-token activations (an SAE)."""

    @property
    def site(self) -> str: ...

    def read(self, acts: torch.Tensor, tokens: Sequence[str]) -> Any: ...


def read_samples(
    model: WhiteBoxModel,
    prompts: Sequence[list[int]],
    completions: Sequence[list[int]],
    capture_sites: Sequence[str],
    probes: Mapping[str, LinearProbe],
    *,
    readers: Mapping[str, TokenReader] | None = None,
    vectors: bool = True,
    batch_size: int = 16,
) -> list[dict[str, Any]]:
    """One record per sample over its full sequence (prompt + completion).

    ``capture[site]`` holds the norm of the last prompt token's activation, the mean over the
    response tokens (the vector when ``vectors``) and its norm. ``probes[name]`` holds the
    probe's score at the last prompt token, each response token's score (with the token text)
    and their mean, max and last. ``sae[name]`` holds what each reader (e.g. an SAE's top
    features per response token) reads from its site's response-token activations.
    """
    readers = readers or {}
    probe_sites = [p.site for p in probes.values()]
    reader_sites = [r.site for r in readers.values()]
    sites = list(dict.fromkeys([*capture_sites, *probe_sites, *reader_sites]))
    if not sites:
        return [{} for _ in prompts]
    encoded = [
        Encoded(list(p) + list(c), (len(p), len(p) + len(c)))
        for p, c in zip(prompts, completions, strict=True)
    ]
    rows: dict[int, dict[str, torch.Tensor]] = {}
    for _, acts in iter_capture(
        model, encoded, model.resolve_sites(sites), "all", batch_size=batch_size
    ):
        for i in acts.sample.unique().tolist():
            sel = acts.sample == i
            rows[i] = {s: acts.acts[s][sel].float() for s in sites}
    records = []
    for i, e in enumerate(encoded):
        start, end = e.response or (len(e.ids), len(e.ids))
        rec: dict[str, Any] = {"n_prompt_tokens": start, "n_response_tokens": end - start}
        if capture_sites:
            rec["capture"] = {s: _summary(rows[i][s], start, end, vectors) for s in capture_sites}
        if probes:
            rec["probes"] = {
                name: _probe_record(model, p, rows[i][p.site], e.ids, start, end)
                for name, p in probes.items()
            }
        if readers:
            tokens = [model.tokenizer.decode([t]) for t in e.ids[start:end]]
            rec["sae"] = {
                name: r.read(rows[i][r.site][start:end], tokens) for name, r in readers.items()
            }
        records.append(rec)
    return records


def _summary(acts: torch.Tensor, start: int, end: int, vectors: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt_last_norm": round(float(acts[start - 1].norm()), 4)}
    if end > start:
        mean = acts[start:end].mean(0)
        out["response_mean_norm"] = round(float(mean.norm()), 4)
        if vectors:
            out["response_mean"] = [round(float(v), 5) for v in mean]
    return out


def _probe_record(
    model: WhiteBoxModel,
    probe: LinearProbe,
    acts: torch.Tensor,
    ids: list[int],
    start: int,
    end: int,
) -> dict[str, Any]:
    scores = probe.score(acts).tolist()
    response = scores[start:end]
    rec: dict[str, Any] = {
        "site": probe.site,
        "prompt_last": round(scores[start - 1], 5),
        "tokens": [model.tokenizer.decode([t]) for t in ids[start:end]],
        "scores": [round(s, 5) for s in response],
    }
    if response:
        rec.update(
            mean=round(sum(response) / len(response), 5),
            max=round(max(response), 5),
            last=round(response[-1], 5),
        )
    return rec
