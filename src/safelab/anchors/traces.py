"""A reasoning trace: the question, the reasoning split into sentences, and the answer line.

The model sees ``[system], user: question`` and an assistant turn that starts with the first
``k`` sentences of the reasoning (a prefill), for ``k = 0..n``. The answer line
(``Answer: X``) follows the reasoning.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safelab.errors import SafelabError

ANSWER_PREFIX = "Answer:"
DEFAULT_SYSTEM = (
    "Think step by step in two or three short sentences, then write the final answer on its "
    "own line, after the word Answer and a colon."
)

# A sentence ends at . ! ? (or a newline) followed by whitespace; decimals such as 3.5 stay whole.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the sentences of ``text`` (whitespace excluded)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        if text[start : m.start()].strip():
            spans.append(_strip(text, start, m.start()))
        start = m.end()
    if text[start:].strip():
        spans.append(_strip(text, start, len(text)))
    return spans


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


@dataclass(frozen=True)
class Trace:
    """One reasoning trace to analyse.

    ``planted`` is the index of the sentence that decides the answer in a planted trace (ground
    truth), ``None`` elsewhere; ``kind`` is ``planted``, ``control``, ``real`` or ``agentic``.
    """

    id: str
    question: str
    reasoning: str
    answer: str
    options: tuple[str, ...] = ()
    system: str | None = DEFAULT_SYSTEM
    kind: str = "real"
    planted: int | None = None
    correct: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    history: tuple[tuple[str, str], ...] = ()
    """Worked examples shown before the question, as (user, assistant) turns (few-shot): the
    format a small model follows (``data/fewshot.yaml``)."""

    @property
    def spans(self) -> list[tuple[int, int]]:
        return split_sentences(self.reasoning)

    @property
    def sentences(self) -> list[str]:
        return [self.reasoning[a:b] for a, b in self.spans]

    def check(self) -> None:
        """Raise if the trace cannot be analysed (fewer than two sentences)."""
        n = len(self.spans)
        if n < 2:
            raise SafelabError(
                f"trace {self.id!r} has {n} sentence{'s' if n != 1 else ''}: thought anchors "
                "compare sentences, give a reasoning of at least two sentences"
            )
        if self.planted is not None and not 0 <= self.planted < n:
            raise SafelabError(
                f"trace {self.id!r}: planted={self.planted} is outside its {n} sentences"
            )

    def messages(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        for user, assistant in self.history:
            head += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return [*head, {"role": "user", "content": self.question}]

    def prefix(self, k: int) -> str:
        """The reasoning up to (not including) sentence ``k``; ``k = n`` is the whole reasoning."""
        spans = self.spans
        end = spans[k][0] if k < len(spans) else len(self.reasoning)
        return self.reasoning[:end].rstrip()

    def full_text(self) -> str:
        """The assistant turn as analysed by the white-box views: reasoning + answer line."""
        return f"{self.reasoning.rstrip()}\n{ANSWER_PREFIX} {self.answer}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question,
            "reasoning": self.reasoning,
            "answer": self.answer,
            "options": list(self.options),
            "system": self.system,
            "kind": self.kind,
            "planted": self.planted,
            "correct": self.correct,
            "meta": self.meta,
            **({"history": [list(h) for h in self.history]} if self.history else {}),
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any], where: str = "trace") -> Trace:
        missing = [k for k in ("question", "reasoning", "answer") if not row.get(k)]
        if missing:
            raise SafelabError(
                f"{where}: missing {', '.join(missing)}: each row needs question, reasoning "
                "and answer (or give only a question to let the model write the reasoning)"
            )
        return cls(
            id=str(row.get("id", where)),
            question=str(row["question"]),
            reasoning=str(row["reasoning"]),
            answer=str(row["answer"]),
            options=tuple(str(o) for o in row.get("options") or ()),
            system=row.get("system", DEFAULT_SYSTEM),
            kind=str(row.get("kind", "real")),
            planted=row.get("planted"),
            correct=row.get("correct"),
            meta=dict(row.get("meta") or {}),
            history=parse_history(row.get("history"), where),
        )


def parse_history(value: Any, where: str = "trace") -> tuple[tuple[str, str], ...]:
    """``history`` of a row: a list of ``[user, assistant]`` pairs (or ``{user, assistant}``)."""
    if not value:
        return ()
    out: list[tuple[str, str]] = []
    for h in value:
        pair = (h.get("user"), h.get("assistant")) if isinstance(h, dict) else tuple(h)
        if len(pair) != 2 or not all(isinstance(x, str) and x.strip() for x in pair):
            raise SafelabError(
                f"{where}: each history entry needs a user and an assistant turn "
                '(["question", "reasoning...\nAnswer: X"])'
            )
        out.append((str(pair[0]), str(pair[1])))
    return tuple(out)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file (or a JSON list) of traces or questions."""
    p = Path(path)
    if not p.is_file():
        raise SafelabError(f"{path}: no such file: give a .jsonl of traces or a prompt string")
    text = p.read_text()
    try:
        if p.suffix == ".json":
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise SafelabError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(rows, list) or not rows:
        raise SafelabError(f"{path}: no rows: give one JSON object per line")
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or not r.get("question"):
            raise SafelabError(
                f"{path}:{i + 1}: each row needs a 'question' (and may have reasoning, answer)"
            )
    return rows
