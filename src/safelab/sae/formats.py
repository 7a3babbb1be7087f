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
Gemma Scope 2   ``params.safetensors`` (+ ``config.json``)  ``w_enc [d_in, d_sae]``, ``w_dec``,
                                                           ``b_enc``, ``b_dec``, ``threshold``
==============  =========================================  ==========================================

SAELens variants read as SAELens computes them: ``apply_b_dec_to_input`` is folded into ``b_enc``;
``rescale_acts_by_decoder_norm`` (the TopK trainer's default) is folded into the weights (encoder
columns and ``b_enc`` times the decoder row norms, decoder rows divided by them), which leaves
every latent and the reconstruction unchanged; a BatchTopK training checkpoint (``batchtopk`` with
its ``topk_threshold``) is the JumpReLU SAE SAELens exports it as (threshold ``topk_threshold``
for every latent).

safelab saves SAELens's layout, with the TransformerLens hook name as ``metadata.hook_name``
(``blocks.15.hook_resid_post``, which ``HookedSAETransformer.add_sae`` attaches to), the SAELens
version it follows as ``metadata.sae_lens_version`` (so SAELens reads it as a 6.x config), and
safelab's own site name and provenance (training config, metrics) under a ``safelab`` key that
SAELens ignores.
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
GEMMASCOPE2_WEIGHTS = "params.safetensors"
SAELENS_VERSION = "6.54.12"
"""The SAELens release whose ``cfg.json`` safelab writes (and its fixtures were made with)."""
KNOWN = (
    f"SAELens (cfg.json + {SAELENS_WEIGHTS}), sparsify (cfg.json + {SPARSIFY_WEIGHTS}), "
    f"Gemma Scope ({GEMMASCOPE_WEIGHTS}), Gemma Scope 2 ({GEMMASCOPE2_WEIGHTS})"
)
_WEIGHT_FILES = (SAELENS_WEIGHTS, SPARSIFY_WEIGHTS, GEMMASCOPE_WEIGHTS, GEMMASCOPE2_WEIGHTS)
# safelab site kind -> TransformerLens hook (SAELens's metadata.hook_name).
_TL_HOOKS = {
    "resid_pre": "hook_resid_pre",
    "resid_mid": "hook_resid_mid",
    "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out",
}
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
    if path.is_file() and path.name not in _WEIGHT_FILES:
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
    if (folder / GEMMASCOPE2_WEIGHTS).is_file():
        return "gemmascope2", folder
    inner = sorted(
        {p.parent for name in _WEIGHT_FILES for p in folder.glob(f"*/{name}")}
        | {p.parent for p in folder.glob(f"*/*/{GEMMASCOPE2_WEIGHTS}")}
    )
    if len(inner) == 1:  # a folder around exactly one SAE (sparsify's layers.N, Gemma Scope 2)
        return detect_format(inner[0])
    if inner:
        names = ", ".join(str(p.relative_to(folder)) for p in inner[:6])
        raise SafelabError(f"{folder} holds {len(inner)} SAEs ({names}): give one of those folders")
    raise SafelabError(f"{folder} holds no SAE format safelab knows: expected {KNOWN}")


def load_any(path: Path, *, site: str | None = None) -> SparseAutoencoder:
    """Load an SAE of any known format (see :func:`safelab.sae.formats.load_sae`)."""
    fmt, where = detect_format(path.expanduser())
    if fmt == "saelens":
        return load_saelens(where, site=site)
    if fmt == "sparsify":
        return load_sparsify(where, site=site)
    if fmt == "gemmascope2":
        return load_gemmascope2(where, site=site)
    return load_gemmascope(where, site=site)


# -- SAELens -------------------------------------------------------------------------------------
def saelens_cfg(cfg: SAEConfig) -> dict[str, Any]:
    """``cfg.json`` for SAELens (v6 keys; ``hook_name`` also at top level for older readers)."""
    layer = _layer_of(cfg.site)
    hook = tl_hook_name(cfg.site)
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
            "sae_lens_version": SAELENS_VERSION,
            "model_name": cfg.model,
            "hook_name": hook,
            "hook_layer": layer,
            "prepend_bos": True,
        },
        "sae_lens_version": SAELENS_VERSION,
        "model_name": cfg.model,
        "hook_name": hook,
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
    reshape = raw.get("reshape_activations") or "none"
    if reshape != "none":
        raise SafelabError(
            f"{folder}: reshape_activations={reshape!r} (attention-head SAEs) is not supported: "
            "use an SAE on a residual, MLP or attention output site"
        )
    k = ours.get("k", raw.get("k", (raw.get("activation_fn_kwargs") or {}).get("k")))
    hook = ours.get("site") or site or meta.get("hook_name") or raw.get("hook_name")
    tensors = _read_safetensors(folder / SAELENS_WEIGHTS)
    d_in, d_sae = _dims(tensors, "W_dec", folder, transposed=False)
    tensors = {name: t.float() for name, t in tensors.items()}
    if raw.get("apply_b_dec_to_input"):
        tensors["b_enc"] = tensors["b_enc"] - tensors["b_dec"] @ tensors["W_enc"]
    if arch_name == "batchtopk" and "architecture" not in ours:
        # A training checkpoint: SAELens runs it as a JumpReLU SAE with topk_threshold everywhere.
        if "topk_threshold" not in tensors:
            raise SafelabError(
                f"{folder}: a SAELens batchtopk SAE without its topk_threshold: export it with "
                "SAELens (sae.save_inference_model(path)) and load that folder"
            )
        tensors["threshold"] = torch.full((d_sae,), float(tensors.pop("topk_threshold")))
        arch, k = "jumprelu", None
    if raw.get("rescale_acts_by_decoder_norm"):
        if arch not in ("topk", "jumprelu"):
            raise SafelabError(
                f"{folder}: rescale_acts_by_decoder_norm with architecture {arch_name!r} "
                "is not supported"
            )
        _fold_decoder_norm(tensors)
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


