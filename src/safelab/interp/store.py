"""An on-disk activation store: safetensors shards plus a JSON manifest.

::

    store/
      manifest.json            model, sites, position, dtype, inputs fingerprint, shard list
      shard-00000.safetensors  {site: [rows, d_model], "sample": [rows], "position": [rows], "token": [rows]}
      ...

Capture streams into it: rows are buffered up to ``shard_rows`` and written as one shard
(temp file, then rename), then the manifest is rewritten (temp file, then rename). A shard
holds whole inputs only, and the manifest counts inputs done, so a crashed capture resumes
from the last committed shard without losing or repeating rows. Reading is shard by shard,
so memory stays bounded by one shard however large the store grows.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from safelab.errors import SafelabError
from safelab.files import atomic_write_text, tmp_path_beside
from safelab.models.capture import (
    Activations,
    Encoded,
    Input,
    Position,
    encode_inputs,
    input_fingerprint,
    iter_capture,
)

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel

MANIFEST = "manifest.json"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def write_shard(path: Path, parts: Sequence[Activations], sites: Sequence[str]) -> int:
    """Write buffered batches (already in the store dtype) as one shard file; returns its rows.

    The one writer of shard files: the single-process store and the distributed capture
    (:mod:`safelab.interp.capture_ray`) both go through it, so their shards are the same bytes.
    """
    from safetensors.torch import save_file

    batch = Activations.concat(parts)
    tensors = {s: batch.acts[s].contiguous() for s in sites}
    tensors.update(sample=batch.sample, position=batch.position, token=batch.token)
    tmp = tmp_path_beside(path)
    save_file(tensors, str(tmp))
    os.replace(tmp, path)
    return len(batch)


def store_dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise SafelabError(f"unknown store dtype {name!r}: use {', '.join(_DTYPES)}")
    return _DTYPES[name]


@dataclass
class StoreManifest:
    model: str
    sites: list[str]
    position: str
    d_model: int
    dtype: str
    n_inputs: int
    fingerprint: str
    inputs_done: int = 0
    rows: int = 0
    shards: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    version: int = 1

    @property
    def complete(self) -> bool:
        return self.inputs_done >= self.n_inputs


class ActivationStore:
    """Read (and append to) a store folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest = self.path / MANIFEST
        if not manifest.is_file():
            raise SafelabError(
                f"no activation store at {self.path} (missing {MANIFEST}): capture one first"
            )
        try:
            self.manifest = StoreManifest(**json.loads(manifest.read_text()))
        except (json.JSONDecodeError, TypeError) as e:
            raise SafelabError(
                f"{manifest} is corrupt ({e}): delete the store and capture again"
            ) from None
        self._buffer: list[Activations] = []
        self._buffer_rows = 0

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"ActivationStore({str(self.path)!r}, rows={m.rows}, sites={m.sites}, "
            f"inputs={m.inputs_done}/{m.n_inputs})"
        )

    def __len__(self) -> int:
        return self.manifest.rows

    @property
    def sites(self) -> list[str]:
        return list(self.manifest.sites)

    @classmethod
    def create(cls, path: str | Path, manifest: StoreManifest) -> ActivationStore:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / MANIFEST, json.dumps(dataclasses.asdict(manifest), indent=2))
        return cls(path)

    # -- writing ---------------------------------------------------------------------------
    def append(self, acts: Activations, inputs_done: int, shard_rows: int) -> None:
        """Buffer a batch; write a shard once ``shard_rows`` rows are waiting."""
        # Cast on arrival: the buffer (the store's only memory cost) holds the store dtype.
        dtype = _DTYPES[self.manifest.dtype]
        acts.acts = {s: v.to(dtype) for s, v in acts.acts.items()}
        self._buffer.append(acts)
        self._buffer_rows += len(acts)
        self._pending_done = inputs_done
        if self._buffer_rows >= shard_rows:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows as one shard, then commit it in the manifest."""
        if not self._buffer:
            return
        name = shard_name(len(self.manifest.shards))
        rows = write_shard(self.path / name, self._buffer, self.manifest.sites)
        self.manifest.shards.append({"file": name, "rows": rows})
        self.manifest.rows += rows
        self.manifest.inputs_done = self._pending_done
        self.write_manifest()
        self._buffer, self._buffer_rows = [], 0

    def write_manifest(self) -> None:
        """Commit the manifest (temp file, then rename)."""
        atomic_write_text(
            self.path / MANIFEST, json.dumps(dataclasses.asdict(self.manifest), indent=2)
        )

    def remove_orphans(self) -> None:
        """Delete shard files a crash left behind that the manifest never committed."""
        committed = {s["file"] for s in self.manifest.shards}
        for f in self.path.glob("shard-*.safetensors"):
            if f.name not in committed:
                f.unlink()
        for f in self.path.glob(".*.tmp"):
            f.unlink()

    # -- reading ---------------------------------------------------------------------------
    def iter_shards(self, sites: Sequence[str] | None = None) -> Iterator[Activations]:
        """Each committed shard as :class:`Activations` (one shard in memory at a time)."""
        from safetensors import safe_open

        wanted = list(sites) if sites is not None else self.sites
        for s in wanted:
            if s not in self.manifest.sites:
                raise SafelabError(
                    f"site {s} is not in the store at {self.path}: it has {', '.join(self.sites)}"
                )
        for shard in self.manifest.shards:
            try:
                with safe_open(str(self.path / shard["file"]), framework="pt") as f:
                    yield Activations(
                        acts={s: f.get_tensor(s) for s in wanted},
                        sample=f.get_tensor("sample"),
                        position=f.get_tensor("position"),
                        token=f.get_tensor("token"),
                    )
            except SafelabError:
                raise
            except Exception as e:
                raise SafelabError(
                    f"{self.path / shard['file']} is not a readable safetensors shard ({str(e)[:80]}): "
                    "delete the store and capture again"
                ) from None

    def load(self, sites: Sequence[str] | None = None) -> Activations:
        """All rows in memory, ordered by (input, position)."""
        parts = list(self.iter_shards(sites))
        if not parts:
            raise SafelabError(f"the store at {self.path} has no rows yet")
        return Activations.concat(parts).sorted()

    def __getitem__(self, site: str) -> Tensor:
        return self.load([site])[site]


def check_store_args(path: str | Path, dtype: str = "float32") -> None:
    """One line for a store folder that is a file or a dtype safelab cannot store (before any
    model is loaded)."""
    store_dtype(dtype)
    where = Path(path)
    if where.exists() and not where.is_dir():
        raise SafelabError(f"--out {where} is a file: give a folder for the activation store")


def capture_to_store(
    model: WhiteBoxModel,
    inputs: Sequence[Input],
    sites: str | Sequence[str],
    path: str | Path,
    position: Position = "all",
    *,
    batch_size: int = 16,
    shard_rows: int = 65536,
    dtype: str = "float32",
    progress: bool = True,
    meta: dict[str, Any] | None = None,
) -> ActivationStore:
    """Capture into a store at ``path``, resuming if a matching store is already there.

    Raises:
        SafelabError: ``path`` holds a store made from other inputs, sites, position or model.
    """
    check_store_args(path, dtype)
    encoded, wanted = planned_manifest(model, inputs, sites, position, dtype, meta)
    store = open_store(path, wanted)
    if store.manifest.complete:
        return store
    for done, acts in iter_capture(
        model,
        encoded,
        model.resolve_sites(wanted.sites),
        position,
        batch_size=batch_size,
        start=store.manifest.inputs_done,
        progress=progress,
    ):
        store.append(acts, done, shard_rows)
    store.flush()
    return store


def open_store(
    path: str | Path, wanted: StoreManifest, *, keep_shards: bool = False
) -> ActivationStore:
    """The store at ``path`` if it was made for ``wanted`` (else a new one there).

    ``keep_shards`` leaves uncommitted shard files in place (the distributed capture's progress);
    otherwise a crash's leftovers are deleted.

    Raises:
        SafelabError: ``path`` holds a store made from other inputs, sites, position or model,
            or something that is not a store.
    """
    path = Path(path)
    if (path / MANIFEST).is_file():
        store = ActivationStore(path)
        have = store.manifest
        for key in ("model", "sites", "position", "dtype", "n_inputs", "fingerprint"):
            if getattr(have, key) != getattr(wanted, key):
                raise SafelabError(
                    f"{path} holds a store made with a different {key} ({getattr(have, key)!r}): "
                    "choose another output folder or delete it"
                )
        if not keep_shards:
            store.remove_orphans()
        return store
    if path.exists() and any(path.iterdir()):
        raise SafelabError(
            f"{path} exists and is not an activation store: choose an empty or new folder"
        )
    return ActivationStore.create(path, wanted)


def planned_manifest(
    model: WhiteBoxModel,
    inputs: Sequence[Input],
    sites: str | Sequence[str],
    position: Position,
    dtype: str,
    meta: dict[str, Any] | None = None,
) -> tuple[list[Encoded], StoreManifest]:
    """The encoded inputs and the manifest a store of them must have (before any row)."""
    store_dtype(dtype)
    encoded = encode_inputs(model, inputs)
    wanted = StoreManifest(
        model=model.name,
        sites=[str(s) for s in model.resolve_sites(sites)],
        position=str(position),
        d_model=model.d_model,
        dtype=dtype,
        n_inputs=len(encoded),
        fingerprint=input_fingerprint(encoded),
        meta=dict(meta or {}),
    )
    return encoded, wanted
