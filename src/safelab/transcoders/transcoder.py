"""A per-layer transcoder (MLP input -> sparse features -> MLP output) and a set of them.

``a = JumpReLU(x @ W_enc + b_enc)``, ``y_hat = a @ W_dec + b_dec (+ x @ W_skip)`` where ``x`` is
what block L's MLP reads (``blocks.L.mlp_in``: ``resid_mid`` after its norm) and ``y`` what it
writes (``blocks.L.mlp_out``). Shapes follow SAELens (``W_enc [d_in, d_sae]``, ``W_dec [d_sae,
d_out]``, ``W_skip [d_in, d_out]``).

On disk a set is circuit-tracer's transcoder-set layout, which ``circuit_tracer``'s
``load_transcoder_set`` / ``load_relu_transcoder`` read as is::

    transcoders/
      config.yaml              model_kind: transcoder_set, feature_input_hook: mlp.hook_in,
                               feature_output_hook: mlp.hook_out, transcoders: [layer_0..]
      layer_0.safetensors      W_enc [d_sae, d_in], W_dec [d_sae, d_out], b_enc, b_dec,
                               activation_function.threshold, (W_skip [d_out, d_in])
      ...
      safelab.json             model, n_layers, d_model, sites, training config, metrics

(circuit-tracer stores ``W_enc`` as ``F.linear`` weights and ``W_skip`` transposed; safelab
transposes on save and load.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from safelab.errors import SafelabError
from safelab.files import atomic_write_text, tmp_path_beside

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel

CONFIG_YAML = "config.yaml"
META_JSON = "safelab.json"
IN_HOOK, OUT_HOOK = "mlp.hook_in", "mlp.hook_out"


def layer_file(layer: int) -> str:
    return f"layer_{layer}.safetensors"


@dataclass
class Transcoder:
    """One layer's JumpReLU transcoder, in the model's own units."""

    layer: int
    W_enc: Tensor
    b_enc: Tensor
    W_dec: Tensor
    b_dec: Tensor
    threshold: Tensor
    W_skip: Tensor | None = None

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    def pre_acts(self, x: Tensor) -> Tensor:
        return x.to(self.W_enc.dtype) @ self.W_enc + self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        """``[..., d_in] -> [..., d_sae]``: JumpReLU of the pre-activations."""
        pre = self.pre_acts(x)
        return torch.relu(pre) * (pre > self.threshold)

    def decode(self, a: Tensor, x: Tensor | None = None) -> Tensor:
        y = a.to(self.W_dec.dtype) @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            if x is None:
                raise SafelabError("this transcoder has a skip connection: decode needs its input")
            y = y + x.to(self.W_skip.dtype) @ self.W_skip
        return y

    def skip(self, x: Tensor) -> Tensor:
        """``x @ W_skip`` (zeros without a skip connection)."""
        if self.W_skip is None:
            return torch.zeros(*x.shape[:-1], self.W_dec.shape[1], dtype=x.dtype, device=x.device)
        return x.to(self.W_skip.dtype) @ self.W_skip

    def __call__(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x), x)

    def to_circuit_tracer(self) -> dict[str, Tensor]:
        t = {
            "W_enc": self.W_enc.T.contiguous().float(),
            "b_enc": self.b_enc.contiguous().float(),
            "W_dec": self.W_dec.contiguous().float(),
            "b_dec": self.b_dec.contiguous().float(),
            "activation_function.threshold": self.threshold.contiguous().float(),
        }
        if self.W_skip is not None:
            t["W_skip"] = self.W_skip.T.contiguous().float()
        return t

    @classmethod
    def from_circuit_tracer(cls, layer: int, t: dict[str, Tensor], where: Path) -> Transcoder:
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            if name not in t:
                raise SafelabError(f"{where} lacks {name}: not a transcoder weights file")
        w_enc = t["W_enc"].float().T.contiguous()
        d_sae = w_enc.shape[1]
        if t["W_dec"].shape[0] != d_sae or t["b_enc"].shape[0] != d_sae:
            raise SafelabError(
                f"{where}: W_enc has {d_sae} features but W_dec/b_enc have "
                f"{t['W_dec'].shape[0]}/{t['b_enc'].shape[0]}: the file is inconsistent"
            )
        thr = t.get("activation_function.threshold", t.get("threshold"))
        skip = t.get("W_skip")
        return cls(
            layer=layer,
            W_enc=w_enc,
            b_enc=t["b_enc"].float(),
            W_dec=t["W_dec"].float(),
            b_dec=t["b_dec"].float(),
            threshold=thr.float() if thr is not None else torch.zeros(d_sae),
            W_skip=skip.float().T.contiguous() if skip is not None else None,
        )


@dataclass
class TranscoderSetMeta:
    """What safelab records beside circuit-tracer's files (``safelab.json``)."""

    model: str
    n_layers: int
    d_model: int
    in_site: str = "blocks.{layer}.mlp_in"
    out_site: str = "blocks.{layer}.mlp_out"
    skip_first: bool = True
    train: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


