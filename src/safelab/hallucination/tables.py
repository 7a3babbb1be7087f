"""Closed-world fact tables: (entity, attribute) facts parsed from true/false statement CSVs.

A table (``cities``: "The city of Lodz is in Poland.") holds, for every entity, the attributes
its true rows state, and the table's whole attribute vocabulary (true and false rows), which is
what an answer's stated attribute is matched against (:mod:`safelab.hallucination.matching`).
How each file is parsed (pattern, prompt, aliases) is data: ``hallucination/data/tables.yaml``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from safelab.data import read_package_yaml
from safelab.errors import SafelabError

DEFAULT_DATA_DIR = ""
"""Empty: ``$SAFELAB_DATA/truth/datasets``, else ``../shared/data/truth/datasets``."""


def data_dir(given: str | Path | None = None) -> Path:
    """The truth/datasets folder: ``given``, or the default (see :data:`DEFAULT_DATA_DIR`)."""
    if given:
        return Path(given).expanduser()
    from safelab.data import shared_data_root

    return shared_data_root() / "truth" / "datasets"


@cache
def table_specs() -> dict[str, Any]:
    """The shipped table specs and alias lists (``data/tables.yaml``)."""
    spec: dict[str, Any] = read_package_yaml("safelab.hallucination", "data", "tables.yaml")
    return spec


def known_tables() -> list[str]:
    return list(table_specs()["tables"])


@dataclass(frozen=True)
class FactTable:
    """Entities of one table with their valid attributes, and the attribute vocabulary.

    ``aliases`` maps every surface form (lower-cased unless ``case_sensitive``) to its
    canonical attribute; ``implies`` maps a canonical attribute to others that are also right
    when it is (England -> United Kingdom).
    """

    name: str
    source: str
    prompt: str
    facts: dict[str, frozenset[str]]
    """entity -> its valid canonical attributes (from label-1 rows)."""
    vocabulary: frozenset[str]
    """every canonical attribute the table states, true or false."""
    aliases: dict[str, str] = field(default_factory=dict)
    implies: dict[str, frozenset[str]] = field(default_factory=dict)
    cues: tuple[str, ...] = ()
    case_sensitive: bool = False
    lines: dict[str, int] = field(default_factory=dict)
    """entity -> the file line of its first true row (for messages and the HTML view)."""
    system: str = ""

    @property
    def entities(self) -> list[str]:
        return sorted(self.facts)

    def valid(self, entity: str) -> frozenset[str]:
        """Attributes that count as supported for ``entity`` (its own and what they imply)."""
        own = self.facts[entity]
        out = set(own)
        for a in own:  # lived in England, so lived in the United Kingdom
            out |= self.implies.get(a, frozenset())
        for a, wider in self.implies.items():  # lived in the U.K.: "England" is right, more precise
            if wider & own:
                out.add(a)
        return frozenset(out)

    def question(self, entity: str) -> str:
        return self.prompt.format(entity=entity)

    def messages(self, entity: str) -> list[dict[str, str]]:
        """The chat that asks about ``entity`` (the shipped system prompt, then the question)."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, {"role": "user", "content": self.question(entity)}]


def canonical(value: str) -> str:
    """A table's attribute text as its canonical form: stripped, without a leading "the"."""
    v = value.strip()
    v = re.sub(r"^the\s+", "", v, flags=re.IGNORECASE)
    return v.strip()


def load_table(name: str, folder: str | Path | None = DEFAULT_DATA_DIR) -> FactTable:
    """Parse table ``name`` (a key of ``tables.yaml``) from ``folder`` (see :func:`data_dir`).

    Raises:
        SafelabError: unknown table, missing file, or a malformed row (``file:line``).
    """
    specs = table_specs()
    if name not in specs["tables"]:
        raise SafelabError(f"unknown fact table {name!r}: use one of {', '.join(known_tables())}")
    spec = specs["tables"][name]
    path = data_dir(folder) / spec["file"]
    if not path.is_file():
        raise SafelabError(
            f"table {name!r}: {path} not found: give --data-dir (the truth/datasets folder) or set SAFELAB_DATA"
        )
    return parse_table(name, path, spec, specs)


