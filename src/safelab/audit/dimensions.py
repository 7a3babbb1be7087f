"""The safety dimensions the judge scores (rubrics live in ``data/dimensions.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from safelab.data import package_file
from safelab.errors import SafelabError


@dataclass(frozen=True)
class Dimension:
    """One judged dimension, scored 1-10."""

    name: str
    title: str
    rubric: str


@dataclass(frozen=True)
class DimensionSet:
    """The dimensions and the shared description of the 1-10 scale."""

    dimensions: tuple[Dimension, ...]
    scale: str

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]


def builtin_dimensions_path() -> Path:
    """Path of safelab's own dimension rubrics."""
    return package_file("safelab.audit", "data", "dimensions.yaml")


def load_dimensions(path: str | Path | None = None) -> DimensionSet:
    """Load judge dimensions from YAML (default: safelab's own).

    The file holds ``scale`` (text) and ``dimensions``: a list of ``{name, title, rubric}``.
    """
    file = Path(path) if path is not None else builtin_dimensions_path()
    if not file.is_file():
        raise SafelabError(f"dimension file {file} not found; pass a YAML file of judge dimensions")
    data = yaml.safe_load(file.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("dimensions"), list):
        raise SafelabError(f"{file} must be a mapping with a 'dimensions' list")
    dims: list[Dimension] = []
    for i, row in enumerate(data["dimensions"]):
        if not isinstance(row, dict) or not all(
            isinstance(row.get(k), str) for k in ("name", "rubric")
        ):
            raise SafelabError(f"{file}: dimension #{i} needs string fields 'name' and 'rubric'")
        name = row["name"].strip()
        if not name.replace("_", "").isalnum() or name != name.lower():
            raise SafelabError(f"{file}: dimension name {name!r} must be lower_snake_case")
        dims.append(
            Dimension(name=name, title=str(row.get("title", name)), rubric=row["rubric"].strip())
        )
    if not dims:
        raise SafelabError(f"{file} lists no dimensions")
    if len({d.name for d in dims}) != len(dims):
        raise SafelabError(f"{file} repeats a dimension name")
    return DimensionSet(
        dimensions=tuple(dims), scale=str(data.get("scale", "1 = none, 10 = extreme"))
    )