class TranscoderSet:
    """One transcoder per layer, loaded lazily from a circuit-tracer transcoder-set folder."""

    def __init__(self, path: str | Path, meta: TranscoderSetMeta, files: dict[int, Path]) -> None:
        self.path = Path(path)
        self.meta = meta
        self.files = files
        self._cache: dict[int, Transcoder] = {}

    def __repr__(self) -> str:
        return (
            f"TranscoderSet({str(self.path)!r}, model={self.meta.model!r}, "
            f"layers={len(self.files)}/{self.meta.n_layers})"
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, layer: int) -> Transcoder:
        if layer not in self._cache:
            if layer not in self.files:
                raise SafelabError(
                    f"{self.path} has no transcoder for layer {layer}: train it "
                    "(`safelab transcoders train`) or give a complete set"
                )
            self._cache[layer] = read_layer(self.files[layer], layer)
        return self._cache[layer]

    def __iter__(self) -> Iterator[Transcoder]:
        for layer in sorted(self.files):
            yield self[layer]

    @property
    def has_skip(self) -> bool:
        return self[min(self.files)].W_skip is not None

    def check_fits(self, model: WhiteBoxModel) -> None:
        """One line when the set does not cover every layer of ``model`` or is for another model."""
        m = self.meta
        if m.d_model != model.d_model or m.n_layers != model.n_layers:
            raise SafelabError(
                f"the transcoders at {self.path} were trained on {m.model} ({m.n_layers} layers, "
                f"d_model {m.d_model}) but {model.name} has {model.n_layers} layers and d_model "
                f"{model.d_model}: use transcoders trained on this model"
            )
        # An organism (``base+adapter``) of the set's model is accepted: its error nodes carry
        # what the fine-tune changed.
        if m.model and model.name != m.model and not model.name.startswith(m.model + "+"):
            raise SafelabError(
                f"the transcoders at {self.path} were trained on {m.model}, not {model.name}: "
                f"use transcoders trained on {model.name} (or trace {m.model})"
            )
        missing = [layer for layer in range(model.n_layers) if layer not in self.files]
        if missing:
            shown = ", ".join(map(str, missing[:8])) + ("..." if len(missing) > 8 else "")
            raise SafelabError(
                f"the transcoder set at {self.path} does not cover every layer of {model.name}: "
                f"layers {shown} are missing ({len(missing)} of {model.n_layers}); finish "
                "training them (`safelab transcoders train` resumes)"
            )
        for layer in (0, model.n_layers - 1):
            tc = self[layer]
            if tc.d_in != model.d_model or tc.W_dec.shape[1] != model.d_model:
                raise SafelabError(
                    f"{self.files[layer]} reads width {tc.d_in} but {model.name} has d_model "
                    f"{model.d_model}: use transcoders trained on this model"
                )


def read_layer(path: Path, layer: int) -> Transcoder:
    from safetensors.torch import load_file

    try:
        t = dict(load_file(str(path)))
    except Exception as e:
        raise SafelabError(
            f"{path} is not a valid safetensors file ({str(e).splitlines()[0][:80]})"
        ) from None
    return Transcoder.from_circuit_tracer(layer, t, path)


def save_layer(tc: Transcoder, folder: Path) -> Path:
    """Write ``layer_L.safetensors`` atomically (circuit-tracer's keys and orientation)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / layer_file(tc.layer)
    tmp = tmp_path_beside(path)
    save_file(tc.to_circuit_tracer(), str(tmp))
    os.replace(tmp, path)
    return path


def write_set_files(folder: Path, meta: TranscoderSetMeta, layers: list[int]) -> None:
    """``config.yaml`` (circuit-tracer) and ``safelab.json`` for the layers written so far."""
    import yaml

    cfg = {
        "model_kind": "transcoder_set",
        "model_name": meta.model,
        "scan": f"safelab/{Path(folder).name}",
        "feature_input_hook": IN_HOOK,
        "feature_output_hook": OUT_HOOK,
        "transcoders": [layer_file(layer) for layer in sorted(layers)],
    }
    atomic_write_text(folder / CONFIG_YAML, yaml.safe_dump(cfg, sort_keys=False))
    atomic_write_text(folder / META_JSON, json.dumps(asdict(meta), indent=2) + "\n")


def load_transcoders(path: str | Path) -> TranscoderSet:
    """Open a transcoder-set folder (safelab's, or any circuit-tracer set with a ``safelab.json``).

    Raises:
        SafelabError: the folder is missing, or has neither ``safelab.json`` nor layer files.
    """
    import yaml

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise SafelabError(
            f"no transcoder set at {folder}: give a folder written by `safelab transcoders train`"
        )
    meta_file = folder / META_JSON
    if not meta_file.is_file():
        raise SafelabError(
            f"{folder} has no {META_JSON}: not a safelab transcoder set (train one with "
            "`safelab transcoders train`)"
        )
    try:
        meta = TranscoderSetMeta(**json.loads(meta_file.read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise SafelabError(f"{meta_file} is corrupt ({e}): train the set again") from None
    files: dict[int, Path] = {}
    cfg_file = folder / CONFIG_YAML
    if cfg_file.is_file():
        cfg = yaml.safe_load(cfg_file.read_text()) or {}
        for name in cfg.get("transcoders") or []:
            p = folder / str(name)
            if p.is_file() and p.stem.startswith("layer_"):
                files[int(p.stem.split("_")[1])] = p
    for p in folder.glob("layer_*.safetensors"):
        files.setdefault(int(p.stem.split("_")[1]), p)
    return TranscoderSet(folder, meta, files)
