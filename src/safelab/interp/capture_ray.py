"""Distributed capture: a pool of Ray actors, each holding one model, writing into one store.

The single-process capture (:func:`safelab.interp.store.capture_to_store`) runs the inputs in
:func:`~safelab.models.inputs.processing_order`, ``batch_size`` at a time, and cuts a shard
whenever ``shard_rows`` rows are waiting. How many rows each batch yields is known from the
tokens alone, so the same cut can be planned before any forward pass: every shard is one work
item (its range of batches). Each actor loads the model itself (by name: nothing heavy is
shipped), runs exactly the batches of its items and writes each shard file with the store's own
writer (temp file, then rename); the driver then commits the manifest once, atomically. Same
batches, same model, same writer: the store equals the single-process one byte for byte (its
test checks it on a tiny model).

Resume: a shard file that exists is finished (it appears only by a rename), so a restarted
capture runs only the missing shards; the plan it was cut with is kept beside the store
(``.plan.json``) until the manifest is committed, and a restart with another plan is refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safelab.distributed import ONE_CPU, Resources, connect
from safelab.errors import SafelabError
from safelab.files import atomic_write_text
from safelab.interp.store import (
    ActivationStore,
    open_store,
    planned_manifest,
    shard_name,
    store_dtype,
    write_shard,
)
from safelab.models.inputs import Encoded, Input, Position, processing_order

PLAN = ".plan.json"


@dataclass(frozen=True)
class ShardItem:
    """Shard ``index``: inputs ``order[lo:hi]`` in processing order."""

    index: int
    lo: int
    hi: int


def rows_of(e: Encoded, position: Position) -> int:
    """Rows one input contributes at ``position`` (what the capture will select)."""
    if position == "all":
        return len(e.ids)
    if position == "response":
        if e.response is None:
            raise SafelabError(
                "position='response' needs chats whose last message is the assistant's"
            )
        return e.response[1] - e.response[0]
    return 1


def plan_shards(
    encoded: Sequence[Encoded], position: Position, batch_size: int, shard_rows: int
) -> list[ShardItem]:
    """The shards the single-process store would cut, as ranges of the processing order."""
    order = processing_order(encoded)
    items: list[ShardItem] = []
    lo, waiting = 0, 0
    for b in range(0, len(order), batch_size):
        hi = min(b + batch_size, len(order))
        waiting += sum(rows_of(encoded[i], position) for i in order[b:hi])
        if waiting >= shard_rows:
            items.append(ShardItem(len(items), lo, hi))
            lo, waiting = hi, 0
    if lo < len(order):
        items.append(ShardItem(len(items), lo, len(order)))
    return items


class ShardWriter:
    """One model in one process, writing the shards it is given (a Ray actor's body)."""

    def __init__(
        self,
        model: str,
        inputs: Sequence[Input],
        sites: Sequence[str],
        position: Position,
        path: str,
        batch_size: int,
        dtype: str,
        model_dtype: str = "float32",
    ) -> None:
        from safelab.models.inputs import encode_inputs
        from safelab.models.loading import load_model

        self.model = load_model(model, dtype=model_dtype)
        self.encoded = encode_inputs(self.model, inputs)
        self.sites = list(sites)
        self.position = position
        self.path = Path(path)
        self.batch_size = batch_size
        self.dtype = store_dtype(dtype)

    def write(self, item: ShardItem) -> tuple[int, int]:
        """Capture the item's batches and write its shard; ``(index, rows)``."""
        from safelab.models.capture import iter_capture

        parts = []
        resolved = self.model.resolve_sites(self.sites)
        for done, acts in iter_capture(
            self.model,
            self.encoded,
            resolved,
            self.position,
            batch_size=self.batch_size,
            start=item.lo,
        ):
            acts.acts = {s: v.to(self.dtype) for s, v in acts.acts.items()}
            parts.append(acts)
            if done >= item.hi:
                break
        rows = write_shard(self.path / shard_name(item.index), parts, self.sites)
        return item.index, rows


def capture_to_store_ray(
    model: str,
    inputs: Sequence[Input],
    sites: str | Sequence[str],
    path: str | Path,
    position: Position = "all",
    *,
    batch_size: int = 16,
    shard_rows: int = 65536,
    dtype: str = "float32",
    meta: dict[str, Any] | None = None,
    workers: int = 2,
    model_dtype: str = "float32",
    resources: Resources = ONE_CPU,
    ray: str = "local",
    progress: bool = True,
) -> ActivationStore:
    """:func:`~safelab.interp.store.capture_to_store` over ``workers`` Ray actors.

    Args:
        model: what each actor loads (a name for :func:`~safelab.models.loading.load_model`),
            in ``model_dtype``.
        resources: per actor (``num_gpus=1`` puts each model on its own GPU).
        ray: ``"local"`` or a cluster address (an initialised Ray is reused).
    """
    from safelab.models.loading import load_model

    # The driver reads the tokenizer and the shapes once to plan; the forward passes run only
    # in the actors.
    here = load_model(model, dtype=model_dtype)
    encoded, wanted = planned_manifest(here, inputs, sites, position, dtype, meta)
    resolved = wanted.sites
    del here
    store = open_store(path, wanted, keep_shards=True)
    if store.manifest.complete:
        return store
    if store.manifest.shards:
        raise SafelabError(
            f"{store.path} was partly captured by one process: resume it with capture_to_store "
            "(or delete it to capture on Ray)"
        )
    items = plan_shards(encoded, position, batch_size, shard_rows)
    plan = {"batch_size": batch_size, "shard_rows": shard_rows, "shards": len(items)}
    plan_file = store.path / PLAN
    if plan_file.is_file() and json.loads(plan_file.read_text()) != plan:
        raise SafelabError(
            f"{store.path} was started with another batch size or shard size "
            f"({plan_file.read_text().strip()}): use the same, or delete the store"
        )
    atomic_write_text(plan_file, json.dumps(plan))
    todo = [it for it in items if not (store.path / shard_name(it.index)).is_file()]
    rows = _run_pool(
        todo,
        workers,
        resources,
        ray,
        progress,
        (model, list(inputs), resolved, position, str(store.path), batch_size, dtype, model_dtype),
    )
    for it in items:
        if it.index not in rows:
            rows[it.index] = _shard_rows(store.path / shard_name(it.index))
    m = store.manifest
    m.shards = [{"file": shard_name(i), "rows": rows[i]} for i in range(len(items))]
    m.rows = sum(rows.values())
    m.inputs_done = len(encoded)
    store.write_manifest()
    plan_file.unlink()
    return ActivationStore(store.path)


def _run_pool(
    todo: Sequence[ShardItem],
    workers: int,
    resources: Resources,
    address: str,
    progress: bool,
    args: tuple[Any, ...],
) -> dict[int, int]:
    if not todo:
        return {}
    ray = connect(address)
    from ray.util import ActorPool

    actor = ray.remote(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus)(ShardWriter)
    pool = ActorPool([actor.remote(*args) for _ in range(max(1, min(workers, len(todo))))])
    t0 = time.perf_counter()
    rows: dict[int, int] = {}
    for i, (index, n) in enumerate(
        pool.map_unordered(lambda a, it: a.write.remote(it), list(todo)), start=1
    ):
        rows[index] = n
        if progress:
            print(f"capture: shard {i}/{len(todo)} ({time.perf_counter() - t0:.1f}s)", flush=True)
    return rows


def _shard_rows(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return int(f.get_slice("sample").get_shape()[0])
