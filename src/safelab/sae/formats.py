"""The field's SAE file formats, read into one :class:`SparseAutoencoder`.

==============  =========================================  ==========================================
format          files                                      tensors (orientation)
==============  =========================================  ==========================================
SAELens         ``cfg.json`` + ``sae_weights.safetensors``  ``W_enc [d_in, d_sae]``, ``W_dec [d_sae,
                                                           d_in]``, ``b_enc``, ``b_dec``, ``threshold``
sparsify        ``cfg.json`` + ``sae.safetensors``          ``encoder.weight [d_sae, d_in]``,
(EleutherAI)                                               ``encoder.bias``, ``W_dec [d_sae, d_in]``,
                                                           ``b_dec``; TopK with ``k``; input - b_dec
Gemma Scope     ``params.npz``                             ``W_enc [d_in, d_sae]``, ``W_dec``,
                                                           ``b_enc``, ``b_dec``, ``threshold``
==============  =========================================  ==========================================

safelab saves SAELens's layout, with the site as ``metadata.hook_name`` and safelab's own
provenance (training config, metrics) under a ``safelab`` key that SAELens ignores.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from safelab.errors import SafelabError
from safelab.files import atomic_write_text, tmp_path_beside
from safelab.sae.sae import SAEConfig, SparseAutoencoder

SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"
GEMMASCOPE_WEIGHTS = "params.npz"
KNOWN = (
    f"SAELens (cfg.json + {SAELENS_WEIGHTS}), sparsify (cfg.json + {SPARSIFY_WEIGHTS}), "
    f"Gemma Scope ({GEMMASCOPE_WEIGHTS})"
)
_ARCH_TO_SAELENS = {"jumprelu": "jumprelu", "topk": "topk", "relu": "standard"}
_ARCH_FROM_SAELENS = {
    "jumprelu": "jumprelu",
    "topk": "topk",
    "batchtopk": "topk",
    "standard": "relu",
}


def detect_format(path: Path) -> tuple[str, Path]:
    """``(format, folder)`` for an SAE folder or one of its weights files.

    Raises:
        SafelabError: nothing at ``path``, or no format safelab knows.
    """
    if not path.exists():
        raise SafelabError(f"no SAE at {path}: give a folder holding one of {KNOWN}")
    folder = path if path.is_dir() else path.parent
    if path.is_file() and path.name not in (SAELENS_WEIGHTS, SPARSIFY_WEIGHTS, GEMMASCOPE_WEIGHTS):
        if path.suffix == ".npz":
            return "gemmascope", path
        raise SafelabError(
            f"{path} is not an SAE weights file: give a folder holding one of {KNOWN}"
        )
    if (folder / SAELENS_WEIGHTS).is_file():
        return "saelens", folder
    if (folder / SPARSIFY_WEIGHTS).is_file() and (folder / "cfg.json").is_file():
        return "sparsify", folder
    if (folder / GEMMASCOPE_WEIGHTS).is_file():
        return "gemmascope", folder / GEMMASCOPE_WEIGHTS
    inner = sorted(p.parent.name for p in folder.glob(f"*/{SPARSIFY_WEIGHTS}"))
    inner += sorted(p.parent.name for p in folder.glob(f"*/{SAELENS_WEIGHTS}"))
    if inner:
        raise SafelabError(
            f"{folder} holds several SAEs ({', '.join(inner[:6])}): give one of those folders"
        )
    raise SafelabError(f"{folder} holds no SAE format safelab knows: expected {KNOWN}")


def load_any(path: Path, *, site: str | None = None) -> SparseAutoencoder:
    """Load an SAE of any known format (see :func:`safelab.sae.sae.load_sae`)."""
    fmt, where = detect_format(path.expanduser())
    if fmt == "saelens":
        return load_saelens(where, site=site)
    if fmt == "sparsify":
        return load_sparsify(where, site=site)
    return load_gemmascope(where, site=site)


# -- SAELens -------------------------------------------------------------------------------------
def saelens_cfg(cfg: SAEConfig) -> dict[str, Any]:
    """``cfg.json`` for SAELens (v6 keys; ``hook_name`` also at top level for older readers)."""
    layer = _layer_of(cfg.site)
    out: dict[str, Any] = {
        "architecture": _ARCH_TO_SAELENS[cfg.architecture],
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "model_name": cfg.model,
            "hook_name": cfg.site,
            "hook_layer": layer,
            "prepend_bos": True,
        },
        "model_name": cfg.model,
        "hook_name": cfg.site,
        "hook_layer": layer,
        "safelab": {
            "site": cfg.site,
            "model": cfg.model,
            "architecture": cfg.architecture,
            "k": cfg.k,
            "train": cfg.train,
            "metrics": cfg.metrics,
        },
    }
    if cfg.k is not None:
        out["k"] = cfg.k
    return out


def save_saelens(sae: SparseAutoencoder, folder: Path) -> Path:
    """Write ``cfg.json`` + ``sae_weights.safetensors`` (each atomically); returns ``folder``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg_json = json.dumps(saelens_cfg(sae.cfg), indent=2, sort_keys=True)
    tensors = {k: v.detach().contiguous().cpu().float() for k, v in sae.tensors().items()}
    if sae.cfg.architecture != "jumprelu":
        tensors.pop("threshold")
    weights = folder / SAELENS_WEIGHTS
    tmp = tmp_path_beside(weights)
    save_file(tensors, str(tmp), metadata={"safelab_cfg": cfg_json})
    os.replace(tmp, weights)
    atomic_write_text(folder / "cfg.json", cfg_json + "\n")
    return folder


