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
    """The model and the contrast data named on the command line."""
    from safelab.interp.contrast import check_data_file, load_contrast, parse_position
    from safelab.models.loading import load_model

    check_data_file(path)  # before the model load (seconds)
    model = load_model(args.model)
    data = load_contrast(
        path,
        model,
        kind=getattr(args, "kind", "auto"),
        template=args.template,
        position=parse_position(args.position) if args.position else None,
        limit=args.limit,
        seed=args.seed,
    )
    return model, data


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
