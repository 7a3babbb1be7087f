"""Continuous batching: one running decode batch that prompts join and finished rows leave.

:class:`DecodeBatch` keeps the keys and values of every running row in one left-padded
``DynamicCache``. :meth:`DecodeBatch.add_many` runs new prompts together (prefixes they share
computed once, each one's longest cached prefix taken from a
:class:`~safelab.models.kvcache.PrefixCache`, the rest as batched suffixes), picks their first
tokens and pads them into the batch in one step; :meth:`DecodeBatch.step` feeds every row its
newest token in one forward call, picks the next tokens and hands back the rows that finished,
which leave the batch. Each row keeps its own decoding settings (length, temperature, stop strings, seed).

Greedy rows get the same tokens as one padded ``transformers`` ``generate`` call
(:func:`safelab.models.generation.generate_batch` without a cache): padding positions are
masked out of attention and every row's position ids count only its own tokens, so a row's
logits do not depend on the other rows beyond float rounding (tested on tiny models; checked on
the default model by ``bench/generate.py``).
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from safelab.models.generation import (
    GenerationRequest,
    GenerationResult,
    TokenLogprob,
    eos_ids,
    finish_text,
)
from safelab.models.kernels import steady_weights
from safelab.models.kvcache import KV, PrefixCache

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel

# Generation-config fields that add logits processors this loop does not implement: a model
# that sets any of them generates through ``transformers`` ``generate`` instead.
_UNSUPPORTED_GENERATION = {
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "sequence_bias": (None,),
    "encoder_repetition_penalty": (None, 1.0),
    "typical_p": (None, 1.0),
    "min_p": (None,),
    "epsilon_cutoff": (None, 0.0),
    "eta_cutoff": (None, 0.0),
    "exponential_decay_length_penalty": (None,),
}


def supported(model: WhiteBoxModel) -> bool:
    """Whether this loop can run the model: full-attention ``DynamicCache`` layers only, and no
    logits processor beyond temperature, top-k and top-p in its generation config."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cached = getattr(model, "_decode_supported", None)
    if cached is not None and cached[0] is model.hf:
        return bool(cached[1])
    ok = True
    try:
        layers = DynamicCache(config=model.hf.config).layers
        ok = bool(layers) and all(type(layer) is DynamicLayer for layer in layers)
    except Exception:  # an architecture the cache does not know: not supported
        ok = False
    gc = model.hf.generation_config
    for name, allowed in _UNSUPPORTED_GENERATION.items():
        value = getattr(gc, name, None)
        if value not in allowed:
            ok = False
    model._decode_supported = (model.hf, ok)  # type: ignore[attr-defined]
    return ok


def cache_arg(model: WhiteBoxModel) -> str:
    """The forward argument that takes the cache: ``cache`` (transformers >= 5.2x) or
    ``past_key_values`` (before)."""
    params = inspect.signature(model.hf.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _last_logits_only(model: WhiteBoxModel) -> dict[str, Any]:
    """``logits_to_keep=1`` where the forward takes it (as ``generate`` passes): a 1,500-token
    prompt otherwise computes 1,500 rows of vocabulary logits to use one."""
    params = inspect.signature(model.hf.forward).parameters
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}


@dataclass
class Row:
    """One prompt being decoded."""

    prompt: list[int]
    request: GenerationRequest
    tag: Any = None
    completion: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish: str | None = None
    text: str = ""
    generator: torch.Generator | None = None
    fed: int = 0
    """Tokens whose keys and values are in the batch's own cache (the prompt after ``shared``,
    then one a step)."""
    shared: int = 0
    """Prompt tokens read from a shared prefix (``prefix``) instead of the batch's cache."""
    prefix: KV | None = None
    """The shared prefix's per-layer ``(keys, values)`` (batch 1), held by every row that
    starts with it (:mod:`safelab.models.cascade`)."""

    @property
    def done(self) -> bool:
        return self.finish is not None

    def result(self) -> GenerationResult:
        return GenerationResult(
            self.text,
            self.prompt,
            list(self.completion),
            self.finish or "max_tokens",
            self.logprobs,
        )


