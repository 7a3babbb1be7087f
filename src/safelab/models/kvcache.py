"""A shared-prefix KV cache: keys and values computed once, reused by every prompt that starts
with the same tokens.

>>> model.use_prefix_cache(PrefixCacheConfig(max_mb=512))
>>> model.generate(prompts)  # the shared system prompt runs through the model once

Entries are whole token sequences (a prompt, or a prompt and its completion) with their per-layer
keys and values. A lookup finds the entry with the longest common token prefix and hands back
views of its first ``m`` positions, so a prompt that shares only a system prompt with an earlier
one still reuses it. Memory is bounded by ``max_mb`` (least recently used entries are evicted); an
entry that is a prefix of a newer one is dropped, since the newer one serves every lookup it did.

Every entry lives under a *scope*: the weights (their identity and in-place version counter), the
dtype and device, and the interventions active when it was computed (see
:func:`safelab.models.whitebox.WhiteBoxModel.hook_scope`). Runs steered at every position and
plain runs of the same prompt therefore never share; steering that acts only at a call's last
position leaves the positions before it as the plain model computes them, so such runs read (and
store only) those (:meth:`~safelab.models.whitebox.WhiteBoxModel.prefix_scope`). Training the
weights in place invalidates what was cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from safelab.errors import SafelabError

KV = list[tuple[Tensor, Tensor]]
"""Per layer ``(keys, values)``, each ``[1, heads, positions, head_dim]``."""


@dataclass(frozen=True)
class PrefixCacheConfig:
    """How much the prefix cache may hold."""

    max_mb: float = 512.0
    """Bound on the cached keys and values in MiB; least recently used entries go first."""

    def __post_init__(self) -> None:
        if self.max_mb <= 0:
            raise SafelabError(
                f"prefix cache max_mb={self.max_mb}: give a positive size in MiB, or turn the "
                "cache off (use_prefix_cache(None), -M prefix_cache_mb=0)"
            )


@dataclass
class _Entry:
    ids: Tensor
    kv: KV
    nbytes: int


@dataclass
class CacheStats:
    lookups: int = 0
    hits: int = 0
    reused_tokens: int = 0
    computed_tokens: int = 0
    evictions: int = 0


class PrefixCache:
    """Least-recently-used store of token sequences and their keys and values, per scope."""

    def __init__(self, cfg: PrefixCacheConfig | None = None) -> None:
        self.cfg = cfg or PrefixCacheConfig()
        self.max_bytes = int(self.cfg.max_mb * 2**20)
        self._entries: OrderedDict[tuple[Hashable, int], _Entry] = OrderedDict()
        self._next = 0
        self.nbytes = 0
        self.stats = CacheStats()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """A copy (``copy.deepcopy`` of a model) starts empty, with the same settings."""
        return {"cfg": self.cfg}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["cfg"])  # type: ignore[misc]

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (
            f"PrefixCache({len(self)} entries, {self.nbytes / 2**20:.1f}/{self.cfg.max_mb:g} MiB, "
            f"reused {self.stats.reused_tokens} tokens, computed {self.stats.computed_tokens})"
        )

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.nbytes = 0

    def lookup(self, scope: Hashable, ids: Sequence[int], limit: int) -> tuple[int, KV | None]:
        """The longest cached prefix of ``ids[:limit]`` in ``scope``: ``(m, kv of m positions)``.

        ``(0, None)`` when nothing in the scope shares even the first token. The tensors are views
        of the entry: callers must not write into them (``DynamicCache`` concatenates, so it never
        does).
        """
        query = torch.as_tensor(list(ids[:limit]), dtype=torch.long)
        best, best_key = 0, None
        with self._lock:
            self.stats.lookups += 1
            for key, entry in self._entries.items():
                if key[0] != scope:
                    continue
                m = _common_prefix(entry.ids, query)
                if m > best:
                    best, best_key = m, key
            if best_key is None:
                return 0, None
            entry = self._entries[best_key]
            self._entries.move_to_end(best_key)
            self.stats.hits += 1
            self.stats.reused_tokens += best
        return best, [(k[:, :, :best], v[:, :, :best]) for k, v in entry.kv]

    def peek(self, scope: Hashable, ids: Sequence[int], limit: int) -> int:
        """The length :meth:`lookup` would reuse, without counting a lookup or touching the
        recency order."""
        query = torch.as_tensor(list(ids[:limit]), dtype=torch.long)
        with self._lock:
            return max(
                (_common_prefix(e.ids, query) for k, e in self._entries.items() if k[0] == scope),
                default=0,
            )

    def store(self, scope: Hashable, ids: Sequence[int], kv: KV) -> None:
        """Keep ``kv`` (``len(ids)`` positions) for ``ids``; evict until the bound holds."""
        n = len(ids)
        if n == 0:
            return
        if kv[0][0].shape[2] != n:
            raise ValueError(f"kv holds {kv[0][0].shape[2]} positions for {n} tokens")
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        if nbytes > self.max_bytes:
            return
        query = torch.as_tensor(list(ids), dtype=torch.long)
        with self._lock:
            for key, entry in list(self._entries.items()):
                if key[0] != scope:
                    continue
                m = _common_prefix(entry.ids, query)
                if m == n:  # already covered by a longer (or equal) entry
                    self._entries.move_to_end(key)
                    return
                if m == len(entry.ids):  # the new entry covers this one
                    self._drop(key)
            self._next += 1
            self._entries[(scope, self._next)] = _Entry(query, kv, nbytes)
            self.nbytes += nbytes
            while self.nbytes > self.max_bytes:
                self._drop(next(iter(self._entries)))
                self.stats.evictions += 1

    def _drop(self, key: tuple[Hashable, int]) -> None:
        self.nbytes -= self._entries.pop(key).nbytes


def _common_prefix(a: Tensor, b: Tensor) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = (a[:n] != b[:n]).nonzero()
    return n if len(diff) == 0 else int(diff[0, 0])
