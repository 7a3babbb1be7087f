"""Experiment configs: one frozen dataclass per experiment is the only source of its defaults.

A config field says its own command-line help (and choices) through :func:`option`, so the CLI's
options are generated from the config (``safelab.commands.options.add_options``) and a config is
built back from them without a second list of defaults. The config is saved, as
:func:`config_dict`, in the result's ``metrics.json``; a notebook that builds the same config
gets the same numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

HELP = "help"
CHOICES = "choices"
FLAG = "flag"
APPEND = "append"
PARSE = "parse"


def option(
    default: Any,
    help: str,
    *,
    choices: Iterable[str] | None = None,
    flag: str | None = None,
    append: bool = False,
    parse: Callable[[str], Any] | None = None,
) -> Any:
    """A config field with its CLI help (``flag`` overrides the ``--field-name`` spelling).

    ``append`` makes a ``tuple[str, ...] | None`` field a repeatable option (``--x a --x b``);
    ``parse`` reads the option's text (e.g. :func:`parse_count` for ``2M``).
    """
    meta: dict[str, Any] = {HELP: help}
    if append:
        meta[APPEND] = True
    if parse is not None:
        meta[PARSE] = parse
    if choices is not None:
        meta[CHOICES] = tuple(choices)
    if flag is not None:
        meta[FLAG] = flag
    return dataclasses.field(default=default, metadata=meta)


def config_dict(cfg: Any) -> dict[str, Any]:
    """The config as JSON-ready data (what ``metrics.json`` records)."""
    return dataclasses.asdict(cfg)


def parse_count(text: str) -> int:
    """``2M`` / ``300k`` / ``5000`` -> an int (a count option's text)."""
    t = text.strip().lower().replace("_", "")
    mult = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(t[-1:], 1)
    try:
        return int(float(t[:-1] if mult > 1 else t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (use e.g. 2M, 300k)") from None


def comma_list(text: str) -> tuple[str, ...]:
    """``"a, b"`` -> ``("a", "b")`` (a comma-separated option; empty items dropped)."""
    return tuple(v.strip() for v in text.split(",") if v.strip())


def comma_numbers(text: str, flag: str, kind: type = float) -> tuple[Any, ...]:
    """``"-4,-1,1,4"`` -> ``(-4.0, -1.0, 1.0, 4.0)``; a bad item is one line naming ``flag``."""
    from safelab.errors import SafelabError

    try:
        return tuple(kind(v) for v in comma_list(text))
    except ValueError:
        what = "integers, e.g. 0,1,2" if kind is int else "numbers, e.g. -4,-1,1,4"
        raise SafelabError(f"{flag} {text!r}: give comma-separated {what}") from None
