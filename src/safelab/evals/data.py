"""Loading the data files shipped with the evaluations, and parsing experiment variables.

Scenarios, prompts and rubrics live under ``safelab/evals/data/<eval>/`` as YAML, JSONL and
Markdown, so a researcher changes a scenario by editing a file, not Python.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from safelab.data import package_file, read_jsonl_rows, read_package_text, read_package_yaml
from safelab.errors import SafelabError

DATA_PACKAGE = "safelab.evals"
HUB_PREFIX = "hf://"


def data_path(*parts: str) -> Path:
    """Path of a file shipped under ``safelab/evals/data``."""
    return package_file(DATA_PACKAGE, "data", *parts)


def read_text(*parts: str) -> str:
    """Text of a shipped data file (a prompt template, a rubric)."""
    return read_package_text(DATA_PACKAGE, "data", *parts)


def read_yaml(*parts: str) -> Any:
    """Parsed YAML of a shipped data file."""
    return read_package_yaml(DATA_PACKAGE, "data", *parts)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a malformed line raises SafelabError naming file and line."""
    return [row for _, row in read_jsonl_rows(path, objects=True)]


def parse_levels(value: str | Sequence[str] | None, allowed: Sequence[str], name: str) -> list[str]:
    """Parse a task argument naming one or more levels of an experiment variable.

    Accepts a list, a comma-separated string (``-T threat=replacement,none``) or ``all``.

    Raises:
        SafelabError: a level not in ``allowed``.
    """
    if value is None or value == "all":
        return list(allowed)
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    items = [v for v in items if v]
    if not items:
        raise SafelabError(f"-T {name}= is empty; choose from {', '.join(allowed)} or 'all'")
    for item in items:
        if item not in allowed:
            raise SafelabError(
                f"-T {name}={item} is not a level of {name}; choose from {', '.join(allowed)} or 'all'"
            )
    return list(dict.fromkeys(items))


def grid(variables: Mapping[str, Sequence[str]]) -> Iterator[dict[str, str]]:
    """Every combination of the variables' levels, as ``{variable: level}`` dicts."""
    names = list(variables)
    for combo in itertools.product(*(variables[n] for n in names)):
        yield dict(zip(names, combo, strict=True))


def condition_label(condition: Mapping[str, str]) -> str:
    """A stable printable name for a condition, e.g. ``goal=explicit,threat=none``."""
    return ",".join(f"{k}={v}" for k, v in condition.items())


def resolve_source(source: str, pattern: str) -> list[Path]:
    """Local files for a dataset argument: a file, a folder (files matching ``pattern``), or a hub file.

    A hub file is ``hf://<owner>/<dataset>/<path/in/repo>`` and is downloaded with
    ``huggingface_hub`` (needs network; offline, pass a local path).

    Raises:
        SafelabError: nothing found at ``source``, or the download failed.
    """
    if source.startswith(HUB_PREFIX):
        parts = source.removeprefix(HUB_PREFIX).split("/")
        if len(parts) < 3:
            raise SafelabError(f"hub id {source!r}: use hf://<owner>/<dataset>/<path/in/repo>")
        try:
            from huggingface_hub import hf_hub_download

            local = hf_hub_download("/".join(parts[:2]), "/".join(parts[2:]), repo_type="dataset")
        except Exception as e:
            raise SafelabError(
                f"could not download {source} ({type(e).__name__}); pass a local path instead"
            ) from e
        return [Path(local)]
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(path.rglob(pattern))
        if not files:
            raise SafelabError(f"{path} holds no {pattern} files")
        return files
    if not path.is_file():
        raise SafelabError(f"dataset {source!r} is not a file, a folder or an hf:// id")
    return [path]
