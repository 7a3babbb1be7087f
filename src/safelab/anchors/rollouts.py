"""Rollouts resampled from each prefix of a trace, cached on disk per (trace, prefix).

``<cache>/<trace id>/<k>.json`` holds the rollouts from the prefix before sentence ``k``, keyed
by everything that defines them (model, prefix text, decoding settings, seed). A killed run
resumes from the finished prefixes; asking for more rollouts samples only the missing ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safelab.anchors.answers import extract_answer
from safelab.anchors.traces import Trace, split_sentences
from safelab.errors import SafelabError
from safelab.files import atomic_write_text

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel


@dataclass(frozen=True)
class RolloutSettings:
    """How rollouts are sampled; built by ``AnchorsConfig.settings()``, which holds the defaults."""

    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int


@dataclass
class Rollout:
    text: str
    answer: str | None
    first_sentence: str
    finish: str
    elicited: bool = False
    """The continuation ended without an answer line, so ``Answer:`` was appended and the
    answer sampled after it (same temperature and top-p)."""
    probs: dict[str, float] | None = None
    """For an elicited answer, the distribution it was drawn from (over the trace's options, at
    the rollout temperature): ``elicit="expected"`` counts the rollout as these fractions."""


def prefix_text(model: WhiteBoxModel, trace: Trace, k: int) -> str:
    """The rendered chat with the assistant turn prefilled with the first ``k`` sentences."""
    msgs = [*trace.messages(), {"role": "assistant", "content": trace.prefix(k)}]
    return model.render_chat(msgs, continue_final_message=True)


def prefix_ids(model: WhiteBoxModel, trace: Trace, k: int) -> list[int]:
    """Token ids of :func:`prefix_text`; raises if the prompt exceeds the model's context."""
    ids = list(model.tokenizer(prefix_text(model, trace, k), add_special_tokens=False)["input_ids"])
    return ids


def context_length(model: WhiteBoxModel) -> int:
    cfg = model.hf.config
    value: Any = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", 2048)
    return int(value)


def check_fits(model: WhiteBoxModel, trace: Trace, extra: int) -> None:
    """Raise one line if the full trace plus ``extra`` new tokens exceeds the model's context."""
    n = len(prefix_ids(model, trace, len(trace.spans))) + extra
    limit = context_length(model)
    if n > limit:
        raise SafelabError(
            f"trace {trace.id!r}: {n} tokens (prompt + reasoning + {extra} new) exceeds "
            f"{model.name}'s context of {limit}: shorten the prompt or lower --max-new-tokens"
        )


_ANSWER_DONE = re.compile(
    r"answer\s*(?:is)?\s*[:\uff1a][^\n]*\w[^\n]*?(?:\n|\.(?!\d))", re.IGNORECASE
)


def answer_stop(model: WhiteBoxModel, prompt_len: int) -> Any:
    """A per-row ``StoppingCriteria``: a row is done once its answer line is complete."""
    from transformers import StoppingCriteria

    tok = model.tokenizer

    class AnswerStop(StoppingCriteria):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            texts = tok.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
            return torch.tensor(
                [bool(_ANSWER_DONE.search(t)) for t in texts], device=input_ids.device
            )

    return AnswerStop()


def first_sentence(text: str) -> str:
    spans = split_sentences(text)
    return text[spans[0][0] : spans[0][1]] if spans else ""


