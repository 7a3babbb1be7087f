"""Batched generation on a white-box model (left padding, greedy or sampled, stop strings)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from safelab.errors import SafelabError

if TYPE_CHECKING:
    from safelab.models.kvcache import PrefixCache
    from safelab.models.whitebox import WhiteBoxModel


@dataclass(frozen=True)
class GenerationRequest:
    """Decoding settings shared by a batch. ``temperature == 0`` means greedy."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class GenerationResult:
    text: str
    prompt_ids: list[int]
    completion_ids: list[int]
    finish: str
    """``stop`` (end of turn or a stop string) or ``max_tokens``."""
    logprobs: list[TokenLogprob] | None = None


def encode_prompts(
    model: WhiteBoxModel, texts: Sequence[str], chat_formatted: Sequence[bool]
) -> list[list[int]]:
    """Token ids per prompt; chat-rendered text already carries its special tokens."""
    return [
        list(model.tokenizer(t, add_special_tokens=not c)["input_ids"])
        for t, c in zip(texts, chat_formatted, strict=True)
    ]


def generate_batch(
    model: WhiteBoxModel,
    texts: Sequence[str],
    req: GenerationRequest,
    chat_formatted: Sequence[bool] | None = None,
    cache: PrefixCache | None = None,
) -> list[GenerationResult]:
    """Generate for every prompt: one left-padded ``generate`` call, or, with a prefix
    ``cache``, one continuous decode batch that reuses cached prefixes
    (:mod:`safelab.models.decode`; same greedy tokens).

    The cache is used when the model and its active hooks allow it
    (:func:`use_decode_loop`); otherwise the padded call runs, as without a cache.
    """
    flags = list(chat_formatted) if chat_formatted is not None else [True] * len(texts)
    prompts = encode_prompts(model, texts, flags)
    if cache is not None and use_decode_loop(model):
        from safelab.models.decode import run_rows

        return run_rows(model, prompts, [req] * len(prompts), cache)
    return generate_padded(model, prompts, req)


def use_decode_loop(model: WhiteBoxModel) -> bool:
    """The continuous decode loop runs this model under its active hooks: a supported
    architecture and generation config, and hooks that are not opaque."""
    from safelab.models.decode import supported

    return supported(model) and model.intervention_key() is not None


def generate_padded(
    model: WhiteBoxModel, prompts: Sequence[list[int]], req: GenerationRequest
) -> list[GenerationResult]:
    """Generate for token-id prompts in one left-padded ``transformers`` ``generate`` call."""
    tok = model.tokenizer
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :] = torch.tensor(p)
        mask[b, width - len(p) :] = 1
    kwargs = _generate_kwargs(model, req)
    with torch.inference_mode():
        out = model.hf.generate(
            input_ids=ids.to(model.device), attention_mask=mask.to(model.device), **kwargs
        )
    return _results(model, out, width, prompts, req)


def sample_continuations(
    model: WhiteBoxModel,
    prefix_ids: Sequence[int],
    n: int,
    req: GenerationRequest,
    stopping_criteria: Sequence[Any] = (),
    cache: PrefixCache | None = None,
) -> list[GenerationResult]:
    """Sample ``n`` continuations of one token prefix, computing the prefix's KV cache once.

    The prefix (all but its last token) runs through the model once; its ``DynamicCache`` is
    repeated ``n`` times along the batch and handed to ``generate``, which then only feeds the
    last prefix token and the new tokens. With a prefix ``cache`` (the model's own by default,
    when on), the prefix itself reuses what earlier calls computed: resampling from many
    prefixes of one trace computes each token once (:func:`safelab.models.decode.prefill`). Greedy decoding gives the same tokens as ``n`` calls
    of :func:`generate_batch` on the decoded prefix (tested); sampling draws from the same
    distribution with the global torch generator (seeded by ``req.seed``). Extra
    ``stopping_criteria`` (transformers ``StoppingCriteria``, per-row) end rows early.
    """
    from transformers import DynamicCache

    prefix = list(prefix_ids)
    if n < 1:
        raise SafelabError(f"n={n}: sample at least one continuation")
    if not prefix:
        raise SafelabError("empty prefix: give at least one token")
    kwargs = _generate_kwargs(model, req)
    if stopping_criteria:
        from transformers import StoppingCriteriaList

        kwargs["stopping_criteria"] = StoppingCriteriaList(
            [*kwargs.get("stopping_criteria", []), *stopping_criteria]
        )
    from safelab.models.decode import cache_arg, prefill, supported

    cache = cache if cache is not None else model.prefix_cache
    ids = torch.tensor([prefix], dtype=torch.long, device=model.device)
    with torch.inference_mode():
        if len(prefix) > 1:
            name = cache_arg(model)
            if cache is not None and supported(model):
                kv, _ = prefill(model, prefix[:-1], cache, model.prefix_scope(), logits=False)
            else:  # a prefix the next call extends: hooks of a call's last position wait
                kv = DynamicCache(config=model.hf.config)
                with model.prefix_pass():
                    model.hf(input_ids=ids[:, :-1], use_cache=True, **{name: kv})
            kv.batch_repeat_interleave(n)
            kwargs[name] = kv
        batch = ids.expand(n, -1).contiguous()
        out = model.hf.generate(input_ids=batch, attention_mask=torch.ones_like(batch), **kwargs)
    return _results(model, out, len(prefix), [prefix] * n, req)


