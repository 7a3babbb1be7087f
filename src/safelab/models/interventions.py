"""Interventions as explicit context managers over plain forward hooks.

>>> with steer(model, vector, "blocks.12.resid_post", scale=4.0):
...     model.generate(["Hello"])

Each works during ``generate`` too: with a KV cache, every forward call after the first sees
only the newest token, and the hook applies to it as it did to the prompt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from safelab.errors import SafelabError

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel

StepPositions = Literal["all", "last"]


@contextmanager
def steer(
    model: WhiteBoxModel,
    vector: Tensor,
    site: str,
    scale: float = 1.0,
    positions: StepPositions = "all",
) -> Iterator[None]:
    """Add ``scale * vector`` to the activation at ``site``.

    Args:
        positions: ``"all"`` adds at every position of every forward call; ``"last"`` only at
            each call's last position (the last prompt token, then each generated token).
    """
    sites = model.resolve_sites(site)
    delta = _as_direction(model, vector, "steering vector") * float(scale)
    if positions not in ("all", "last"):
        raise SafelabError(f"unknown steering positions {positions!r}: use all or last")

    def add(t: Tensor) -> Tensor:
        d = delta.to(dtype=t.dtype, device=t.device)
        if positions == "all":
            return t + d
        out = t.clone()
        out[:, -1] += d
        return out

    key = ("steer", tuple(str(s) for s in sites), _digest(delta), positions)
    # "last" changes only a call's last position: the prompt's earlier positions are the
    # unsteered model's, so its cached prefixes are shared with the plain model.
    cacheable: bool | Literal["last"] = True if positions == "all" else "last"
    with model.hooks({str(s): add for s in sites}, key=key, cacheable=cacheable):
        yield


@contextmanager
def ablate(model: WhiteBoxModel, direction: Tensor, sites: str | Sequence[str]) -> Iterator[None]:
    """Project ``direction`` out of the activations at ``sites`` (globs allowed)."""
    resolved = model.resolve_sites(sites)
    d = _as_direction(model, direction, "direction")
    norm = d.norm()
    if norm == 0:
        raise SafelabError("cannot ablate a zero direction: the direction has norm 0")
    unit = d / norm

    def project_out(t: Tensor) -> Tensor:
        u = unit.to(dtype=t.dtype, device=t.device)
        return t - (t @ u).unsqueeze(-1) * u

    key = ("ablate", tuple(str(s) for s in resolved), _digest(unit))
    with model.hooks({str(s): project_out for s in resolved}, key=key, cacheable=True):
        yield


@contextmanager
def patch(
    model: WhiteBoxModel,
    site: str,
    values: Tensor,
    positions: Sequence[int] | None = None,
) -> Iterator[None]:
    """Replace the activation at ``site`` with ``values`` (activation patching).

    Args:
        values: ``[d_model]`` (broadcast), ``[pos, d_model]`` or ``[batch, pos, d_model]``,
            matching ``positions`` when given.
        positions: token positions to overwrite in the first forward call (the prompt); all
            positions when omitted. Later calls (generated tokens) are left alone.
    """
    (resolved,) = model.resolve_sites(site)
    if values.shape[-1] != model.d_model:
        raise SafelabError(
            f"patch values have width {values.shape[-1]} but {resolved} has d_model={model.d_model}"
        )
    calls = {"n": 0}

    def replace(t: Tensor) -> Tensor:
        calls["n"] += 1
        if calls["n"] > 1 and positions is not None:
            return t
        out = t.clone()
        v = values.to(dtype=t.dtype, device=t.device)
        if positions is None:
            out[...] = v
        else:
            out[:, list(positions)] = v
        return out

    # One vector at every position acts per position; anything else depends on the call's shape
    # (or, with positions, on which call comes first): opaque to the prefix cache and batching.
    uniform = positions is None and values.dim() == 1
    key = ("patch", str(resolved), _digest(values)) if uniform else None
    with model.hooks({str(resolved): replace}, key=key, cacheable=uniform):
        yield


def _as_direction(model: WhiteBoxModel, v: Tensor, what: str) -> Tensor:
    v = torch.as_tensor(v).detach().flatten()
    if v.shape[0] != model.d_model:
        raise SafelabError(
            f"{what} has {v.shape[0]} dimensions but {model.name} has d_model={model.d_model}: "
            "was it made for another model?"
        )
    return v


def _digest(t: Tensor) -> str:
    """A short content hash of a tensor (part of the prefix cache's key)."""
    data = t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha1(data).hexdigest()[:16]
