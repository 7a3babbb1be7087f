"""An optional stronger student: a LoRA fine-tune (peft) of the model with a linear head.

Instead of a head on frozen, cached activations, the student adapts the model itself: LoRA
adapters on the attention projections plus a linear head reading ``blocks.<layer>.resid_post``
at the last token, trained jointly with the same losses as the linear-head student. This needs
a forward and backward pass per example and step, so on a CPU it is only practical on tiny
models (the unit tests) or a few hundred short texts; on a GPU it is the closer match to
Burns et al.'s fine-tuned students. The adapters are removed afterwards: the caller's model is
unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from safelab.errors import SafelabError
from safelab.w2s.losses import LossConfig

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel


@dataclass
class LoraStudentConfig:
    """LoRA and training settings for the fine-tuned student."""

    rank: int = 8
    alpha: int = 16
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    epochs: int = 2
    batch_size: int = 16
    lr: float = 1e-4
    head_lr: float = 1e-3
    max_length: int = 128


def _batch(
    model: WhiteBoxModel, texts: Sequence[str], max_length: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    tok = model.tokenizer
    ids = [list(tok(t, truncation=True, max_length=max_length)["input_ids"]) for t in texts]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    width = max(len(i) for i in ids)
    x = torch.full((len(ids), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for j, seq in enumerate(ids):
        x[j, : len(seq)] = torch.tensor(seq)
        mask[j, : len(seq)] = 1
    last = torch.tensor([len(s) - 1 for s in ids])
    return x.to(model.device), mask.to(model.device), last.to(model.device)


def lora_student_probs(
    model: WhiteBoxModel,
    train_texts: Sequence[str],
    targets: Sequence[float] | np.ndarray,
    eval_texts: Sequence[str],
    layer: int,
    loss: LossConfig,
    cfg: LoraStudentConfig,
    seed: int,
) -> np.ndarray:
    """Fine-tune LoRA + head on ``train_texts`` against soft ``targets``; ``p(1)`` on ``eval_texts``."""
    from peft import LoraConfig, get_peft_model

    if not 0 <= layer < model.n_layers:
        raise SafelabError(f"LoRA student layer {layer} is outside 0..{model.n_layers - 1}")
    present = {name.rsplit(".", 1)[-1] for name, _ in model.hf.named_modules()}
    modules = [m for m in cfg.target_modules if m in present]
    if not modules:
        raise SafelabError(
            f"none of the LoRA target modules {cfg.target_modules} exist in {model.name}"
        )
    y = torch.as_tensor(np.asarray(targets, dtype=np.float32))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    was_training = model.hf.training
    peft_model = get_peft_model(
        model.hf,
        LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules=modules),
    )
    head = torch.nn.Linear(model.d_model, 1).to(model.device)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": params, "lr": cfg.lr}, {"params": head.parameters(), "lr": cfg.head_lr}]
    )

    def logits(texts: Sequence[str]) -> torch.Tensor:
        ids, mask, last = _batch(model, texts, cfg.max_length)
        out = model.body(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hidden = out.hidden_states[layer + 1][torch.arange(len(texts)), last]
        return head(hidden.float()).squeeze(-1)

    n = len(train_texts)
    total = cfg.epochs * ((n + cfg.batch_size - 1) // cfg.batch_size)
    step = 0
    try:
        peft_model.train()
        with torch.enable_grad():
            for _ in range(cfg.epochs):
                order = torch.randperm(n, generator=gen).tolist()
                for lo in range(0, n, cfg.batch_size):
                    idx = order[lo : lo + cfg.batch_size]
                    value = loss(logits([train_texts[i] for i in idx]), y[idx], step / total)
                    opt.zero_grad()
                    value.backward()
                    opt.step()
                    step += 1
        peft_model.eval()
        probs = []
        with torch.no_grad():
            for lo in range(0, len(eval_texts), cfg.batch_size):
                chunk = list(eval_texts[lo : lo + cfg.batch_size])
                probs.append(torch.sigmoid(logits(chunk)).double().cpu().numpy())
    finally:
        model.hf = peft_model.unload()
        model.hf.train(was_training)
    return np.concatenate(probs)