class DecodeBatch:
    """The running batch of one model under one set of interventions (see the module doc).

    Args:
        cache: the prefix cache to read and fill, or ``None`` (every prompt computed in full).
        scope: the cache scope the rows read prefixes from (:meth:`WhiteBoxModel.prefix_scope`
            under the active hooks); with ``None`` the cache is not used.
    """

    def __init__(
        self,
        model: WhiteBoxModel,
        cache: PrefixCache | None = None,
        scope: Hashable | None = None,
    ) -> None:
        from transformers import DynamicCache

        self.model = model
        self.cache = cache if scope is not None else None
        self.scope = scope
        self.rows: list[Row] = []
        self.kv: Any = DynamicCache()
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=model.device)
        self._arg = cache_arg(model)
        self._keep = _last_logits_only(model)
        self._eos = eos_ids(model)
        self._vocab_default_top_k = getattr(model.hf.generation_config, "top_k", None)
        self._prefixes: dict[tuple[int, ...], KV] = {}
        """Shared prefixes of running rows by their tokens: a joining row with the same prefix
        takes the same tensors, so the cascade reads one copy."""

    def __len__(self) -> int:
        return len(self.rows)

    # -- joining ----------------------------------------------------------------------------
    def add(self, prompt: Sequence[int], request: GenerationRequest, tag: Any = None) -> Row:
        """Run ``prompt`` (reusing its cached prefix), pick its first token, join the batch.

        A row that is already done (its first token ends it, or ``max_new_tokens`` is 0) is
        returned done and does not join.
        """
        return self.add_many([prompt], [request], [tag])[0]

    def add_many(
        self,
        prompts: Sequence[Sequence[int]],
        requests: Sequence[GenerationRequest],
        tags: Sequence[Any] | None = None,
    ) -> list[Row]:
        """Run several prompts together, pick their first tokens, join them in one step.

        Prefixes the prompts share with each other are computed once (through the prefix cache,
        so they are stored), then every prompt's remaining suffix runs in one left-padded
        forward call (:func:`prefill_group`) and the rows join the batch in one concatenation.
        Rows that are done after their first token are returned done and do not join.
        """
        tags = list(tags) if tags is not None else [None] * len(prompts)
        rows = [
            Row(list(p), r, t, logprobs=[] if r.logprobs else None)
            for p, r, t in zip(prompts, requests, tags, strict=True)
        ]
        for row in rows:
            if row.request.temperature > 0 and row.request.seed is not None:
                row.generator = torch.Generator(device="cpu").manual_seed(row.request.seed)
            if row.request.max_new_tokens <= 0:
                row.finish = "max_tokens"
        live = [row for row in rows if not row.done]
        if not live:
            return rows
        parts = prefill_parts(self.model, [r.prompt for r in live], self.cache, self.scope)
        logits, kv = parts.logits, parts.own
        greedy = logits.argmax(dim=-1).tolist()
        for b, row in enumerate(live):
            row.shared, row.prefix = parts.shared[b], parts.prefixes[b]
            self._choose(row, logits[b], greedy[b])
        keep = [b for b, row in enumerate(live) if not row.done]
        if keep:
            if len(keep) < len(live):
                index = torch.tensor(keep, device=logits.device)
                kv = [(k.index_select(0, index), v.index_select(0, index)) for k, v in kv]
            self._join([live[b] for b in keep], kv)
        return rows

    def _join(self, rows: list[Row], kv: KV) -> None:
        """Pad ``rows`` (their keys and values right-aligned in ``kv``) into the batch: one new
        buffer per layer, written once."""
        device = self.model.device
        lengths = [len(r.prompt) - r.shared for r in rows]
        for row in rows:  # a prefix equal to a running row's joins its group (one copy)
            if row.prefix is not None:
                row.prefix = self._prefixes.setdefault(tuple(row.prompt[: row.shared]), row.prefix)
        old, width = len(self.rows), self.mask.shape[1]
        n_new, new_w = kv[0][0].shape[2], max(self.mask.shape[1], kv[0][0].shape[2])
        mask = torch.zeros((old + len(rows), new_w), dtype=torch.long, device=device)
        mask[:old, new_w - width :] = self.mask
        for b, (row, n) in enumerate(zip(rows, lengths, strict=True)):
            mask[old + b, new_w - n :] = 1
            row.fed = n
        layers = []
        for i, (k, v) in enumerate(kv):
            pair = []
            for t, j in ((k, 0), (v, 1)):
                prev = (self.kv.layers[i].keys, self.kv.layers[i].values)[j] if old else None
                shape = list(t.shape)
                shape[0], shape[2] = old + len(rows), new_w + _SPARE
                buf = t.new_empty(shape)
                if prev is not None:
                    buf[:old, :, : new_w - width] = 0
                    buf[:old, :, new_w - width : new_w] = prev
                buf[old:, :, : new_w - n_new] = 0
                buf[old:, :, new_w - n_new : new_w] = t
                pair.append(buf)
            layers.append(_growing_layer(pair[0], pair[1], new_w))
        self.kv = _cache_from_layers(layers)
        self.mask = mask
        self.rows = self.rows + rows

    # -- decoding ---------------------------------------------------------------------------
    def step(self) -> list[Row]:
        """Feed every running row its newest token; returns the rows that finished now."""
        if not self.rows:
            return []
        device = self.model.device
        tokens = torch.tensor([[r.completion[-1]] for r in self.rows], device=device)
        positions = torch.tensor(
            [[len(r.prompt) + len(r.completion) - 1] for r in self.rows], device=device
        )
        ones = torch.ones((len(self.rows), 1), dtype=torch.long, device=device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        # steady_weights: the rows' prefill checked the packed weights; nothing edits them
        # between steps, so the steps skip the sample comparison (models.kernels)
        with (
            cascade_for(self.model, [r.prefix for r in self.rows]),
            torch.inference_mode(),
            steady_weights(),
        ):
            out = self.model.hf(
                input_ids=tokens,
                attention_mask=self.mask,
                position_ids=positions,
                use_cache=True,
                **{self._arg: self.kv},
                **self._keep,
            )
        logits = out.logits[:, -1].float()
        greedy = logits.argmax(dim=-1).tolist()  # one call for every greedy row
        for b, row in enumerate(self.rows):
            row.fed += 1
            self._choose(row, logits[b], greedy[b])
        finished = [r for r in self.rows if r.done]
        if finished:
            self._leave([b for b, r in enumerate(self.rows) if not r.done])
        return finished

    def _leave(self, keep: list[int]) -> None:
        """Keep the rows at ``keep``; store the finished rows' keys and values for reuse (not
        under hooks that act at each call's last position: every completion token is one)."""
        if self.cache is not None and not self.model.acts_at_last:
            for b, row in enumerate(self.rows):
                if row.done and b not in keep:
                    # Fed: the prompt and every completion token but a last one that ended the
                    # row by length or stop string (an end-of-turn token is not kept at all).
                    n = row.fed
                    start = self.mask.shape[1] - n
                    kv = [
                        (layer.keys[b : b + 1, :, start:], layer.values[b : b + 1, :, start:])
                        for layer in self.kv.layers
                    ]
                    if row.prefix is None:
                        kv = [_own(k, v) for k, v in kv]
                    else:  # the whole sequence, its prefix then its own (cat: new tensors)
                        kv = [
                            (torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2))
                            for (pk, pv), (k, v) in zip(row.prefix, kv, strict=True)
                        ]
                    ids = (row.prompt + row.completion)[: row.shared + n]
                    self.cache.store(self.scope, ids, kv)
        held = {id(self.rows[b].prefix) for b in keep}  # prefixes no running row holds go
        self._prefixes = {k: v for k, v in self._prefixes.items() if id(v) in held}
        if not keep:
            from transformers import DynamicCache

            self.rows = []
            self.kv = DynamicCache()
            self.mask = self.mask[:0, :0]
            return
        # In place: the last surviving rows move into the slots of the rows that left (one row
        # copy each, no new buffers); row order does not matter, each row's logits are its own.
        k = len(keep)
        kept = set(keep)
        holes = [d for d in range(k) if d not in kept]
        movers = [src for src in keep if src >= k]
        order = list(range(k))
        for hole, src in zip(holes, movers, strict=True):
            order[hole] = src
        mask = self.mask[order]
        # Columns every remaining row pads: drop them (positions are explicit, so this is exact).
        used = mask.any(dim=0).nonzero()
        start = int(used[0, 0]) if len(used) else 0
        self.mask = mask[:, start:]
        self.rows = [self.rows[b] for b in order]
        # Inference mode: room that doubled during a step's forward call is an inference tensor,
        # which only takes in-place writes inside it.
        with torch.inference_mode():
            for layer in self.kv.layers:
                layer.keep(list(zip(holes, movers, strict=True)), k, start)

    def _choose(self, row: Row, logits: Tensor, greedy: int | None = None) -> None:
        req = row.request
        if req.temperature and req.temperature > 0:
            token = self._sample(row, logits)
        else:
            token = int(torch.argmax(logits)) if greedy is None else greedy
        if token in self._eos:
            row.finish = "stop"
        else:
            row.completion.append(token)
            if row.logprobs is not None:
                row.logprobs.append(_logprob_entry(self.model, logits, req.top_logprobs, token))
            if len(row.completion) >= req.max_new_tokens:
                row.finish = "max_tokens"
        if req.stop and not row.done:
            # Only a stop string ending in the newest token is new; one of c characters spans at
            # most 4c tokens (byte tokens of a 4-byte character), so the tail is enough to decode.
            tail = row.completion[-(4 * max(map(len, req.stop)) + 4) :]
            text = self.model.tokenizer.decode(tail, skip_special_tokens=True)
            if any(s in text for s in req.stop):
                row.finish = "stop"
        if row.done:
            row.text, stopped = finish_text(self.model, row.completion, req)
            if stopped:
                row.finish = "stop"

    def _sample(self, row: Row, logits: Tensor) -> int:
        """Temperature, top-k, top-p, as ``transformers`` applies them (its own warpers)."""
        from transformers.generation.logits_process import (
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        req = row.request
        scores = logits.unsqueeze(0)
        if req.temperature != 1.0:
            scores = TemperatureLogitsWarper(req.temperature)(None, scores)  # type: ignore[arg-type]
        top_k = req.top_k if req.top_k is not None else self._vocab_default_top_k
        top_k = 50 if top_k is None else top_k
        if top_k:
            scores = TopKLogitsWarper(top_k=top_k)(None, scores)  # type: ignore[arg-type]
        if req.top_p is not None and req.top_p < 1.0:
            scores = TopPLogitsWarper(top_p=req.top_p)(None, scores)  # type: ignore[arg-type]
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs.cpu(), 1, generator=row.generator)[0, 0])