def _key(model: WhiteBoxModel, text: str, s: RolloutSettings) -> str:
    blob = json.dumps([model.name, text, asdict(s)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80]


def _seed(base: int, trace_id: str, k: int, done: int) -> int:
    h = hashlib.sha256(f"{base}:{trace_id}:{k}:{done}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def category_ids(model: WhiteBoxModel, categories: list[str]) -> list[list[int]]:
    """The tokens of `` <category>`` for each answer category, as it follows ``Answer:``.

    SmolLM2 writes `` 84`` as ``[' ', '8', '4']``: every number starts with the same token, so
    categories are scored by all their tokens (:func:`category_logprobs`), not the first.
    """
    out = [
        list(model.tokenizer(" " + c, add_special_tokens=False)["input_ids"]) for c in categories
    ]
    if any(not ids for ids in out):
        raise SafelabError(f"an answer category has no tokens: {categories!r}")
    return out


def category_logprobs(
    model: WhiteBoxModel, context: list[int], cats: list[list[int]], cached: Any = None
) -> Any:
    """``log p(category | context)`` per category, summed over its tokens (``[len(cats)]``).

    ``context`` is fed after ``cached`` (a :func:`prefix_cache`, copied, not changed) or from
    scratch. Single-token categories need one row; otherwise one row per category, right-padded
    (causal attention: the padding never reaches the scored positions).
    """
    import copy

    import torch

    single = all(len(c) == 1 for c in cats)
    rows = [context] if single else [context + c[:-1] for c in cats]
    width = max(len(r) for r in rows)
    pad = rows[0][-1]
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=model.device)
    kwargs: dict[str, Any] = {}
    if cached is not None:
        cache, name = cached
        cache = copy.deepcopy(cache)
        if len(rows) > 1:
            cache.batch_repeat_interleave(len(rows))
        kwargs[name] = cache
    with torch.inference_mode():
        logp = torch.log_softmax(
            model.hf(input_ids=ids, use_cache=True, **kwargs).logits.float(), -1
        )
    start = len(context) - 1
    out = [
        sum(float(logp[0 if single else b, start + t, tok]) for t, tok in enumerate(c))
        for b, c in enumerate(cats)
    ]
    return torch.tensor(out)


def prefix_cache(model: WhiteBoxModel, ids: list[int]) -> Any:
    """The KV cache of ``ids[:-1]`` (batch 1); feed ``ids[-1:]`` and what follows next."""
    import inspect

    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.hf.config)
    name = (
        "cache" if "cache" in inspect.signature(model.hf.forward).parameters else "past_key_values"
    )
    with torch.inference_mode():
        model.hf(
            input_ids=torch.tensor([ids[:-1]], device=model.device), use_cache=True, **{name: cache}
        )
    return cache, name


def elicit_answers(
    model: WhiteBoxModel,
    trace: Trace,
    k: int,
    ids: list[int],
    completions: list[list[int]],
    rollouts: list[Rollout],
    settings: RolloutSettings,
    seed: int,
) -> None:
    """For rollouts that ended without an answer line, append ``Answer:`` and sample one.

    The answer is drawn (at the rollouts' temperature) among the trace's options, from their
    probabilities after ``Answer:`` (all of each option's tokens), the prefix's KV cache reused.
    Traces without options leave such rollouts unscorable.
    """
    import torch

    from safelab.anchors.traces import ANSWER_PREFIX

    todo = [i for i, r in enumerate(rollouts) if r.answer is None]
    if not todo or not trace.options:
        return
    options = list(trace.options)
    cats = category_ids(model, options)
    cached = prefix_cache(model, ids)
    gen = torch.Generator().manual_seed(seed)
    for i in todo:
        text = rollouts[i].text.rstrip()
        sep = "\n" if (text or trace.prefix(k)) else ""
        tail = list(model.tokenizer(sep + ANSWER_PREFIX, add_special_tokens=False)["input_ids"])
        logp = category_logprobs(model, [ids[-1], *completions[i], *tail], cats, cached)
        probs = torch.softmax(logp / max(settings.temperature, 1e-6), -1)
        rollouts[i].answer = options[int(torch.multinomial(probs, 1, generator=gen))]
        rollouts[i].elicited = True
        rollouts[i].probs = {o: float(p) for o, p in zip(options, probs.tolist(), strict=True)}


def rollouts_for_prefix(
    model: WhiteBoxModel,
    trace: Trace,
    k: int,
    n: int,
    settings: RolloutSettings,
    cache: Path | None,
    batch: int = 32,
) -> list[Rollout]:
    """``n`` rollouts from the prefix before sentence ``k``, from the cache where it has them."""
    from safelab.models.generation import GenerationRequest, sample_continuations

    text = prefix_text(model, trace, k)
    key = _key(model, text, settings)
    path = cache / _slug(trace.id) / f"{k}.json" if cache else None
    have: list[Rollout] = []
    if path is not None and path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            have = [Rollout(**r) for r in stored["rollouts"]]
    ids = list(model.tokenizer(text, add_special_tokens=False)["input_ids"])
    while len(have) < n:
        m = min(batch, n - len(have))
        req = GenerationRequest(
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            seed=_seed(settings.seed, trace.id, k, len(have)),
        )
        done = sample_continuations(model, ids, m, req, [answer_stop(model, len(ids))])
        batch_rollouts = [
            Rollout(r.text, extract_answer(r.text, trace.options), first_sentence(r.text), r.finish)
            for r in done
        ]
        completions = [r.completion_ids for r in done]
        elicit_answers(model, trace, k, ids, completions, batch_rollouts, settings, req.seed or 0)
        have.extend(batch_rollouts)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            payload: dict[str, Any] = {
                "key": key,
                "trace": trace.id,
                "k": k,
                "rollouts": [asdict(r) for r in have],
            }
            atomic_write_text(path, json.dumps(payload))
    return have[:n]
