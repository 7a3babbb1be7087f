"""Capture activations at sites for a batch of texts or chats.

Inputs are tokenised, sorted by length and batched with right padding (so every real token sits
at the same position as in an unbatched run), run through the decoder body with plain forward
hooks, and read at the chosen positions:

- ``"all"``: every real token (padding excluded by the attention mask), one row per token;
- ``"last"``: the last real token of each input, one row per input;
- an ``int``: that token index in each input (negative counts from the end);
- ``"response"``: the tokens of the final assistant message of each chat, one row per token.

The forward pass stops after the deepest block that is needed and never computes the
unembedding, so capturing a middle layer costs about half a forward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from safelab.errors import SafelabError
from safelab.models.inputs import (
    Encoded,
    Input,
    Message,
    Position,
    encode_inputs,
    input_fingerprint,
    processing_order,
)
from safelab.models.sites import Site

__all__ = [
    "Activations",
    "Encoded",
    "Input",
    "Message",
    "Position",
    "capture",
    "encode_inputs",
    "input_fingerprint",
    "iter_capture",
    "processing_order",
]

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel


@dataclass
class Activations:
    """Captured activations: one row per (input, token) read.

    ``acts[site]`` is ``[rows, d_model]``; ``sample[i]`` is the index of the input that row ``i``
    came from, ``position[i]`` its token index in that input and ``token[i]`` the token id.
    """

    acts: dict[str, Tensor]
    sample: Tensor
    position: Tensor
    token: Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, site: str | Site) -> Tensor:
        key = str(site)
        if key not in self.acts:
            raise SafelabError(f"site {key} was not captured: captured {', '.join(self.acts)}")
        return self.acts[key]

    @property
    def sites(self) -> list[str]:
        return list(self.acts)

    def __len__(self) -> int:
        return int(self.sample.shape[0])

    def per_sample(self, site: str | Site) -> list[Tensor]:
        """Rows of ``site`` split by input, in input order."""
        values = self[site]
        n = int(self.sample.max().item()) + 1 if len(self) else 0
        return [values[self.sample == i] for i in range(n)]

    @staticmethod
    def concat(parts: Sequence[Activations]) -> Activations:
        if not parts:
            raise SafelabError("no activations to concatenate")
        return Activations(
            acts={s: torch.cat([p.acts[s] for p in parts]) for s in parts[0].acts},
            sample=torch.cat([p.sample for p in parts]),
            position=torch.cat([p.position for p in parts]),
            token=torch.cat([p.token for p in parts]),
            meta=dict(parts[0].meta),
        )

    def sorted(self) -> Activations:
        """Rows ordered by (input, position)."""
        order = torch.argsort(self.sample * (1 << 32) + self.position, stable=True)
        return Activations(
            acts={s: v[order] for s, v in self.acts.items()},
            sample=self.sample[order],
            position=self.position[order],
            token=self.token[order],
            meta=dict(self.meta),
        )


class _StopForward(Exception):
    """Raised by a hook once the deepest needed site has been read."""


def capture(
    model: WhiteBoxModel,
    inputs: Sequence[Input],
    sites: str | Sequence[str],
    position: Position = "last",
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> Activations:
    """Capture activations at ``sites`` for ``inputs``, rows ordered by (input, position).

    Args:
        model: a loaded white-box model.
        inputs: texts and/or chats.
        sites: site names or glob patterns (``"blocks.*.resid_post"``), comma-separated or a list.
        position: ``"all"``, ``"last"``, ``"response"`` or a token index.
        batch_size: inputs per forward pass.
        progress: show a progress bar.
    """
    encoded = encode_inputs(model, inputs)
    resolved = model.resolve_sites(sites)
    parts = [
        part
        for _, part in iter_capture(
            model, encoded, resolved, position, batch_size=batch_size, progress=progress
        )
    ]
    out = Activations.concat(parts).sorted()
    out.meta.update(model=model.name, position=str(position))
    return out


def iter_capture(
    model: WhiteBoxModel,
    encoded: Sequence[Encoded],
    sites: Sequence[Site],
    position: Position,
    *,
    batch_size: int = 16,
    start: int = 0,
    progress: bool = False,
    dtype: torch.dtype | None = None,
) -> Iterator[tuple[int, Activations]]:
    """Capture batch by batch in :func:`processing_order`, from the ``start``-th input on.

    Yields ``(n_done, activations)`` where ``n_done`` counts inputs finished so far in
    processing order; the store uses it to resume after a crash.
    """
    if batch_size < 1:
        raise SafelabError(f"batch_size must be at least 1, got {batch_size}")
    _check_position(position)
    order = processing_order(encoded)
    stop_layer = _stop_layer(sites)
    pad_id = model.tokenizer.pad_token_id
    bar = _progress(progress, total=len(order), done=start)
    try:
        for lo in range(start, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            batch = [encoded[i] for i in idx]
            ids, mask = _right_pad(batch, pad_id, model.device)
            select = _selector(batch, idx, position, mask)
            yield lo + len(idx), _forward(model, ids, mask, sites, select, stop_layer, dtype)
            if bar is not None:
                bar.update(len(idx))
    finally:
        if bar is not None:
            bar.close()


@dataclass
class _Select:
    rows_b: Tensor
    rows_t: Tensor
    sample: Tensor


def _selector(
    batch: Sequence[Encoded], idx: Sequence[int], position: Position, mask: Tensor
) -> _Select:
    lengths = [len(e.ids) for e in batch]
    bs: list[int] = []
    ts: list[int] = []
    for b, (e, n) in enumerate(zip(batch, lengths, strict=True)):
        if position == "all":
            positions = list(range(n))
        elif position == "last":
            positions = [n - 1]
        elif position == "response":
            if e.response is None:
                raise SafelabError(
                    f"input {idx[b]} has no response span: position='response' needs chats "
                    "whose last message is the assistant's"
                )
            positions = list(range(*e.response))
        else:
            p = int(position)
            p = p + n if p < 0 else p
            if not 0 <= p < n:
                raise SafelabError(f"position {position} is outside input {idx[b]} ({n} tokens)")
            positions = [p]
        bs.extend([b] * len(positions))
        ts.extend(positions)
    sample = torch.tensor([idx[b] for b in bs], dtype=torch.long)
    return _Select(torch.tensor(bs, dtype=torch.long), torch.tensor(ts, dtype=torch.long), sample)


def _forward(
    model: WhiteBoxModel,
    ids: Tensor,
    mask: Tensor,
    sites: Sequence[Site],
    select: _Select,
    stop_layer: int | None,
    dtype: torch.dtype | None,
) -> Activations:
    got: dict[str, Tensor] = {}
    rows_b = select.rows_b.to(ids.device)
    rows_t = select.rows_t.to(ids.device)

    def reader(name: str, stop: bool) -> Any:
        def fn(t: Tensor) -> None:
            v = t[rows_b, rows_t].detach()
            got[name] = v.to(dtype=dtype or v.dtype, device="cpu")
            if stop:
                raise _StopForward

        return fn

    fns = {str(s): reader(str(s), False) for s in sites}
    if stop_layer is not None and stop_layer < model.n_layers - 1:
        # One extra reader at the end of the deepest block needed ends the pass early.
        stopper = f"blocks.{stop_layer}.resid_post"
        inner = fns.get(stopper)

        def stop_fn(t: Tensor) -> None:
            if inner is not None:
                inner(t)
            raise _StopForward

        fns[stopper] = stop_fn
    with torch.inference_mode(), model.hooks(fns), contextlib.suppress(_StopForward):
        model.body(input_ids=ids, attention_mask=mask, use_cache=False)
    return Activations(
        acts={str(s): got[str(s)] for s in sites},
        sample=select.sample,
        position=select.rows_t,
        token=ids[rows_b, rows_t].cpu(),
    )


def _right_pad(
    batch: Sequence[Encoded], pad_id: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    return right_pad([e.ids for e in batch], pad_id, device)


def right_pad(
    seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """Token id lists as one right-padded ``[batch, width]`` id tensor and its attention mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[b, : len(s)] = 1
    return ids.to(device), mask.to(device)


def _stop_layer(sites: Sequence[Site]) -> int | None:
    if any(s.layer is None for s in sites):
        return None
    return max(s.layer for s in sites if s.layer is not None)


def _check_position(position: Position) -> None:
    if isinstance(position, int) or position in ("all", "last", "response"):
        return
    raise SafelabError(
        f"unknown position {position!r}: use all, last, response or a token index (e.g. -1)"
    )


def _progress(enabled: bool, total: int, done: int) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc="capture", unit="input")