def prefill(
    model: WhiteBoxModel,
    ids: Sequence[int],
    cache: PrefixCache | None,
    scope: Hashable | None,
    *,
    logits: bool = True,
) -> tuple[Any, Tensor | None]:
    """Keys and values of ``ids`` (a ``DynamicCache``, batch 1), reusing the longest cached
    prefix and storing the result; with ``logits``, also the next-token logits after ``ids``.

    With ``logits`` at least the last token is fed, so its logits exist; without, a fully cached
    ``ids`` costs no forward call. ``scope`` ``None`` computes everything and stores nothing.

    Without ``logits``, ``ids`` is a prefix that a later call extends: it runs inside
    :meth:`~safelab.models.whitebox.WhiteBoxModel.prefix_pass` (hooks that act only at a call's
    last position leave it alone, as in one call over the whole prompt). With ``logits`` under
    such hooks, the last token (changed by them) is not stored.
    """
    import contextlib

    from transformers import DynamicCache

    ids = list(ids)
    at_last = model.acts_at_last
    if cache is None or scope is None:
        cache, scope = None, None
    m, prefix = (0, None)
    if cache is not None:
        m, prefix = cache.lookup(scope, ids, len(ids) - 1 if logits else len(ids))
    kv: Any = DynamicCache()
    if prefix is not None:
        for i, (k, v) in enumerate(prefix):
            kv.update(k, v, i)
    out_logits = None
    if m < len(ids):
        suffix = torch.tensor([ids[m:]], dtype=torch.long, device=model.device)
        passing = model.prefix_pass() if not logits else contextlib.nullcontext()
        with torch.inference_mode(), passing:
            out = model.hf(
                input_ids=suffix,
                use_cache=True,
                **{cache_arg(model): kv},
                **(_last_logits_only(model) if logits else {}),
            )
        out_logits = out.logits[0, -1].float() if logits else None
    if cache is not None:
        cache.stats.computed_tokens += len(ids) - m
        n = len(ids) - 1 if logits and at_last else len(ids)
        if m < n:
            layers = [(layer.keys[:, :, :n], layer.values[:, :, :n]) for layer in kv.layers]
            cache.store(scope, ids[:n], layers)
    return kv, out_logits


