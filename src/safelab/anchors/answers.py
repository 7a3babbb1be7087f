"""Extract the final answer from a continuation; ``None`` means unscorable (counted, never dropped)."""

from __future__ import annotations

import re
from collections.abc import Sequence

_ANSWER = re.compile(r"answer\s*(?:is)?\s*[:：]\s*\**\s*([^\n]*)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_WORD = re.compile(r"[A-Za-z0-9][\w'-]*")


def extract_answer(text: str, options: Sequence[str] = ()) -> str | None:
    """The answer after the first ``Answer:`` in ``text``, normalised; ``None`` if there is none.

    With ``options``, the first option named as a whole word (case-insensitive) wins; an
    answer naming none is kept as its own category (its first word), since it is an answer. A
    numeric answer is its first number; otherwise the first word, lower-cased.
    """
    m = _ANSWER.search(text)
    if not m:
        return None
    tail = m.group(1).strip()
    if not tail:
        return None
    return normalise(tail, options)


def normalise(tail: str, options: Sequence[str] = ()) -> str | None:
    low = tail.lower()
    if options:
        hits = [
            (mm.start(), o)
            for o in options
            if (mm := re.search(rf"(?<![\w]){re.escape(o.lower())}(?![\w])", low))
        ]
        if hits:
            return min(hits)[1]
    num = _NUMBER.search(tail)
    if num and not options:
        value = float(num.group(0))
        return str(int(value)) if value.is_integer() else str(value)
    word = _WORD.search(low)
    return word.group(0) if word else None
