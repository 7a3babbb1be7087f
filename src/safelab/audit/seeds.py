"""Seed instructions: what the auditor is asked to probe for, one per sample.

safelab ships its own seeds (``data/seeds.jsonl``, each tagged by behaviour). Any JSONL file
whose rows carry the instruction under ``input`` (or ``instruction`` / ``seed``) and an
optional list of ``tags`` loads the same way, so published seed sets can be audited too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from inspect_ai.dataset import MemoryDataset, Sample

from safelab.data import package_file, read_jsonl_rows
from safelab.errors import SafelabError

_TEXT_KEYS = ("input", "instruction", "seed", "seed_instruction")
_ID_KEYS = ("id", "source_id", "index")


@dataclass(frozen=True)
class Seed:
    """One seed instruction for the auditor."""

    id: str
    input: str
    tags: tuple[str, ...] = field(default_factory=tuple)


def builtin_seeds_path() -> Path:
    """Path of safelab's own seed file."""
    return package_file("safelab.audit", "data", "seeds.jsonl")


def _parse_row(row: object, path: Path, line_no: int) -> Seed:
    where = f"{path}:{line_no}"
    if not isinstance(row, dict):
        raise SafelabError(f"seed row {where} is not a JSON object; write one object per line")
    text = next(
        (row[k] for k in _TEXT_KEYS if isinstance(row.get(k), str) and row[k].strip()), None
    )
    if text is None:
        raise SafelabError(
            f"seed row {where} has no instruction; put the text under one of {list(_TEXT_KEYS)}"
        )
    raw_id = next((row[k] for k in _ID_KEYS if row.get(k) is not None), None)
    seed_id = str(raw_id) if raw_id is not None else f"{path.stem}-{line_no}"
    tags = row.get("tags", [])
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise SafelabError(f"seed row {where}: 'tags' must be a list of strings")
    return Seed(id=seed_id, input=text.strip(), tags=tuple(tags))


def _normalise_tags(tags: str | Iterable[str] | None) -> set[str]:
    if tags is None:
        return set()
    if isinstance(tags, str):
        tags = tags.split(",")
    return {t.strip() for t in tags if t.strip()}


def load_seeds(
    path: str | Path | None = None, tags: str | Iterable[str] | None = None
) -> list[Seed]:
    """Load seed instructions from a JSONL file (default: safelab's own).

    Args:
        path: JSONL file, one seed per line; None for safelab's built-in seeds.
        tags: keep only seeds carrying at least one of these tags (a list, or a
            comma-separated string). None or empty keeps all.

    Raises:
        SafelabError: the file is missing or a row is malformed, or no seed has the tags.
    """
    file = Path(path) if path is not None else builtin_seeds_path()
    if not file.is_file():
        raise SafelabError(f"seed file {file} not found; pass a JSONL file of seed instructions")
    seeds: list[Seed] = []
    seen: dict[str, int] = {}
    for line_no, row in read_jsonl_rows(file):
        seed = _parse_row(row, file, line_no)
        # Inspect needs unique sample ids; disambiguate repeats rather than fail.
        if seed.id in seen:
            seen[seed.id] += 1
            seed = Seed(id=f"{seed.id}-{seen[seed.id]}", input=seed.input, tags=seed.tags)
        else:
            seen[seed.id] = 0
        seeds.append(seed)
    wanted = _normalise_tags(tags)
    if wanted:
        seeds = [s for s in seeds if wanted.intersection(s.tags)]
        if not seeds:
            raise SafelabError(f"no seed in {file} has any of the tags {sorted(wanted)}")
    return seeds


def seed_tags(seeds: Iterable[Seed]) -> dict[str, int]:
    """Count how many seeds carry each tag."""
    counts: dict[str, int] = {}
    for s in seeds:
        for t in s.tags:
            counts[t] = counts.get(t, 0) + 1
    return dict(sorted(counts.items()))


def seeds_dataset(
    path: str | Path | None = None, tags: str | Iterable[str] | None = None
) -> MemoryDataset:
    """Seeds as an Inspect dataset: the instruction is the input, tags go in metadata."""
    seeds = load_seeds(path, tags)
    samples = [
        Sample(id=s.id, input=s.input, metadata={"seed_id": s.id, "tags": list(s.tags)})
        for s in seeds
    ]
    return MemoryDataset(samples, name="safelab-audit-seeds")