_MIN_SHARED = 64
"""Tokens a shared prefix must save (its tokens not yet cached, times the prompts that share it,
less one) to be computed once on its own before a group's batched prefill: about what one more
forward call costs."""


def shared_prefixes(prompts: Sequence[Sequence[int]], cached: Sequence[int]) -> list[list[int]]:
    """Prefixes worth computing once before ``prompts`` are prefilled together, shortest first.

    Sorted, each prompt's longest prefix shared with any other prompt is the longer of its
    common prefixes with its two neighbours (at most its length less one: its last token is
    always fed). A candidate is kept when the prompts starting with it save at least
    ``_MIN_SHARED`` tokens beyond what ``cached`` (per prompt, the cached prefix length) and the
    shorter candidates kept before it cover.
    """
    n = len(prompts)
    if n < 2:
        return []
    order = sorted(range(n), key=lambda i: list(prompts[i]))
    lcp = [0] * n
    for a, b in itertools.pairwise(order):
        x, y = prompts[a], prompts[b]
        m = _common(x, y, min(len(x), len(y)) - 1)
        lcp[a], lcp[b] = max(lcp[a], m), max(lcp[b], m)
    covered = list(cached)
    candidates = {tuple(prompts[i][: lcp[i]]) for i in range(n) if lcp[i] > cached[i]}
    kept = []
    for p in sorted(candidates, key=len):
        sharing = [i for i in range(n) if tuple(prompts[i][: len(p)]) == p]
        done = max(min(covered[i], len(p)) for i in sharing)
        if (len(sharing) - 1) * (len(p) - done) >= _MIN_SHARED:
            kept.append(list(p))
            for i in sharing:
                covered[i] = max(covered[i], len(p))
    return kept


