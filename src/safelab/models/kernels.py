"""Packed float32 matrix multiplication for CPU inference (oneDNN).

A transformers model's ``nn.Linear`` layers multiply through MKL's ``sgemm``, which repacks the
weight on every call. At the row counts generation runs at (one row per sequence in a decode
step, 2 to 64 rows) that repacking is a large part of each multiplication. oneDNN, which torch
ships on CPU, can pack a weight once (``torch.ops.mkldnn._reorder_linear_weight``) and multiply
the packed copy (``torch.ops.mkldnn._linear_pointwise``): the same float32 products and sums in
another order, so results differ from MKL's in the last bits only (as MKL's own results differ
between thread counts), and greedy tokens stay the same (checked by ``bench/generate.py``).

:func:`set_linear_kernel` turns a model's linear layers into :class:`PackedLinear` (the same
module objects, their class swapped, so hooks, names, parameters and ``state_dict`` are
unchanged) or back. A packed layer uses its packed copy only where that is safe, and
``F.linear`` otherwise:

- in inference: not in training mode, and no gradient wanted (``torch.no_grad``,
  ``torch.inference_mode``, or neither input nor weight requiring one);
- on a contiguous float32 CPU weight, for an input of the weight's dtype with more than one row
  (a single row is a matrix-vector product, where MKL is as fast);
- while the weight is the one packed: the same storage, in-place version counter and a sample
  of its entries (so an optimizer step, ``weight.copy_``, and peft's ``merge`` through
  ``weight.data`` all repack; an edit through ``.data`` that changes none of the sampled entries
  is not seen: call :func:`set_linear_kernel` again after such an edit).

The packed copy is a second copy of every linear weight, so ``auto`` packs a model only while
its linear weights total at most :data:`AUTO_MAX_BYTES`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from safelab.errors import SafelabError

if TYPE_CHECKING:
    import torch

LINEAR_KERNELS = ("auto", "onednn", "torch")
"""``auto``: oneDNN where :func:`onednn_available` and the model is float32 on CPU and small
enough; ``onednn``: the same, an error where it cannot; ``torch``: ``F.linear`` (MKL) only."""

AUTO_MAX_BYTES = 4 << 30
"""``auto`` packs models whose linear weights total at most this (4 GiB: a 1B model in float32)."""

PACK_ROWS = 16
"""The row count oneDNN is told to expect when packing (generation's usual batch)."""

_SAMPLES = 32


def onednn_available() -> bool:
    """Whether this torch has oneDNN with the packed linear operators."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return False
    ops = torch.ops.mkldnn
    return hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise")


_steady = threading.local()


@contextmanager
def steady_weights() -> Iterator[None]:
    """Inside (this thread), a packed layer trusts its packed copy while the weight keeps the
    storage and in-place version it was packed from, without comparing the sampled entries:
    for a loop of forwards on weights that nothing edits meanwhile (a decode batch's steps, each
    after a prefill that ran the full check). The sample comparison costs ~4 ms of a ~110 ms
    decode step of the default model (211 layers); skipping it changes no result."""
    before = getattr(_steady, "on", False)
    _steady.on = True
    try:
        yield
    finally:
        _steady.on = before


def _sample(weight: torch.Tensor) -> torch.Tensor:
    """A strided view of about ``_SAMPLES`` of the weight's entries."""
    flat = weight.detach().view(-1)
    return flat[:: max(1, flat.numel() // _SAMPLES)]


class PackedLinear:
    """Mixin class swapped onto an ``nn.Linear``: multiplies a oneDNN-packed copy in inference.

    Made by :func:`set_linear_kernel` (``type(layer)`` becomes a subclass of the layer's own
    class and this), undone by it with ``kernel="torch"``.
    """

    _packed: torch.Tensor | None
    _packed_key: tuple[int, int] | None
    _packed_sample: torch.Tensor | None
    weight: torch.Tensor
    bias: torch.Tensor | None
    in_features: int
    training: bool

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        w = self.weight
        if (
            self.training
            or (torch.is_grad_enabled() and (input.requires_grad or w.requires_grad))
            or input.dtype != w.dtype
            or input.numel() <= self.in_features
        ):
            return F.linear(input, w, self.bias)
        packed = self._current()
        if packed is None:
            return F.linear(input, w, self.bias)
        return torch.ops.mkldnn._linear_pointwise(input, packed, self.bias, "none", [], "")

    def _forget(self) -> None:
        """Drop the packed copy (packed again on the next inference call)."""
        self._packed, self._packed_key, self._packed_sample = None, None, None

    def __getstate__(self) -> dict[str, Any]:
        """Copies (``copy.deepcopy``) leave the packed weight behind: it is packed again on use."""
        state = dict(self.__dict__)
        state.update(_packed=None, _packed_key=None, _packed_sample=None)
        return state

    def _current(self) -> torch.Tensor | None:
        """The packed weight, repacked if the weight changed; ``None`` where it cannot be."""
        import torch

        w = self.weight
        if w.device.type != "cpu" or w.dtype != torch.float32 or not w.is_contiguous():
            return None
        key = (w.data_ptr(), w._version)
        sample = self._packed_sample
        if (
            self._packed is None
            or key != self._packed_key
            or sample is None
            or (not getattr(_steady, "on", False) and not torch.equal(_sample(w), sample))
        ):
            with torch.no_grad():
                self._packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), PACK_ROWS)
            self._packed_key = key
            self._packed_sample = _sample(w).clone()
        return self._packed


_SWAPPED: dict[type, type] = {}


def _packed_class(cls: type) -> type:
    if cls not in _SWAPPED:
        _SWAPPED[cls] = type(f"Packed{cls.__name__}", (PackedLinear, cls), {})
    return _SWAPPED[cls]


def _linears(module: Any) -> list[Any]:
    import torch

    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


def resolve_linear_kernel(module: Any, kernel: str = "auto") -> str:
    """The kernel ``kernel`` means for ``module``: ``onednn`` or ``torch``.

    Raises:
        SafelabError: an unknown kernel, or ``onednn`` where it cannot run (one line why).
    """
    import torch

    if kernel not in LINEAR_KERNELS:
        raise SafelabError(f"unknown linear kernel {kernel!r}: use {', '.join(LINEAR_KERNELS)}")
    if kernel == "torch":
        return "torch"
    layers = _linears(module)
    weights = [m.weight for m in layers]
    why = None
    if not onednn_available():
        why = "this torch has no oneDNN packed linear operators"
    elif any(w.device.type != "cpu" or w.dtype != torch.float32 for w in weights):
        why = "the model is not float32 on CPU"
    elif not layers:
        why = "the model has no nn.Linear layers"
    if kernel == "onednn" and why:
        raise SafelabError(f"linear kernel onednn: {why}; use linear=torch")
    if why:
        return "torch"
    size = sum({w.data_ptr(): w.numel() * w.element_size() for w in weights}.values())
    if kernel == "auto" and size > AUTO_MAX_BYTES:
        return "torch"
    return "onednn"


def set_linear_kernel(module: Any, kernel: str = "auto") -> str:
    """Multiply ``module``'s ``nn.Linear`` layers with ``kernel``; returns the one in effect.

    ``onednn`` swaps each layer's class for a :class:`PackedLinear` subclass (packed lazily, on
    its first inference call, and again whenever its weight changes); ``torch`` swaps it back
    and drops the packed copies. Idempotent.
    """
    chosen = resolve_linear_kernel(module, kernel)
    for m in _linears(module):
        cls = type(m)
        if chosen == "onednn":
            if not isinstance(m, PackedLinear):
                m.__class__ = _packed_class(cls)
            m._forget()
        elif isinstance(m, PackedLinear):
            base = next(c for c in cls.__mro__[1:] if c is not PackedLinear)
            for name in ("_packed", "_packed_key", "_packed_sample"):
                m.__dict__.pop(name, None)
            m.__class__ = base
    return chosen


def drop_packed(module: Any) -> int:
    """Free the packed copies of ``module``'s layers (packed again on their next inference call);
    returns the bytes freed. A process holding many models (``safelab validate``) keeps only the
    one in use packed: a packed copy is a second copy of the weights."""
    freed = 0
    for m in _linears(module):
        if isinstance(m, PackedLinear) and m._packed is not None:
            freed += m.weight.numel() * m.weight.element_size()
            m._forget()
    return freed


def linear_kernel(module: Any) -> str:
    """The kernel ``module``'s linear layers multiply with now: ``onednn``, ``torch`` or ``mixed``."""
    kinds = {isinstance(m, PackedLinear) for m in _linears(module)}
    if kinds == {True}:
        return "onednn"
    return "mixed" if len(kinds) > 1 else "torch"
