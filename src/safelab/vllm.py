"""Black-box evaluation of organisms on a GPU: Inspect's ``vllm/`` provider, one adapter each.

An organism folder is a peft LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``)
with safelab's ``cfg.json`` naming its base. Inspect's vLLM provider serves LoRA adapters on one
server as ``vllm/<base>:<adapter>``, so every organism of a base shares one vLLM server (and one
copy of the base weights on the GPU); :func:`vllm_model` writes that name. White-box work (probes,
SAEs, capture) stays on the ``safelab/`` provider and ``WhiteBoxModel``, on GPU workers under Ray
(see docs/distributed.md).
"""

from __future__ import annotations

from pathlib import Path

from safelab.errors import SafelabError


def vllm_base(base: str) -> str:
    """What vLLM loads for a safelab base spec: a hub id or folder as it is; ``default`` as the
    dequantised safetensors folder of the embedded GGUF file (vLLM reads Hugging Face folders)."""
    from safelab.models.loading import default_gguf_path, dequantised_folder, resolve_source

    source = resolve_source(base)
    if source.kind == "default":
        return str(dequantised_folder(default_gguf_path()))
    if source.kind == "gguf":
        return str(dequantised_folder(Path(source.location)))
    return source.location


def vllm_model(organism: str | Path, base: str | None = None) -> str:
    """``vllm/<base>:<absolute adapter folder>`` for ``inspect eval --model``.

    Args:
        organism: an organism folder (``safelab organism train`` writes them).
        base: the base to serve (default: the base recorded in the organism's ``cfg.json``).
    """
    from safelab.organisms.train import ModelOrganism

    org = ModelOrganism.load(organism)
    spec = base or org.card.base
    if "+organism:" in spec:
        raise SafelabError(f"base {spec!r} already carries an organism: give the plain base model")
    return f"vllm/{vllm_base(spec)}:{org.path.resolve()}"