def load_saelens(folder: Path, *, site: str | None = None) -> SparseAutoencoder:
    """Read a SAELens folder (safelab's own or SAELens's)."""
    raw = _read_cfg(folder)
    ours = raw.get("safelab") or {}
    meta = raw.get("metadata") or {}
    arch_name = str(raw.get("architecture") or "standard")
    if "architecture" in ours:
        arch = str(ours["architecture"])
    elif arch_name in _ARCH_FROM_SAELENS:
        arch = _ARCH_FROM_SAELENS[arch_name]
    else:
        raise SafelabError(
            f"{folder}: SAELens architecture {arch_name!r} is not supported: "
            f"safelab reads {', '.join(_ARCH_FROM_SAELENS)}"
        )
    norm = raw.get("normalize_activations") or "none"
    if norm != "none":
        raise SafelabError(
            f"{folder}: normalize_activations={norm!r} is not supported: use an SAE trained "
            "on raw activations (normalize_activations='none')"
        )
    k = ours.get("k", raw.get("k", (raw.get("activation_fn_kwargs") or {}).get("k")))
    hook = ours.get("site") or site or meta.get("hook_name") or raw.get("hook_name")
    tensors = _read_safetensors(folder / SAELENS_WEIGHTS)
    d_in, d_sae = _dims(tensors, "W_dec", folder, transposed=False)
    if raw.get("apply_b_dec_to_input"):
        tensors["b_enc"] = tensors["b_enc"] - tensors["b_dec"] @ tensors["W_enc"]
    cfg = SAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        site=_site(hook, folder),
        architecture=arch,
        k=int(k) if k is not None else None,
        model=str(ours.get("model") or meta.get("model_name") or raw.get("model_name") or ""),
        dtype=str(raw.get("dtype") or "float32"),
        source_format="saelens",
        train=dict(ours.get("train") or {}),
        metrics=dict(ours.get("metrics") or {}),
    )
    return SparseAutoencoder.from_tensors(cfg, tensors)


