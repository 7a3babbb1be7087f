"""Cached activations for contrast data: capture once per (model, inputs, read position, sites).

One forward pass reads every requested site (all 30 ``resid_post`` by default) at the read
position and writes one row per example into an :class:`~safelab.interp.store.ActivationStore`
under ``<cache>/<key>``; later runs that only change the probe (method, split, site) read the
store and never re-capture. ``mean`` positions are averaged per example before writing, so a
store holds ``n_examples`` rows whatever the position. Interrupted captures resume.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from safelab.errors import SafelabError
from safelab.interp.contrast import ContrastSet
from safelab.interp.store import MANIFEST, ActivationStore, StoreManifest
from safelab.models.capture import Activations, input_fingerprint, iter_capture

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel

DEFAULT_SITES = "blocks.*.resid_post"


@dataclass
class CachedActs:
    """Per-site ``[n_examples, d_model]`` activations in example order."""

    acts: dict[str, Tensor]
    store: Path
    cached: bool
    """True when nothing had to be captured."""
    capture_s: float
    """Seconds spent capturing (0 when cached)."""

    @property
    def sites(self) -> list[str]:
        return list(self.acts)


def default_cache_root() -> Path:
    from safelab.models.loading import cache_dir

    return cache_dir() / "activations"


def cache_key(model_name: str, fingerprint: str, position: str, sites: list[str]) -> str:
    blob = json.dumps([model_name, fingerprint, position, sites])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cached_activations(
    model: WhiteBoxModel,
    data: ContrastSet,
    sites: str | list[str] = DEFAULT_SITES,
    *,
    cache_root: str | Path | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> CachedActs:
    """Activations of ``data`` at ``sites``, from the cache or captured into it."""
    encoded = data.encode(model)
    resolved = [str(s) for s in model.resolve_sites(sites)]
    position = data.capture_position()
    pos_label = "mean" if data.position == "mean" else str(position)
    fingerprint = input_fingerprint(encoded)
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    path = root / cache_key(model.name, fingerprint, pos_label, resolved)
    wanted = StoreManifest(
        model=model.name,
        sites=resolved,
        position=pos_label,
        d_model=model.d_model,
        dtype="float32",
        n_inputs=len(encoded),
        fingerprint=fingerprint,
        meta={"data": data.source, "name": data.name, "data_hash": data.data_hash},
    )
    if (path / MANIFEST).is_file():
        store = ActivationStore(path)
        if store.manifest.fingerprint != fingerprint or store.manifest.sites != resolved:
            raise SafelabError(f"activation cache {path} does not match its key: delete it")
        store.remove_orphans()
    else:
        store = ActivationStore.create(path, wanted)
    start = store.manifest.inputs_done
    t0 = time.perf_counter()
    if not store.manifest.complete:
        for done, acts in iter_capture(
            model,
            encoded,
            model.resolve_sites(resolved),
            position,
            batch_size=batch_size,
            start=start,
            progress=progress,
        ):
            if data.position == "mean":
                acts = mean_per_sample(acts)
            store.append(acts, done, shard_rows=4096)
        store.flush()
    seconds = time.perf_counter() - t0 if start < len(encoded) else 0.0
    loaded = store.load(resolved)
    if len(loaded) != len(encoded) or not torch.equal(
        loaded.sample, torch.arange(len(encoded), dtype=loaded.sample.dtype)
    ):
        raise SafelabError(f"activation cache {path} is incomplete or inconsistent: delete it")
    return CachedActs(
        {s: loaded.acts[s].float() for s in resolved}, path, start >= len(encoded), seconds
    )


def mean_per_sample(acts: Activations) -> Activations:
    """Average the rows of each input: one row per input, position -1."""
    samples, inverse = torch.unique(acts.sample, return_inverse=True)
    counts = torch.bincount(inverse, minlength=len(samples)).unsqueeze(1).float()
    out = {}
    for s, v in acts.acts.items():
        total = torch.zeros(len(samples), v.shape[1], dtype=torch.float32)
        total.index_add_(0, inverse, v.float())
        out[s] = total / counts
    return Activations(
        acts=out,
        sample=samples,
        position=torch.full((len(samples),), -1, dtype=torch.long),
        token=torch.full((len(samples),), -1, dtype=torch.long),
    )
