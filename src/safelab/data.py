"""Reading user-supplied text inputs (one text or chat per row) with row-precise errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from safelab.errors import SafelabError

TEXT_FIELDS = ("text", "statement", "prompt", "question", "input")


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


def _read_jsonl(path: Path, column: str | None) -> list[Any]:
    out: list[Any] = []
    for line, raw in enumerate(path.read_text().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise SafelabError(f"{path}:{line}: not valid JSON ({e.msg}): fix the row") from None
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