# -- sparsify ------------------------------------------------------------------------------------
def load_sparsify(folder: Path, *, site: str | None = None) -> SparseAutoencoder:
    """Read an EleutherAI sparsify folder (one hookpoint: ``cfg.json`` + ``sae.safetensors``)."""
    raw = _read_cfg(folder)
    activation = raw.get("activation", "topk")
    if activation != "topk":
        raise SafelabError(
            f"{folder}: sparsify activation {activation!r} is not supported: only topk"
        )
    if raw.get("transcode") or raw.get("skip_connection"):
        raise SafelabError(
            f"{folder} is a sparsify transcoder / skip-connection SAE: safelab reads plain SAEs only"
        )
    t = _read_safetensors(folder / SPARSIFY_WEIGHTS)
    for name in ("encoder.weight", "encoder.bias", "W_dec", "b_dec"):
        if name not in t:
            raise SafelabError(f"{folder / SPARSIFY_WEIGHTS} lacks {name}: not a sparsify SAE")
    d_in, d_sae = _dims(t, "W_dec", folder, transposed=False)
    w_enc = t["encoder.weight"].float().T.contiguous()  # [d_sae, d_in] -> [d_in, d_sae]
    # sparsify encodes (x - b_dec); fold that into the encoder bias.
    b_enc = t["encoder.bias"].float() - t["b_dec"].float() @ w_enc
    cfg = SAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        site=_site(site or _sparsify_site(folder.name), folder),
        architecture="topk",
        k=int(raw.get("k", 32)),
        model=str(raw.get("model", "")),
        source_format="sparsify",
    )
    return SparseAutoencoder.from_tensors(
        cfg, {"W_enc": w_enc, "b_enc": b_enc, "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    )


def save_sparsify(sae: SparseAutoencoder, folder: Path) -> Path:
    """Write a TopK SAE as a sparsify folder (used to test the reader against a known layout)."""
    from safetensors.torch import save_file

    if sae.cfg.architecture != "topk":
        raise SafelabError("only a topk SAE can be written in sparsify's format")
    folder.mkdir(parents=True, exist_ok=True)
    w_enc = sae.W_enc.detach().float()
    b_dec = sae.b_dec.detach().float()
    tensors = {
        "encoder.weight": w_enc.T.contiguous(),
        "encoder.bias": (sae.b_enc.detach().float() + b_dec @ w_enc).contiguous(),
        "W_dec": sae.W_dec.detach().float().contiguous(),
        "b_dec": b_dec.contiguous(),
    }
    save_file(tensors, str(folder / SPARSIFY_WEIGHTS))
    cfg = {
        "activation": "topk",
        "expansion_factor": sae.cfg.d_sae // sae.cfg.d_in,
        "normalize_decoder": True,
        "num_latents": sae.cfg.d_sae,
        "k": sae.cfg.k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": sae.cfg.d_in,
    }
    atomic_write_text(folder / "cfg.json", json.dumps(cfg, indent=2) + "\n")
    return folder


# -- Gemma Scope ---------------------------------------------------------------------------------
def load_gemmascope(npz: Path, *, site: str | None = None) -> SparseAutoencoder:
    """Read a Gemma Scope ``params.npz`` (JumpReLU; the site comes from a ``layer_N`` folder)."""
    import numpy as np

    try:
        with np.load(npz, allow_pickle=False) as f:
            t = {k: torch.from_numpy(np.asarray(f[k], dtype=np.float32)) for k in f.files}
    except Exception as e:
        raise SafelabError(f"{npz} is not a readable .npz file ({str(e)[:80]})") from None
    for name in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"):
        if name not in t:
            raise SafelabError(f"{npz} lacks {name}: not a Gemma Scope params.npz")
    d_in, d_sae = _dims(t, "W_dec", npz, transposed=False)
    m = re.search(r"layer_(\d+)", str(npz))
    guess = f"blocks.{m.group(1)}.resid_post" if m else None
    cfg = SAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        site=_site(site or guess, npz),
        architecture="jumprelu",
        model="",
        source_format="gemmascope",
    )
    return SparseAutoencoder.from_tensors(cfg, t)


def save_gemmascope(sae: SparseAutoencoder, npz: Path) -> Path:
    """Write ``params.npz`` as Gemma Scope does (used to test the reader)."""
    import numpy as np

    npz.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: v.detach().float().numpy() for k, v in sae.tensors().items()}
    with npz.open("wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    return npz


# -- helpers -------------------------------------------------------------------------------------
def _read_cfg(folder: Path) -> dict[str, Any]:
    f = folder / "cfg.json"
    if not f.is_file():
        raise SafelabError(f"{folder} has no cfg.json: expected one of {KNOWN}")
    try:
        raw = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise SafelabError(f"{f} is not valid JSON ({e}): re-create the SAE") from None
    if not isinstance(raw, dict):
        raise SafelabError(f"{f} is not a JSON object: re-create the SAE")
    return raw


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(path)))
    except Exception as e:
        raise SafelabError(
            f"{path} is not a valid safetensors file ({str(e).splitlines()[0][:80]})"
        ) from None


def _dims(t: dict[str, Tensor], name: str, where: Path, *, transposed: bool) -> tuple[int, int]:
    w = t.get(name)
    if w is None or w.ndim != 2:
        raise SafelabError(f"{where}: {name} is missing or not a matrix")
    d_sae, d_in = (w.shape[1], w.shape[0]) if transposed else (w.shape[0], w.shape[1])
    return int(d_in), int(d_sae)


def _site(hook: Any, where: Path) -> str:
    from safelab.models.sites import Site

    if not hook:
        raise SafelabError(
            f"{where} does not say which site it reads: pass the site (e.g. blocks.15.resid_post)"
        )
    name = re.sub(r"\.hook_", ".", str(hook))
    name = {"hook_embed": "blocks.0.resid_pre", "ln_final.hook_normalized": "ln_final"}.get(
        name, name
    )
    return str(Site.parse(name))


def _sparsify_site(name: str) -> str | None:
    m = re.fullmatch(r"(?:model\.)?layers\.(\d+)(\.mlp)?", name)
    if m is None:
        return None
    return f"blocks.{m.group(1)}.{'mlp_out' if m.group(2) else 'resid_post'}"


def _layer_of(site: str) -> int | None:
    m = re.match(r"blocks\.(\d+)\.", site)
    return int(m.group(1)) if m else None
