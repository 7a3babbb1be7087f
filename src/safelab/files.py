"""Writing results: every file safelab writes goes through a temp file beside it and a rename.

A reader (a resumed run, a report, a second process) therefore sees either the old file or the
whole new one, never half of one; :func:`tmp_path_beside` serves writers that build a folder or a
binary file themselves (safetensors, shard stores) and rename it into place.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def tmp_path_beside(path: Path) -> Path:
    """A fresh temporary file in ``path``'s folder (same filesystem, so the rename is atomic)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a UTF-8 text file via a temp file and a rename; creates the folder. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_beside(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