def _fold_decoder_norm(t: dict[str, Tensor]) -> None:
    """SAELens's ``rescale_acts_by_decoder_norm`` folded into the weights, in place.

    SAELens encodes ``act((x W_enc + b_enc) * n)`` and decodes ``(z / n) W_dec + b_dec`` with
    ``n = ||W_dec rows||``; scaling the encoder columns and ``b_enc`` by ``n`` and dividing the
    decoder rows by it gives the same latents ``z`` and the same reconstruction.
    """
    n = t["W_dec"].norm(dim=-1).clamp(min=1e-8)
    t["W_enc"] = t["W_enc"] * n
    t["b_enc"] = t["b_enc"] * n
    t["W_dec"] = t["W_dec"] / n[:, None]


def tl_hook_name(site: str) -> str:
    """The TransformerLens hook of a safelab site (``blocks.3.resid_post`` ->
    ``blocks.3.hook_resid_post``), the name SAELens's ``metadata.hook_name`` holds."""
    if site == "ln_final":
        return "ln_final.hook_normalized"
    m = re.fullmatch(r"blocks\.(\d+)\.(\w+)", site)
    if m is None or m.group(2) not in _TL_HOOKS:
        return site
    return f"blocks.{m.group(1)}.{_TL_HOOKS[m.group(2)]}"


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


def load_gemmascope2(folder: Path, *, site: str | None = None) -> SparseAutoencoder:
    """Read a Gemma Scope 2 folder: ``params.safetensors`` (lower-case ``w_enc``/``w_dec``) and
    its ``config.json``; the site comes from the folder (``resid_post/layer_N_...``)."""
    config: dict[str, Any] = {}
    if (folder / "config.json").is_file():
        try:
            config = json.loads((folder / "config.json").read_text())
        except json.JSONDecodeError as e:
            raise SafelabError(f"{folder / 'config.json'} is not valid JSON ({e})") from None
    arch = config.get("architecture", "jump_relu")
    if arch != "jump_relu" or "transcoder" in str(folder) or "clt" in folder.name:
        raise SafelabError(
            f"{folder}: Gemma Scope 2 {arch!r} / transcoder folders are not SAEs safelab reads: "
            "give a resid_post, mlp_out or attn_out SAE folder"
        )
    raw = _read_safetensors(folder / GEMMASCOPE2_WEIGHTS)
    lower = {k.lower(): v.float() for k, v in raw.items()}
    t = {"W_enc": lower.get("w_enc"), "W_dec": lower.get("w_dec")}
    t |= {k: lower.get(k) for k in ("b_enc", "b_dec", "threshold")}
    missing = [k for k, v in t.items() if v is None]
    if missing:
        raise SafelabError(
            f"{folder / GEMMASCOPE2_WEIGHTS} lacks {', '.join(missing)}: not a Gemma Scope 2 SAE"
        )
    tensors = {k: v for k, v in t.items() if v is not None}
    d_in, d_sae = _dims(tensors, "W_dec", folder, transposed=False)
    m = re.search(r"layer_(\d+)", folder.name)
    kind = next((k for k in ("resid_post", "mlp_out", "attn_out") if k in str(folder)), None)
    guess = f"blocks.{m.group(1)}.{kind}" if m and kind else None
    cfg = SAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        site=_site(site or guess, folder),
        architecture="jumprelu",
        model=str(config.get("model_name") or ""),
        source_format="gemmascope2",
    )
    return SparseAutoencoder.from_tensors(cfg, tensors)


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
    name = {"hook_embed": "blocks.0.resid_pre", "ln_final.hook_normalized": "ln_final"}.get(
        str(hook), re.sub(r"\.hook_", ".", str(hook))
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


# -- the entry points (safelab.sae.sae holds the model; these read and write it) ---------


def load_sae(path: str | Path, *, site: str | None = None) -> SparseAutoencoder:
    """Load an SAE from a SAELens, sparsify or Gemma Scope folder (or its weights file).

    Args:
        path: the folder, or the ``sae_weights.safetensors`` / ``sae.safetensors`` /
            ``params.npz`` inside it.
        site: the safelab site, for formats that do not record one (Gemma Scope).

    Raises:
        SafelabError: the path is missing or holds no SAE format safelab knows.
    """
    return load_any(Path(path), site=site)


def save_sae(sae: SparseAutoencoder, path: str | Path) -> Path:
    """Save in SAELens's layout: ``cfg.json`` + ``sae_weights.safetensors``; returns the folder."""
    return save_saelens(sae, Path(path))
