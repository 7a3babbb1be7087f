"""The distributed engine: a grid of cells, run here one after another or as Ray tasks.

A *cell* is one unit of an experiment (a probe at one site and seed, one weak-to-strong cell, one
SAE): a frozen, picklable dataclass with a ``key`` naming it. A *cell function* is a module-level
function ``fn(cell) -> dict`` whose dict is JSON (numbers, strings, lists): it loads what it needs
itself (a model by name, activations from a store path), so nothing heavy is ever shipped to a
worker, and the same function runs in this process or in a Ray worker.

:func:`run_grid` runs the cells that have no result yet, writes each result atomically to
``<out>/cells/<key>.json`` as it arrives (so a crashed or stopped grid resumes without repeating
a finished cell), shows progress, and returns every cell's result in cell order. A result is
always returned as it reads back from its file, so a sequential run, a Ray run and a resumed run
return the same values.

Ray is optional (``pip install safelab[ray]``): ``ray=None`` runs here; ``ray="local"`` starts a
local cluster (all cores); any other value is a cluster address (``auto``, ``ray://host:10001``);
an already initialised Ray (a notebook's or a test's ``ray.init``) is used as it is. Each cell is
one task with the declared :class:`Resources` (``num_gpus=1`` puts it on a GPU worker).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from safelab.errors import SafelabError
from safelab.files import atomic_write_text

RAY_ENV = "SAFELAB_RAY_ADDRESS"
LOCAL = "local"
CELLS = "cells"


class Cell(Protocol):
    """A frozen, picklable config of one unit of work."""

    @property
    def key(self) -> str: ...


C = TypeVar("C", bound=Cell)
CellFn = Callable[[Any], dict[str, Any]]


@dataclass(frozen=True)
class Resources:
    """What one cell's task asks Ray for (ignored when running here)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0


ONE_CPU = Resources()


def ray_address(flag: str | None) -> str | None:
    """The cluster to use: the ``--ray [ADDRESS]`` value, else ``$SAFELAB_RAY_ADDRESS``, else None.

    ``--ray`` without an address passes ``"local"`` (a local cluster on this machine's cores).
    """
    if flag:
        return flag
    return os.environ.get(RAY_ENV) or None


def cell_path(out: Path, key: str) -> Path:
    return out / CELLS / f"{key}.json"


def read_cell(out: Path, key: str) -> dict[str, Any] | None:
    """A finished cell's result, or None when the cell has not run (or its file is unreadable)."""
    path = cell_path(out, key)
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _as_json(result: dict[str, Any], key: str) -> str:
    try:
        return json.dumps(result, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise SafelabError(f"cell {key} returned a result that is not JSON ({e})") from None


def run_grid(
    fn: CellFn,
    cells: Sequence[C],
    out: str | Path | None,
    *,
    ray: str | None = None,
    resources: Resources = ONE_CPU,
    progress: bool = True,
    desc: str = "cells",
) -> list[dict[str, Any]]:
    """Run ``fn`` on every cell without a result under ``out``; every cell's result, in order.

    Args:
        fn: a module-level function (Ray pickles it by reference) returning a JSON dict.
        cells: frozen configs with unique ``key``.
        out: folder for ``cells/<key>.json``; None keeps results in memory only (no resume).
        ray: None runs here; ``"local"`` or a cluster address runs each cell as a Ray task.
        resources: per-task CPUs and GPUs.
    """
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise SafelabError(f"two cells share the key {dup!r}: each cell needs its own key")
    root = Path(out) if out is not None else None
    results: dict[str, dict[str, Any]] = {}
    if root is not None:
        for k in keys:
            if (done := read_cell(root, k)) is not None:
                results[k] = done
    todo = [c for c in cells if c.key not in results]
    bar = _bar(progress, len(cells), len(cells) - len(todo), desc)

    def finish(key: str, value: dict[str, Any]) -> None:
        text = _as_json(value, key)
        if root is not None:
            atomic_write_text(cell_path(root, key), text + "\n")
        results[key] = json.loads(text)
        if bar is not None:
            bar.update(1)

    try:
        if ray is None:
            for c in todo:
                finish(c.key, fn(c))
        elif todo:
            _run_on_ray(fn, todo, ray, resources, finish)
    finally:
        if bar is not None:
            bar.close()
    return [results[k] for k in keys]


def _run_on_ray(
    fn: CellFn,
    todo: Sequence[Cell],
    address: str,
    resources: Resources,
    finish: Callable[[str, dict[str, Any]], None],
) -> None:
    ray = connect(address)
    task = ray.remote(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus)(_call)
    pending = {task.remote(fn, c): c.key for c in todo}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            key = pending.pop(ref)
            try:
                value = ray.get(ref)
            except Exception as e:  # a task's own SafelabError arrives wrapped by Ray
                cause = getattr(e, "cause", None)
                if isinstance(cause, SafelabError):
                    raise SafelabError(f"cell {key}: {cause}") from None
                raise
            finish(key, value)


def _call(fn: CellFn, cell: Cell) -> dict[str, Any]:
    return fn(cell)


def connect(address: str) -> Any:
    """The ``ray`` module, initialised for ``address`` (reusing a Ray already started)."""
    try:
        import ray
    except ImportError:
        raise SafelabError(
            "--ray needs Ray: pip install 'safelab[ray]' (or run without --ray)"
        ) from None
    if not ray.is_initialized():
        t0 = time.perf_counter()
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address == LOCAL:
            ray.init(**kwargs)
        else:
            try:
                ray.init(address=address, **kwargs)
            except ConnectionError as e:
                raise SafelabError(
                    f"no Ray cluster at {address!r} ({str(e)[:80]}): start one with `ray start "
                    "--head`, or pass --ray without an address for a local cluster"
                ) from None
        print(f"ray: connected to {address} in {time.perf_counter() - t0:.1f}s", flush=True)
    return ray


def _bar(enabled: bool, total: int, done: int, desc: str) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=desc, unit="cell")
