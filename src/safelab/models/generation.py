"""Batched generation on a white-box model (left padding, greedy or sampled, stop strings)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from safelab.errors import SafelabError

if TYPE_CHECKING:
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
) -> list[GenerationResult]:
    """Generate for every prompt in one ``generate`` call (left-padded)."""
    tok = model.tokenizer
    flags = list(chat_formatted) if chat_formatted is not None else [True] * len(texts)
    prompts = encode_prompts(model, texts, flags)
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
) -> list[GenerationResult]:
    """Sample ``n`` continuations of one token prefix, computing the prefix's KV cache once.

    The prefix (all but its last token) runs through the model once; its ``DynamicCache`` is
    repeated ``n`` times along the batch and handed to ``generate``, which then only feeds the
    last prefix token and the new tokens. Greedy decoding gives the same tokens as ``n`` calls
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
    ids = torch.tensor([prefix], dtype=torch.long, device=model.device)
    with torch.inference_mode():
        if len(prefix) > 1:
            cache = DynamicCache(config=model.hf.config)
            # transformers >= 5.2x names the argument ``cache`` (``past_key_values`` before).
            name = (
                "cache"
                if "cache" in inspect.signature(model.hf.forward).parameters
                else "past_key_values"
            )
            model.hf(input_ids=ids[:, :-1], use_cache=True, **{name: cache})
            cache.batch_repeat_interleave(n)
            kwargs[name] = cache
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
    tok = model.tokenizer
    seqs = out.sequences[:, width:].cpu()
    eos = _eos_ids(model)
    results = []
    for b, prompt in enumerate(prompts):
        comp = seqs[b].tolist()
        finish = "max_tokens"
        for j, t in enumerate(comp):
            if t in eos:
                comp, finish = comp[:j], "stop"
                break
        text = tok.decode(comp, skip_special_tokens=True)
        for s in req.stop:
            if s in text:
                text, finish = text[: text.index(s)], "stop"
        lp = _logprobs(model, out.logits, b, comp, req.top_logprobs) if req.logprobs else None
        results.append(GenerationResult(text, prompt, comp, finish, lp))
    return results


def _eos_ids(model: WhiteBoxModel) -> set[int]:
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
