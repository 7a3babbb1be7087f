"""Options and helpers shared by ``safelab probe``, ``steer`` and ``monitor``: the data and model
options, loading, the cached activations, atomic JSON output (the sweeps take theirs from
their configs: :mod:`safelab.commands.options`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_data_options(p: argparse.ArgumentParser, *, kinds: bool = True) -> None:
    """Options shared by every command that reads contrast data: the fields of
    :class:`~safelab.interp.probe_sweep.ContrastDataConfig` (their only defaults)."""
    from safelab.commands.options import add_options
    from safelab.interp.probe_sweep import ContrastDataConfig

    add_options(p, ContrastDataConfig, skip=() if kinds else ("kind",))


def load(args: argparse.Namespace, path: str) -> tuple[Any, Any]:
    """The model and the contrast data named on the command line (the library's own loader)."""
    from safelab.commands.options import from_options
    from safelab.interp.probe_sweep import ContrastDataConfig, load_contrast_data

    return load_contrast_data(from_options(ContrastDataConfig, args), path)


def activations(args: argparse.Namespace, model: Any, data: Any, sites: str | None = None) -> Any:
    from safelab.interp.actcache import cached_activations

    return cached_activations(
        model,
        data,
        sites or args.sites,
        cache_root=args.cache,
        batch_size=args.batch_size,
        progress=True,
    )


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    from safelab.files import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return path