def _generate_kwargs(model: WhiteBoxModel, req: GenerationRequest) -> dict[str, Any]:
    tok = model.tokenizer
    kwargs: dict[str, Any] = dict(
        max_new_tokens=req.max_new_tokens,
        pad_token_id=tok.pad_token_id,
        return_dict_in_generate=True,
    )
    if req.temperature and req.temperature > 0:
        kwargs.update(do_sample=True, temperature=req.temperature)
        if req.top_p is not None:
            kwargs["top_p"] = req.top_p
        if req.top_k is not None:
            kwargs["top_k"] = req.top_k
        if req.seed is not None:
            torch.manual_seed(req.seed)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if req.stop:
        from transformers import StoppingCriteriaList, StopStringCriteria

        kwargs["stopping_criteria"] = StoppingCriteriaList(
            [StopStringCriteria(tok, list(req.stop))]
        )
    if req.logprobs:
        kwargs["output_logits"] = True
    return kwargs


def _results(
    model: WhiteBoxModel,
    out: Any,
    width: int,
    prompts: Sequence[list[int]],
    req: GenerationRequest,
) -> list[GenerationResult]:
    seqs = out.sequences[:, width:].cpu()
    eos = eos_ids(model)
    results = []
    for b, prompt in enumerate(prompts):
        comp = seqs[b].tolist()
        finish = "max_tokens"
        for j, t in enumerate(comp):
            if t in eos:
                comp, finish = comp[:j], "stop"
                break
        text, stopped = finish_text(model, comp, req)
        if stopped:
            finish = "stop"
        lp = _logprobs(model, out.logits, b, comp, req.top_logprobs) if req.logprobs else None
        results.append(GenerationResult(text, prompt, comp, finish, lp))
    return results


def finish_text(
    model: WhiteBoxModel, completion: Sequence[int], req: GenerationRequest
) -> tuple[str, bool]:
    """A completion's text, cut at the first of ``req.stop`` found; and whether one was."""
    text = model.tokenizer.decode(list(completion), skip_special_tokens=True)
    stopped = False
    for s in req.stop:
        if s in text:
            text, stopped = text[: text.index(s)], True
    return text, stopped


def eos_ids(model: WhiteBoxModel) -> set[int]:
    ids: set[int] = set()
    for source in (model.hf.generation_config.eos_token_id, model.tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source is not None:
            ids.update(source)
    return ids


def _logprobs(
    model: WhiteBoxModel, logits: Sequence[torch.Tensor], b: int, comp: list[int], top: int
) -> list[TokenLogprob]:
    tok = model.tokenizer
    out = []
    for step, token_id in enumerate(comp):
        lp = torch.log_softmax(logits[step][b].float(), dim=-1)
        entry = TokenLogprob(tok.decode([token_id]), float(lp[token_id]))
        if top:
            values, indices = lp.topk(top)
            entry.top = [
                (tok.decode([int(i)]), float(v)) for v, i in zip(values, indices, strict=True)
            ]
        out.append(entry)
    return out
