"""Answers in the model's own words, cached on disk, and per-token features of each answer.

:func:`generate_answers` asks the model every table question greedily (the answer that is
labelled and probed) and ``n_samples`` more times at a temperature (the sampling-consistency
baseline), in batches; each finished batch is written to ``<out>/generations/<table>.jsonl``
atomically, so a killed run resumes without regenerating.

:func:`token_features` runs one forward pass over prompt + answer and keeps, for every answer
token, the residual stream at the probe sites, the token's log-probability under the model
and the predictive entropy of the distribution it was drawn from (logits = ``lm_head`` of
``ln_final``). Cached as ``<out>/features/<table>.safetensors`` with a key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from safelab.files import atomic_write_text

if TYPE_CHECKING:
    from safelab.hallucination.tables import FactTable
    from safelab.models.whitebox import WhiteBoxModel


@dataclass
class Answer:
    """One entity's greedy answer (ids for exact token spans) and its sampled answers."""

    table: str
    entity: str
    question: str
    text: str
    prompt_ids: list[int]
    completion_ids: list[int]
    samples: list[str] = field(default_factory=list)
    key: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def generation_key(model_name: str, question: str, settings: dict[str, Any]) -> str:
    blob = json.dumps([model_name, question, settings], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_cache(path: Path) -> dict[str, Answer]:
    """Cached answers by key (a missing file is an empty cache)."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            a = Answer(**json.loads(line))
            out[a.key] = a
    return out


def _write_cache(path: Path, answers: Sequence[Answer]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(a.to_dict()) + "\n" for a in answers))


def generate_answers(
    model: WhiteBoxModel,
    table: FactTable,
    entities: Sequence[str],
    cache_path: Path,
    *,
    max_new_tokens: int,
    n_samples: int,
    temperature: float,
    seed: int,
    batch_size: int,
    log: Callable[[str], None] = print,
) -> tuple[list[Answer], int]:
    """Answers for ``entities`` (cached ones reused); returns them and how many were new."""
    from safelab.models.generation import GenerationRequest, generate_batch

    settings = {
        "max_new_tokens": max_new_tokens,
        "n_samples": n_samples,
        "temperature": temperature,
        "seed": seed,
        "batch_size": batch_size,
    }
    cached = read_cache(cache_path)
    wanted = [
        (e, table.question(e), generation_key(model.name, json.dumps(table.messages(e)), settings))
        for e in entities
    ]
    todo = [w for w in wanted if w[2] not in cached]
    done: dict[str, Answer] = dict(cached)
    greedy = GenerationRequest(max_new_tokens=max_new_tokens)
    for b in range(0, len(todo), batch_size):
        batch = todo[b : b + batch_size]
        texts = [model.render_chat(table.messages(e)) for e, _, _ in batch]
        results = generate_batch(model, texts, greedy)
        samples: list[list[str]] = [[] for _ in batch]
        for k in range(n_samples):
            req = GenerationRequest(
                max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + 1 + k
            )
            for i, r in enumerate(generate_batch(model, texts, req)):
                samples[i].append(r.text)
        for (e, q, key), r, s in zip(batch, results, samples, strict=True):
            done[key] = Answer(table.name, e, q, r.text, r.prompt_ids, r.completion_ids, s, key)
        _write_cache(cache_path, list(done.values()))
        log(f"  {table.name}: generated {min(b + batch_size, len(todo))}/{len(todo)}")
    return [done[key] for _, _, key in wanted], len(todo)


@dataclass
class TokenFeatures:
    """Per answer token: activations per site, log-probability, entropy; rows by answer."""

    acts: dict[str, torch.Tensor]
    """site -> ``[tokens, d_model]`` (float16 on disk, float32 here)."""
    answer: torch.Tensor
    """``[tokens]`` index of the answer each row belongs to."""
    position: torch.Tensor
    """``[tokens]`` index of the token within its answer."""
    logprob: torch.Tensor
    entropy: torch.Tensor

    def rows(self, answer: int) -> torch.Tensor:
        return torch.nonzero(self.answer == answer).flatten()


def features_key(model_name: str, sites: Sequence[str], answers: Sequence[Answer]) -> str:
    blob = json.dumps([model_name, list(sites), [a.key for a in answers]])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def token_features(
    model: WhiteBoxModel,
    answers: Sequence[Answer],
    sites: Sequence[str],
    cache_path: Path | None = None,
    *,
    batch_size: int = 16,
) -> TokenFeatures:
    """Features of every answer token (see the module docstring), cached at ``cache_path``."""
    from safetensors.torch import load_file, save_file

    key = features_key(model.name, sites, answers)
    meta_path = cache_path.with_suffix(".json") if cache_path else None
    if (
        cache_path
        and meta_path
        and cache_path.is_file()
        and meta_path.is_file()
        and json.loads(meta_path.read_text()).get("key") == key
    ):
        t = load_file(str(cache_path))
        return TokenFeatures(
            {s: t[f"acts.{s}"].float() for s in sites},
            t["answer"],
            t["position"],
            t["logprob"],
            t["entropy"],
        )
    feats = _compute(model, answers, sites, batch_size)
    if cache_path and meta_path:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"acts.{s}": v.half().contiguous() for s, v in feats.acts.items()}
        tensors.update(
            answer=feats.answer,
            position=feats.position,
            logprob=feats.logprob,
            entropy=feats.entropy,
        )
        tmp = cache_path.with_name(cache_path.name + ".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(cache_path)
        atomic_write_text(meta_path, json.dumps({"key": key, "sites": list(sites)}))
        feats.acts = {s: v.half().float() for s, v in feats.acts.items()}
    return feats


def _compute(
    model: WhiteBoxModel, answers: Sequence[Answer], sites: Sequence[str], batch_size: int
) -> TokenFeatures:
    from safelab.models.capture import Encoded, iter_capture

    read = [*sites, "ln_final"]
    encoded = [
        Encoded(
            list(a.prompt_ids) + list(a.completion_ids),
            (len(a.prompt_ids), len(a.prompt_ids) + len(a.completion_ids)),
        )
        for a in answers
    ]
    per: dict[int, dict[str, torch.Tensor]] = {}
    for _, part in iter_capture(
        model, encoded, model.resolve_sites(read), "all", batch_size=batch_size
    ):
        for i in part.sample.unique().tolist():
            sel = part.sample == i
            order = torch.argsort(part.position[sel])
            per[i] = {s: part.acts[s][sel][order].float() for s in read}
    lm_head = model.hf.get_output_embeddings()
    acts: dict[str, list[torch.Tensor]] = {s: [] for s in sites}
    idx, pos, lps, ents = [], [], [], []
    for i, (a, e) in enumerate(zip(answers, encoded, strict=True)):
        start, end = e.response or (0, 0)
        if end <= start:
            continue
        for s in sites:
            acts[s].append(per[i][s][start:end])
        with torch.inference_mode():
            final = per[i]["ln_final"][start - 1 : end - 1].to(model.device, model.dtype)
            logp = torch.log_softmax(lm_head(final).float(), dim=-1).cpu()
        target = torch.tensor(a.completion_ids, dtype=torch.long)
        lps.append(logp.gather(1, target[:, None]).squeeze(1))
        ents.append(-(logp.exp() * logp).sum(-1))
        idx.append(torch.full((end - start,), i, dtype=torch.long))
        pos.append(torch.arange(end - start))
    d = model.d_model
    return TokenFeatures(
        {s: torch.cat(v) if v else torch.zeros(0, d) for s, v in acts.items()},
        torch.cat(idx) if idx else torch.zeros(0, dtype=torch.long),
        torch.cat(pos) if pos else torch.zeros(0, dtype=torch.long),
        torch.cat(lps) if lps else torch.zeros(0),
        torch.cat(ents) if ents else torch.zeros(0),
    )
