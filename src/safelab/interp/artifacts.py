"""The artifact format shared by probes, steering vectors and (later) SAEs.

An artifact is a folder holding ``cfg.json`` (a config dataclass, human-readable) and one
``<kind>.safetensors`` file whose header metadata carries the same config, so the
``.safetensors`` file alone is enough to load it. Nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, TypeVar

from torch import Tensor

from safelab.errors import SafelabError
from safelab.files import atomic_write_text, tmp_path_beside

CFG_KEY = "safelab_cfg"

C = TypeVar("C")


def save_artifact(folder: str | Path, kind: str, cfg: Any, tensors: dict[str, Tensor]) -> Path:
    """Write ``cfg.json`` and ``<kind>.safetensors`` into ``folder`` (each atomically)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg_dict = {"kind": kind, **dataclasses.asdict(cfg)}
    cfg_json = json.dumps(cfg_dict, indent=2, sort_keys=True)
    weights = folder / f"{kind}.safetensors"
    tmp = tmp_path_beside(weights)
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
        str(tmp),
        metadata={CFG_KEY: cfg_json},
    )
    os.replace(tmp, weights)
    atomic_write_text(folder / "cfg.json", cfg_json + "\n")
    return weights


def load_artifact(path: str | Path, kind: str, cfg_type: type[C]) -> tuple[C, dict[str, Tensor]]:
    """Load an artifact from its folder or its ``.safetensors`` file.

    Raises:
        SafelabError: the path is missing, not a safetensors file, or holds another kind.
    """
    from safetensors import safe_open

    path = Path(path).expanduser()
    weights = path / f"{kind}.safetensors" if path.is_dir() else path
    if not weights.is_file():
        raise SafelabError(
            f"{kind} not found at {path}: give a {kind} folder (cfg.json + {kind}.safetensors) "
            "or its .safetensors file"
        )
    try:
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as e:
        raise SafelabError(
            f"{weights} is not a valid safetensors file ({str(e).splitlines()[0][:80]}): "
            f"re-create the {kind}"
        ) from None
    raw = meta.get(CFG_KEY)
    if raw is None and (weights.parent / "cfg.json").is_file():
        raw = (weights.parent / "cfg.json").read_text()
    if raw is None:
        raise SafelabError(f"{weights} has no safelab config: it was not written by safelab")
    cfg_dict = json.loads(raw)
    if cfg_dict.pop("kind", kind) != kind:
        raise SafelabError(f"{weights} is not a {kind} (it holds a different kind of artifact)")
    names = {f.name for f in dataclasses.fields(cfg_type)}  # type: ignore[arg-type]
    return cfg_type(**{k: v for k, v in cfg_dict.items() if k in names}), tensors
