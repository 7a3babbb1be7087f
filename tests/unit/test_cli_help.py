"""Every option of every ``safelab`` command says its default in ``--help``."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from safelab.cli import _NO_DEFAULT_SHOWN, build_parser


def _parsers(
    parser: argparse.ArgumentParser, path: str = "safelab"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_shows_its_default() -> None:
    missing = []
    commands = list(_parsers(build_parser()))
    assert len(commands) > 30
    for path, parser in commands:
        text = parser.format_help()  # renders every %(default)s
        assert "%(default)" not in text
        for action in parser._actions:
            if (
                not action.option_strings
                or action.required
                or isinstance(action, _NO_DEFAULT_SHOWN)
            ):
                continue
            if "default" not in (action.help or "").lower():
                missing.append(f"{path} {action.option_strings[-1]}")
    assert not missing, missing