def _common(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    m = 0
    while m < limit and a[m] == b[m]:
        m += 1
    return m


_CALL_TOKENS = 64
"""What one more forward call costs, in prompt tokens computed (reading the weights, Python):
suffixes of very different lengths prefill in separate calls when the padding saved is more."""


@dataclass
class Prefilled:
    """Several prompts prefilled together (:func:`prefill_parts`): each row's own keys and
    values after its shared prefix, and the prefix it attends to without holding a copy."""

    own: KV
    """Per layer ``(keys, values)``, ``[prompts, heads, longest own part, head_dim]``, each row's
    own part (its prompt after ``shared[b]`` tokens) right-aligned, left padding finite."""
    logits: Tensor
    """``[prompts, vocab]`` (float32): the next-token logits after each prompt."""
    shared: list[int]
    """Per row, the prompt tokens its ``prefix`` holds (0: none; ``own`` is the whole prompt)."""
    prefixes: list[KV | None]
    """Per row, the shared prefix's per-layer ``(keys, values)`` (batch 1; views of a cache
    entry, never written), or ``None``. Rows with the same prefix share the same tensors."""

    pad: list[int] = field(default_factory=list)
    """Per row, the left-padding positions of ``own``."""

    def whole(self, b: int) -> KV:
        """Row ``b``'s whole prompt (prefix, then own part), batch 1, in new tensors."""
        prefix, pad = self.prefixes[b], self.pad[b]
        out: KV = []
        for i, (k, v) in enumerate(self.own):
            ok, ov = k[b : b + 1, :, pad:], v[b : b + 1, :, pad:]
            if prefix is None:
                out.append(_own(ok, ov))
            else:
                out.append(
                    (torch.cat([prefix[i][0], ok], dim=2), torch.cat([prefix[i][1], ov], dim=2))
                )
        return out

    def full(self) -> KV:
        """Every row's whole prompt, right-aligned in one tensor per layer."""
        rows = [self.whole(b) for b in range(len(self.shared))]
        width = max(r[0][0].shape[2] for r in rows)
        full: KV = []
        for i, (k, _) in enumerate(self.own):
            keys = k.new_zeros((len(rows), k.shape[1], width, k.shape[3]))
            values = keys.clone()
            for b, row in enumerate(rows):
                keys[b, :, width - row[i][0].shape[2] :] = row[i][0][0]
                values[b, :, width - row[i][1].shape[2] :] = row[i][1][0]
            full.append((keys, values))
        return full


def prefill_group(
    model: WhiteBoxModel,
    prompts: Sequence[Sequence[int]],
    cache: PrefixCache | None,
    scope: Hashable | None,
) -> tuple[KV, Tensor]:
    """Keys and values of several prompts and the next-token logits after each, batched: the
    rows of :func:`prefill_parts` with each prefix copied in front of its row's own part.

    Returns:
        per layer ``(keys, values)``, ``[prompts, heads, longest prompt, head_dim]``, each row's
        prompt right-aligned (left padding finite, to be masked); logits ``[prompts, vocab]``
        (float32).
    """
    parts = prefill_parts(model, prompts, cache, scope)
    return parts.full(), parts.logits


def prefill_parts(
    model: WhiteBoxModel,
    prompts: Sequence[Sequence[int]],
    cache: PrefixCache | None,
    scope: Hashable | None,
) -> Prefilled:
    """Several prompts prefilled together, each prefix they share read once.

    Prefixes the prompts share (:func:`shared_prefixes`) are computed first, once each, through
    ``cache`` (stored there); then each prompt's longest cached prefix is taken and the
    remaining suffixes run as left-padded batches (one, or a few of similar lengths when one
    would mostly compute padding: :func:`suffix_buckets`), padding masked out and every row's
    position ids its own, so a row's logits are those of prefilling it alone (float rounding).
    The suffixes attend to their prefixes through :mod:`safelab.models.cascade` (rows with the
    same prefix as one query block against one copy), so no prefix is copied per row.
    Every prompt is stored in ``cache``. ``scope`` ``None`` (interventions that depend on how a
    prompt is split into forward calls) computes every prompt whole and shares nothing.
    """
    from safelab.models.kvcache import PrefixCache as _PrefixCache

    rows_ids = [list(p) for p in prompts]
    if scope is None:
        cache = None
    work = cache
    if scope is not None and work is None:  # share within the group only
        work = _PrefixCache()
    looked: list[tuple[int, KV | None]] = [(0, None)] * len(rows_ids)
    if work is not None:
        peek = [work.peek(scope, p, len(p) - 1) for p in rows_ids]
        for shared in shared_prefixes(rows_ids, peek):
            prefill(model, shared, work, scope, logits=False)
        looked = [work.lookup(scope, p, len(p) - 1) for p in rows_ids]
    # Rows whose prefixes are the same tokens share the first such row's tensors.
    first: dict[tuple[int, ...], KV] = {}
    prefixes: list[KV | None] = []
    for p, (hit, prefix) in zip(rows_ids, looked, strict=True):
        if not hit or prefix is None:
            prefixes.append(None)
            continue
        prefixes.append(first.setdefault(tuple(p[:hit]), prefix))
    shared_n = [hit if prefix is not None else 0 for hit, prefix in looked]
    sizes = [len(p) - m for p, m in zip(rows_ids, shared_n, strict=True)]
    buckets = suffix_buckets(sizes)
    parts = [
        _prefill_rows(model, [rows_ids[i] for i in b], [shared_n[i] for i in b],
                      [prefixes[i] for i in b])
        for b in buckets
    ]  # fmt: skip
    width, n = max(sizes), len(rows_ids)
    if len(parts) == 1 and buckets[0] == list(range(n)):
        own, logits = parts[0]
    else:  # one right-aligned tensor per layer, rows in prompt order
        k0, _ = parts[0][0][0]
        logits = parts[0][1].new_empty((n, parts[0][1].shape[1]))
        own = []
        for i in range(len(parts[0][0])):
            keys = k0.new_zeros((n, k0.shape[1], width, k0.shape[3]))
            values = keys.clone()
            for bucket, (kv, _) in zip(buckets, parts, strict=True):
                index = torch.tensor(bucket, device=keys.device)
                w = kv[i][0].shape[2]
                keys[index, :, width - w :] = kv[i][0]
                values[index, :, width - w :] = kv[i][1]
            own.append((keys, values))
        for bucket, (_, part_logits) in zip(buckets, parts, strict=True):
            logits[torch.tensor(bucket, device=logits.device)] = part_logits
    if work is not None:
        work.stats.computed_tokens += sum(sizes)
    out = Prefilled(own, logits, shared_n, prefixes, [width - s for s in sizes])
    if cache is not None:
        # Under hooks that change a call's last position, a prompt's last token is theirs: the
        # positions before it are stored (they are the unhooked model's, see prefix_scope).
        cut = 1 if model.acts_at_last else 0
        for b, p in enumerate(rows_ids):
            n = len(p) - cut
            if n > 0 and cache.peek(scope, p, n) < n:  # a repeat of a stored prompt: no copy
                whole = out.whole(b)
                cache.store(scope, p[:n], [(k[:, :, :n], v[:, :, :n]) for k, v in whole])
    return out


def suffix_buckets(sizes: Sequence[int], call: int = _CALL_TOKENS) -> list[list[int]]:
    """Rows (indices into ``sizes``, the tokens each must compute) split into left-padded
    batches that minimise the tokens computed, padding included, plus ``call`` per batch."""
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    best = [0] + [0] * len(order)
    cut = [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        best[j] = -1
        for i in range(j):
            cost = best[i] + (j - i) * sizes[order[j - 1]] + call
            if best[j] < 0 or cost < best[j]:
                best[j], cut[j] = cost, i
    buckets = []
    j = len(order)
    while j > 0:
        buckets.append(sorted(order[cut[j] : j]))
        j = cut[j]
    return buckets[::-1]


def _prefill_rows(
    model: WhiteBoxModel,
    prompts: list[list[int]],
    shared: list[int],
    prefixes: list[KV | None],
) -> tuple[KV, Tensor]:
    """One left-padded forward call over the suffixes of ``prompts`` after their ``shared``
    prefixes, which they attend to through the cascade; returns the suffixes' own keys and
    values, right-aligned (left-padded), and the last logits."""
    from transformers import DynamicCache

    n = len(prompts)
    sizes = [len(p) - m for p, m in zip(prompts, shared, strict=True)]
    width = max(sizes)
    device = model.device
    ids = torch.zeros((n, width), dtype=torch.long, device=device)
    positions = torch.zeros((n, width), dtype=torch.long, device=device)
    mask = torch.zeros((n, width), dtype=torch.long, device=device)
    for b, (p, m) in enumerate(zip(prompts, shared, strict=True)):
        s = len(p) - m
        ids[b, width - s :] = torch.tensor(p[m:], dtype=torch.long)
        positions[b, width - s :] = torch.arange(m, len(p))
        mask[b, width - s :] = 1
    kv: Any = DynamicCache()
    with cascade_for(model, prefixes), torch.inference_mode():
        out = model.hf(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{cache_arg(model): kv},
            **_last_logits_only(model),
        )
    logits = out.logits[:, -1].float()
    return [(layer.keys, layer.values) for layer in kv.layers], logits


def cascade_for(model: WhiteBoxModel, prefixes: Sequence[KV | None]) -> Any:
    """The cascade context of one forward call whose row ``b`` attends to ``prefixes[b]`` (rows
    with the same prefix tensors form one group); a null context when no row has a prefix."""
    import contextlib

    from safelab.models.cascade import Cascade, Group, cascade_attention

    members: dict[int, list[int]] = {}
    by_id: dict[int, KV] = {}
    for b, prefix in enumerate(prefixes):
        if prefix is not None:
            members.setdefault(id(prefix), []).append(b)
            by_id[id(prefix)] = prefix
    if not members:
        return contextlib.nullcontext()
    device = model.device
    groups = [Group(torch.tensor(rows, device=device), by_id[key]) for key, rows in members.items()]
    return cascade_attention(model.hf, Cascade(groups))


def run_rows(
    model: WhiteBoxModel,
    prompts: Sequence[Sequence[int]],
    requests: Sequence[GenerationRequest],
    cache: PrefixCache | None,
) -> list[GenerationResult]:
    """Decode every prompt in one continuous batch until all are done (in prompt order)."""
    scope = model.prefix_scope() if cache is not None else None
    batch = DecodeBatch(model, cache, scope)
    rows = batch.add_many(prompts, requests)
    while len(batch):
        batch.step()
    return [r.result() for r in rows]


def _cache_from_layers(layers: list[Any]) -> Any:
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.layers = layers
    return cache


_SPARE = 64
"""Positions a decode batch's cache layers allocate ahead (doubling when full)."""


def _growing_layer(keys: Tensor, values: Tensor, n: int) -> Any:
    """A layer over buffers ``keys``/``values`` whose first ``n`` positions are filled."""
    return _growing_class()(keys, values, n)


@functools.cache
def _growing_class() -> type:
    """``GrowingLayer``: a ``DynamicLayer`` that writes new positions into spare room instead of
    concatenating.

    ``transformers``' ``DynamicLayer`` concatenates on every step, copying the batch's whole
    cache once per token; here each step writes one position in place and hands attention a
    view of the filled part (same values, so the same logits). Room doubles when it runs out.
    """
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """Rows ``[:rows]`` and positions ``[start:n]`` of the buffers are the visible cache."""

        def __init__(self, keys: Tensor, values: Tensor, n: int) -> None:
            super().__init__()
            self.lazy_initialization(keys[:, :, :n], values[:, :, :n])
            self._k, self._v = keys, values
            self.rows, self.start, self.n = keys.shape[0], 0, n
            self._view()

        def _view(self) -> None:
            r, a, b = self.rows, self.start, self.n
            self.keys, self.values = self._k[:r, :, a:b], self._v[:r, :, a:b]

        def update(
            self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any
        ) -> tuple[Tensor, Tensor]:
            add = key_states.shape[2]
            if self.n + add > self._k.shape[2]:
                room = 2 * (self.n - self.start + add)
                filled_k = self._k[: self.rows, :, self.start : self.n]
                filled_v = self._v[: self.rows, :, self.start : self.n]
                self._k, self._v = _with_room(filled_k, room), _with_room(filled_v, room)
                self.n -= self.start
                self.start = 0
            self._k[: self.rows, :, self.n : self.n + add] = key_states
            self._v[: self.rows, :, self.n : self.n + add] = value_states
            self.n += add
            self._view()
            return self._k[: self.rows, :, self.start : self.n], self._v[
                : self.rows, :, self.start : self.n
            ]

        def keep(self, moves: list[tuple[int, int]], rows: int, drop: int) -> None:
            """Copy row ``src`` into row ``dst`` for each move, keep ``rows`` rows, and hide the
            first ``drop`` visible positions."""
            a, b = self.start, self.n
            for dst, src in moves:
                self._k[dst, :, a:b] = self._k[src, :, a:b]
                self._v[dst, :, a:b] = self._v[src, :, a:b]
            self.rows, self.start = rows, self.start + drop
            self._view()

    return GrowingLayer


def _with_room(t: Tensor, room: int) -> Tensor:
    """``t`` copied into a buffer of ``room`` positions (dim 2), the rest uninitialised."""
    shape = list(t.shape)
    shape[2] = room
    out = t.new_empty(shape)
    out[:, :, : t.shape[2]] = t
    return out


def _own(k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Copies that do not keep the whole batch's tensors alive."""
    return k.contiguous().clone(), v.contiguous().clone()


def _logprob_entry(model: WhiteBoxModel, logits: Tensor, top: int, token: int) -> TokenLogprob:
    tok = model.tokenizer
    lp = torch.log_softmax(logits.float(), dim=-1)
    entry = TokenLogprob(tok.decode([token]), float(lp[token]))
    if top:
        values, indices = lp.topk(top)
        entry.top = [(tok.decode([int(i)]), float(v)) for v, i in zip(values, indices, strict=True)]
    return entry
