"""Experiment configs: one frozen dataclass per experiment is the only source of its defaults.

A config field says its own command-line help (and choices) through :func:`option`, so the CLI's
options are generated from the config (``safelab.commands.options.add_options``) and a config is
built back from them without a second list of defaults. The config is saved, as
:func:`config_dict`, in the result's ``metrics.json``; a notebook that builds the same config
gets the same numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

HELP = "help"
CHOICES = "choices"
FLAG = "flag"


def option(
    default: Any,
    help: str,
    *,
    choices: Iterable[str] | None = None,
    flag: str | None = None,
) -> Any:
    """A config field with its CLI help (``flag`` overrides the ``--field-name`` spelling)."""
    meta: dict[str, Any] = {HELP: help}
    if choices is not None:
        meta[CHOICES] = tuple(choices)
    if flag is not None:
        meta[FLAG] = flag
    return dataclasses.field(default=default, metadata=meta)


def config_dict(cfg: Any) -> dict[str, Any]:
    """The config as JSON-ready data (what ``metrics.json`` records)."""
    return dataclasses.asdict(cfg)
