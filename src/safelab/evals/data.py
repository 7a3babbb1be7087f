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


def hub_mirror(source: str) -> Path | None:
    """The local copy of a hub file ``hf://<owner>/<dataset>/<path>`` in the shared data
    folder (``<root>/<dataset>/<path>``), or None when there is none."""
    from safelab.data import shared_data_root

    parts = source.removeprefix(HUB_PREFIX).split("/")
    if not source.startswith(HUB_PREFIX) or len(parts) < 3:
        return None
    local = shared_data_root().joinpath(*parts[1:])
    return local if local.is_file() else None


def unreachable_data(args: Mapping[str, Any]) -> str | None:
    """Why a task's ``dataset`` argument (a hub file) cannot be read here, or None when it can:
    a local path, a mirrored hub file (:func:`hub_mirror`), or a hub file with the network
    allowed. Lets a comparison or matrix skip one evaluation with this line instead of failing."""
    import os

    source = str(args.get("dataset") or "")
    if not source.startswith(HUB_PREFIX) or hub_mirror(source) is not None:
        return None
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return (
            f"{source} is not mirrored in the shared data folder and HF_HUB_OFFLINE is set: "
            "set SAFELAB_DATA to a folder holding it, or go online"
        )
    return None


def resolve_source(source: str, pattern: str) -> list[Path]:
    """Local files for a dataset argument: a file, a folder (files matching ``pattern``), or a hub file.

    A hub file is ``hf://<owner>/<dataset>/<path/in/repo>``. It is read from a local mirror
    when ``<dataset>/<path/in/repo>`` exists in the shared data folder
    (:func:`safelab.data.shared_data_root`: ``$SAFELAB_DATA``, else ``../shared/data``; e.g.
    ``hf://Anthropic/model-written-evals/advanced-ai-risk/...`` from
    ``$SAFELAB_DATA/model-written-evals/advanced-ai-risk/...``), else downloaded with
    ``huggingface_hub`` (needs network; offline, pass a local path or set ``SAFELAB_DATA``).

    Raises:
        SafelabError: nothing found at ``source``, or the download failed.
    """
    if source.startswith(HUB_PREFIX):
        parts = source.removeprefix(HUB_PREFIX).split("/")
        if len(parts) < 3:
            raise SafelabError(f"hub id {source!r}: use hf://<owner>/<dataset>/<path/in/repo>")
        mirrored = hub_mirror(source)
        if mirrored is not None:
            return [mirrored]
        try:
            from huggingface_hub import hf_hub_download

            local = hf_hub_download("/".join(parts[:2]), "/".join(parts[2:]), repo_type="dataset")
        except Exception as e:
            raise SafelabError(
                f"could not download {source} ({type(e).__name__}): pass a local path, or set "
                f"SAFELAB_DATA to a folder holding {'/'.join(parts[1:])}"
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
