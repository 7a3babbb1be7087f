"""CLI options generated from an experiment's config (:mod:`safelab.config`), and back.

The config dataclass is the only source of defaults: :func:`add_options` writes one option per
field, :func:`from_options` builds the config from what argparse parsed.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from safelab.config import APPEND, CHOICES, FLAG, HELP, PARSE

T = TypeVar("T")


def _base_type(tp: Any) -> tuple[type, bool]:
    """``int | None`` -> ``(int, True)``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])[0], True
    if origin is typing.Literal:
        return str, False
    if origin is tuple:
        return tuple, False
    return (tp if isinstance(tp, type) else str), False


def add_options(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    skip: Iterable[str] = (),
    required: Iterable[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Add one ``--option`` per field of the config ``cls`` to an argparse parser.

    A ``bool`` field that defaults to True becomes ``--no-<name>`` (or its ``flag``); one that
    defaults to False, ``--<name>``. ``defaults`` shows another default for a command that shares the config (it is
    still checked to be a field).
    """
    hints = typing.get_type_hints(cls)
    skip, required = set(skip), set(required)
    over = dict(defaults or {})
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        default = over.pop(f.name, f.default)
        flag = f.metadata.get(FLAG) or "--" + f.name.replace("_", "-")
        help_text = f.metadata.get(HELP, "")
        tp, _ = _base_type(hints[f.name])
        if tp is bool:
            if default:
                parser.add_argument(
                    f.metadata.get(FLAG) or "--no-" + f.name.replace("_", "-"),
                    dest=f.name,
                    action="store_false",
                    help=help_text,
                )
            else:
                parser.add_argument(flag, dest=f.name, action="store_true", help=help_text)
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "help": help_text, "type": tp}
        if PARSE in f.metadata:  # the field reads its own text (e.g. "2M", "a,b")
            kwargs["type"] = f.metadata[PARSE]
        elif tp is tuple and f.metadata.get(APPEND):  # --x a --x b
            kwargs.update(type=str, action="append")
        elif tp is tuple:  # tuple[str, ...]: one or more values
            kwargs.update(type=str, nargs="+")
        if CHOICES in f.metadata:
            kwargs["choices"] = list(f.metadata[CHOICES])
        if f.name in required:
            kwargs["required"] = True
        elif default is not dataclasses.MISSING:
            kwargs["default"] = default
        else:
            kwargs["required"] = True
        parser.add_argument(flag, **kwargs)
    if over:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(over)}")


def from_options(cls: type[T], options: argparse.Namespace, **overrides: Any) -> T:
    """Build the config ``cls`` from parsed options (an argparse namespace) and overrides."""
    values = vars(options)
    kwargs = {
        f.name: values[f.name]
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init and f.name in values
    }
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    kwargs.update(overrides)
    return cls(**kwargs)


def add_ray_option(parser: argparse.ArgumentParser) -> None:
    """``--ray [ADDRESS]``: run the grid's cells as Ray tasks (see :mod:`safelab.distributed`)."""
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run each cell as a Ray task: a local cluster, or the cluster at ADDRESS "
        "(default: $SAFELAB_RAY_ADDRESS, else this process)",
    )
