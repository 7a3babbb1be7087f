"""Reading inputs: user files (one text or chat per row) and the data files shipped in safelab.

Every JSONL file safelab reads goes through :func:`read_jsonl_rows`, so a malformed row is
reported the same way everywhere (``file:line``); every data file shipped inside the package
(prompts, YAML, JSONL, templates) is found through :func:`package_file`.
"""

from __future__ import annotations

import csv
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from safelab.errors import SafelabError

TEXT_FIELDS = ("text", "statement", "prompt", "question", "input")
DATA_ENV = "SAFELAB_DATA"


def shared_data_root() -> Path:
    """The shared data folder: ``$SAFELAB_DATA``, else ``../shared/data`` beside the checkout.

    Without the variable, ``shared/data`` is looked for beside the current directory (README
    commands run from the repository root) and then beside the checkout that holds this file; the
    first that exists wins. When neither does, the first is returned so that a caller's error
    names where the data was expected.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    candidates = (
        Path.cwd().parent / "shared" / "data",
        Path(__file__).resolve().parents[2].parent / "shared" / "data",
    )
    return next((c for c in candidates if c.is_dir()), candidates[0])


def read_inputs(path: str | Path, column: str | None = None) -> list[Any]:
    """Texts or chats from a ``.txt`` (one per line), ``.csv`` or ``.jsonl`` file.

    A CSV row contributes ``column`` (default: the first of text, statement, prompt, question,
    input). A JSONL row is a string, or an object with ``messages`` (a chat) or one of those
    fields.

    Raises:
        SafelabError: the file is missing, empty, or a row is malformed (names file and line).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise SafelabError(f"input file not found: {path} (check the path)")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _read_csv(path, column)
    elif suffix in (".jsonl", ".json"):
        rows = _read_jsonl(path, column)
    else:
        rows = [line.rstrip("\n") for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise SafelabError(f"{path} holds no inputs: add at least one row")
    return rows


def _read_csv(path: Path, column: str | None) -> list[str]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        col = column or next((c for c in TEXT_FIELDS if c in fields), None)
        if col is None or col not in fields:
            raise SafelabError(
                f"{path}: no text column ({column or ' / '.join(TEXT_FIELDS)}) in header {fields}: "
                "name one with --column"
            )
        out = []
        for line, row in enumerate(reader, start=2):
            value = row.get(col)
            if value is None or not value.strip():
                raise SafelabError(f"{path}:{line}: empty {col!r} field: fix or remove the row")
            out.append(value)
    return out


def package_file(package: str, *parts: str) -> Path:
    """Path of a data file shipped inside a safelab package.

    Args:
        package: the package that ships it, e.g. ``safelab.audit``.
        parts: the path below the package, e.g. ``"data", "seeds.jsonl"``.

    Raises:
        SafelabError: the file is not there (a broken install).
    """
    path = Path(str(resources.files(package).joinpath(*parts)))
    if not path.is_file():
        raise SafelabError(f"missing data file {path}: reinstall safelab (pip install -e .)")
    return path


def read_package_text(package: str, *parts: str) -> str:
    """Text of a data file shipped inside a safelab package (see :func:`package_file`)."""
    return package_file(package, *parts).read_text(encoding="utf-8")


def read_package_yaml(package: str, *parts: str) -> Any:
    """Parsed YAML of a data file shipped inside a safelab package."""
    import yaml

    return yaml.safe_load(read_package_text(package, *parts))


def read_jsonl_rows(
    path: str | Path, *, text: str | None = None, objects: bool = False
) -> list[tuple[int, Any]]:
    """The non-blank rows of a JSONL file as ``(line number, parsed value)``.

    Args:
        path: the file (also the name used in errors when ``text`` is given).
        text: the file's text when it is already read (a shipped data file).
        objects: every row must be a JSON object.

    Raises:
        SafelabError: a row is not valid JSON (or not an object), naming ``file:line``.
    """
    if text is None:
        text = Path(path).read_text(encoding="utf-8")
    rows: list[tuple[int, Any]] = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as e:
            raise SafelabError(
                f"{path}:{line}: not valid JSON ({e.msg}): write one JSON value per line"
            ) from None
        if objects and not isinstance(value, dict):
            raise SafelabError(
                f"{path}:{line}: expected a JSON object, got {type(value).__name__}: "
                "write one object per line"
            )
        rows.append((line, value))
    return rows


def _read_jsonl(path: Path, column: str | None) -> list[Any]:
    out: list[Any] = []
    for line, obj in read_jsonl_rows(path):
        if isinstance(obj, str):
            out.append(obj)
            continue
        if not isinstance(obj, dict):
            raise SafelabError(
                f"{path}:{line}: expected a string or an object, got {type(obj).__name__}"
            )
        if column is None and isinstance(obj.get("messages"), list):
            out.append(obj["messages"])
            continue
        keys = [column] if column else list(TEXT_FIELDS)
        value = next((obj[k] for k in keys if isinstance(obj.get(k), str)), None)
        if value is None:
            raise SafelabError(
                f"{path}:{line}: no text field ({' / '.join(keys)}) or messages list: fix the row"
            )
        out.append(value)
    return out
