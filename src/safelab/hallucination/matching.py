"""Match the attribute an answer states to a fact table, and label it at its token span.

The rules (docs/hallucination.md, tested in tests/unit/test_hallucination_matching.py):

1. Every occurrence of the entity's own name is masked (Mexico City names Mexico, but states
   nothing); so is the question's echo of it.
2. When the table has cue words (``symbol``, ``means``) and the answer contains one, only text
   after the first cue is searched (``I`` is iodine's symbol, not the pronoun before it).
3. Every surface form of the table (its vocabulary, the aliases in ``tables.yaml``, plurals for
   animal classes, "to have" -> "have" for verbs) is found with word boundaries,
   case-insensitively unless the table is case-sensitive (element symbols). Overlapping
   matches keep the longest (``South Africa`` over ``Africa``, ``Papua New Guinea`` over
   ``Guinea``); a form inside a longer word never matches (``Niger`` in ``Nigeria``).
4. The earliest remaining match is the stated attribute. It is **supported** when its canonical
   form is one of the entity's valid attributes (any of them: inventors with two countries;
   and either side of an ``implies`` relation: England lies in the United Kingdom, so each is
   right when the table says the other), else **fabricated**.
5. An answer with no match is **excluded** (``no_attribute``) and counted, never labelled.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safelab.hallucination.tables import FactTable

SUPPORTED = 0
FABRICATED = 1


@dataclass(frozen=True)
class Match:
    """The attribute an answer states: text, canonical form, characters and label."""

    text: str
    attribute: str
    start: int
    end: int
    label: int
    """1 = fabricated (not a valid attribute of the entity), 0 = supported."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@cache
def _form_pattern(forms: tuple[str, ...], case_sensitive: bool) -> re.Pattern[str]:
    # longest first, so at one start position the longer form wins inside the alternation
    alts = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alts})(?!\w)", 0 if case_sensitive else re.IGNORECASE)


def _masked(text: str, entity: str, case_sensitive: bool) -> str:
    flags = 0 if case_sensitive else re.IGNORECASE
    return re.sub(
        rf"(?<!\w){re.escape(entity)}(?!\w)", lambda m: " " * len(m.group(0)), text, flags=flags
    )


def find_attribute(table: FactTable, entity: str, answer: str) -> Match | None:
    """The attribute ``answer`` states about ``entity`` by the module's rules, or None."""
    text = _masked(answer, entity, table.case_sensitive)
    lo = 0
    if table.cues:
        cue = re.search(
            r"(?<!\w)(?:" + "|".join(re.escape(c) for c in table.cues) + r")(?!\w)",
            text,
            re.IGNORECASE,
        )
        if cue:
            lo = cue.end()
    pattern = _form_pattern(tuple(sorted(table.aliases)), table.case_sensitive)
    best: re.Match[str] | None = None
    for m in pattern.finditer(text, lo):
        # finditer is leftmost and, through the sorted alternation, longest at each start:
        # the first match is the earliest, and no later match can overlap it
        best = m
        break
    if best is None:
        return None
    surface = best.group(0)
    key = surface if table.case_sensitive else surface.lower()
    attribute = table.aliases[key]
    label = SUPPORTED if attribute in table.valid(entity) else FABRICATED
    return Match(surface, attribute, best.start(), best.end(), label)


def token_char_offsets(tokenizer: Any, ids: Sequence[int]) -> list[tuple[int, int]]:
    """Each token's character range in ``tokenizer.decode(ids, skip_special_tokens=True)``.

    Decoding token by token splits multi-byte characters (``é``) across tokens; the lengths of
    growing prefixes give each token exactly the characters it completes (zero for a token
    that only starts one).
    """
    out: list[tuple[int, int]] = []
    prev = 0
    for k in range(len(ids)):
        end = len(tokenizer.decode(list(ids[: k + 1]), skip_special_tokens=True))
        start = min(prev, end)
        out.append((start, end))
        prev = end
    return out


def pieces_offsets(pieces: Sequence[str]) -> list[tuple[int, int]]:
    """Character ranges of token pieces laid end to end (the provider's recorded tokens)."""
    out, pos = [], 0
    for p in pieces:
        out.append((pos, pos + len(p)))
        pos += len(p)
    return out


def char_span_to_tokens(offsets: Sequence[tuple[int, int]], start: int, end: int) -> list[int]:
    """Indices of the tokens whose characters overlap ``[start, end)``."""
    return [i for i, (a, b) in enumerate(offsets) if a < end and b > start and b > a]


def span_max(scores: Sequence[float], span: Sequence[int]) -> float:
    """Span aggregation: the highest per-token score over the entity span's tokens."""
    if not span:
        raise ValueError("empty span")
    return max(float(scores[i]) for i in span)