def parse_table(
    name: str, path: Path, spec: dict[str, Any], specs: dict[str, Any] | None = None
) -> FactTable:
    """Parse one statement,label CSV with the spec's ``pattern`` (see :func:`load_table`)."""
    specs = specs or table_specs()
    pattern = re.compile(spec["pattern"])
    split = spec.get("split")
    facts: dict[str, set[str]] = {}
    vocab: set[str] = set()
    lines: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"statement", "label"} <= set(reader.fieldnames):
            raise SafelabError(
                f"{path}:1: expected a header with statement,label columns, got "
                f"{','.join(reader.fieldnames or [])}"
            )
        for row in reader:
            line = reader.line_num
            statement = (row.get("statement") or "").strip()
            label = (row.get("label") or "").strip()
            if label not in ("0", "1"):
                raise SafelabError(f"{path}:{line}: label {label!r} is not 0/1: fix the row")
            m = pattern.match(statement)
            if m is None:
                raise SafelabError(
                    f"{path}:{line}: statement {statement[:80]!r} does not match the {name} "
                    f"pattern {spec['pattern']!r}: fix the row or the table spec"
                )
            entity = m.group("entity").strip()
            raw = m.group("attribute")
            parts = raw.split(split) if split else [raw]
            attrs = {_normalise_abbrev(canonical(p)) for p in parts if canonical(p)}
            if not entity or not attrs:
                raise SafelabError(f"{path}:{line}: empty entity or attribute in {statement!r}")
            vocab |= attrs
            if label == "1":
                facts.setdefault(entity, set()).update(attrs)
                lines.setdefault(entity, line)
    if not facts:
        raise SafelabError(f"{path}: no true (label 1) rows: a fact table needs some")
    case_sensitive = bool(spec.get("case_sensitive", False))
    extra = specs.get("vocabularies", {}).get(spec.get("vocabulary", ""), [])
    aliases = _alias_map(
        vocab,
        extra,
        specs.get("aliases", {}).get(spec.get("aliases", ""), {}),
        case_sensitive=case_sensitive,
        plurals=bool(spec.get("plurals", False)),
        drop_to=bool(spec.get("drop_to", False)),
    )

    def resolve(form: str) -> str:
        return aliases.get(form if case_sensitive else form.lower(), form)

    implies = {
        resolve(k): frozenset(resolve(i) for i in v)
        for k, v in (specs.get("implies") or {}).items()
    }
    return FactTable(
        name=name,
        source=str(path),
        prompt=str(spec["prompt"]),
        facts={e: frozenset(a) for e, a in facts.items()},
        vocabulary=frozenset(vocab),
        aliases=aliases,
        implies=implies,
        cues=tuple(spec.get("cues") or ()),
        case_sensitive=case_sensitive,
        lines=lines,
        system=str(specs.get("system") or ""),
    )


def _normalise_abbrev(value: str) -> str:
    # "lived in the U.S." parses as "the U.S" (the sentence's full stop ends the abbreviation).
    return value + "." if re.fullmatch(r"(?:[A-Z]\.)+[A-Z]", value) else value


def _alias_map(
    vocab: set[str],
    more: list[str],
    extra: dict[str, list[str]],
    *,
    case_sensitive: bool,
    plurals: bool,
    drop_to: bool,
) -> dict[str, str]:
    """Surface form -> canonical attribute: the table's vocabulary, the configured aliases and
    ``more`` (names an answer may state that the table does not, e.g. every country)."""

    def key(s: str) -> str:
        return s if case_sensitive else s.lower()

    forms: dict[str, str] = {}
    by_key = {key(v): v for v in vocab}
    for canon, alts in extra.items():
        # an alias list names a canonical form; the table may spell it as one of the aliases
        target = by_key.get(key(canon)) or next(
            (by_key[key(a)] for a in alts if key(a) in by_key), canon
        )
        for form in [canon, *alts]:
            forms[key(form)] = target
    for v in vocab:
        forms[key(v)] = v
        if plurals and " " not in v:
            forms.setdefault(key(v + ("es" if v.endswith(("s", "sh", "ch")) else "s")), v)
        if drop_to and v.lower().startswith("to ") and len(v) > 3:
            forms.setdefault(key(v[3:]), v)
    for m in more:  # names the table never states: never override its own spelling or aliases
        forms.setdefault(key(m), m)
    return forms
