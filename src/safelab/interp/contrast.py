"""Contrast data: labelled prompts with an explicit read position, from real data files.

Four loaders, one result type (:class:`ContrastSet`):

- :func:`load_statements`: a CSV with ``statement,label`` (the truth data sets);
- :func:`load_replies`: lie/honest replies, a ``statement,label`` CSV whose statement ends in
  ``<Speaker>: <reply>``; the reply becomes the assistant's message;
- :func:`load_pairs`: A/B contrast pairs, CAA ``.json`` lists, model-written-eval ``.jsonl``
  (``question, answer_matching_behavior, answer_not_matching_behavior``), multiple-choice
  ``prompt, correct, incorrect`` (MMLU in CAA's format), or generic ``prompt, positive,
  negative`` JSONL; each pair gives a positive (label 1) and a negative (label 0) example.

Every example is encoded so that its token ids *end at the read token*: the last token of the
statement or reply, or the first answer token where the two answers of a pair differ (the
answer letter of ``(A)`` / ``(B)``). The read position is then

- ``last``: that token;
- ``mean``: the mean over the statement/reply/answer tokens;
- an integer: a token index, as :func:`safelab.models.capture.capture` takes it.

Templates: ``raw`` uses the text as is; ``chat`` renders the model's chat template (a
statement becomes the assistant's message after ``user_prompt``; a pair's question is the
user's message and the answer starts the assistant's).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from safelab.data import read_jsonl_rows
from safelab.errors import SafelabError
from safelab.models.inputs import Encoded, Position

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel

Template = Literal["raw", "chat"]
ReadPosition = Literal["last", "mean"] | int
DEFAULT_USER_PROMPT = "Tell me a fact."
_TRUE = {"1", "1.0", "true", "yes"}
_FALSE = {"0", "0.0", "false", "no"}


@dataclass(frozen=True)
class Example:
    """One labelled example: an optional user prompt, the text read, and a 0/1 label.

    For statements ``prompt`` is empty (raw) or the user turn (chat); for pairs ``prompt`` is
    the question and ``text`` the answer; ``answer_stop`` cuts the answer after the first token
    where the pair's two answers differ (``None``: keep the whole text).
    """

    text: str
    label: int
    prompt: str = ""
    where: str = ""
    """``file:line`` it came from."""
    pair: int = -1
    """Index of the A/B pair (-1 for statements)."""
    answer_stop: int | None = None


@dataclass
class ContrastSet:
    """Labelled examples from one file, plus how to turn them into model inputs."""

    name: str
    source: str
    examples: list[Example]
    kind: Literal["statements", "replies", "pairs"]
    template: Template = "raw"
    position: ReadPosition = "last"
    file_hash: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def labels(self) -> list[int]:
        return [e.label for e in self.examples]

    @property
    def data_hash(self) -> str:
        """Hash of the file bytes and every option that changes the inputs."""
        h = hashlib.sha256(self.file_hash.encode())
        picked = [self.meta.get("limit"), self.meta.get("limit_seed")]
        h.update(
            json.dumps([self.kind, self.template, str(self.position), len(self), picked]).encode()
        )
        return h.hexdigest()[:16]

    def sample(self, limit: int | None, seed: int = 0) -> ContrastSet:
        """A seeded random subset of ``limit`` examples (whole pairs for pair data), in file order."""
        if limit is None or limit >= len(self):
            return self
        if limit < 2:
            raise SafelabError(f"limit must be at least 2, got {limit}")
        rng = np.random.default_rng(seed)
        if self.kind == "pairs":
            n_pairs = max(e.pair for e in self.examples) + 1
            keep_pairs = set(rng.choice(n_pairs, size=max(1, limit // 2), replace=False).tolist())
            idx = [i for i, e in enumerate(self.examples) if e.pair in keep_pairs]
        else:
            idx = sorted(rng.choice(len(self), size=limit, replace=False).tolist())
        out = self.subset(idx)
        out.meta.update(limit=limit, limit_seed=seed)
        return out

    def subset(self, idx: Sequence[int]) -> ContrastSet:
        return ContrastSet(
            self.name,
            self.source,
            [self.examples[i] for i in idx],
            self.kind,
            self.template,
            self.position,
            self.file_hash,
            dict(self.meta),
        )

    def capture_position(self) -> Position:
        """The position to hand to capture (``mean`` reads the response span, then averages)."""
        if self.position == "mean":
            return "response"
        if self.position == "last":
            return "last"
        return int(self.position)

    def encode(self, model: WhiteBoxModel) -> list[Encoded]:
        """Token ids ending at the read token, with the span that ``mean`` averages over."""
        return [encode_example(model, e, self.template) for e in self.examples]


def encode_example(model: WhiteBoxModel, e: Example, template: Template) -> Encoded:
    tok = model.tokenizer
    if template == "chat":
        messages = [{"role": "user", "content": e.prompt}] if e.prompt else []
        prefix = model.render_chat(messages, add_generation_prompt=True) if messages else ""
        head = list(tok(prefix, add_special_tokens=False)["input_ids"]) if prefix else []
        body = list(tok(e.text, add_special_tokens=False)["input_ids"])
    elif template == "raw":
        lead = f"{e.prompt}\n" if e.prompt else ""
        head = list(tok(lead, add_special_tokens=True)["input_ids"]) if lead else []
        body = list(tok(e.text, add_special_tokens=not head)["input_ids"])
    else:
        raise SafelabError(f"unknown template {template!r}: use raw or chat")
    if e.answer_stop is not None:
        body = body[: e.answer_stop]
    if not body:
        raise SafelabError(f"{e.where}: the text is empty after tokenising")
    return Encoded(head + body, (len(head), len(head) + len(body)))


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def check_data_file(path: str | Path) -> Path:
    """``path`` as a Path, or one line saying the contrast data file is not there."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise SafelabError(
            f"data file not found: {p}: give a CSV (statement,label) or JSONL of pairs"
        )
    return p


def _parse_label(raw: str | None, where: str) -> int:
    value = (raw or "").strip().lower()
    if value in _TRUE:
        return 1
    if value in _FALSE:
        return 0
    raise SafelabError(f"{where}: label {raw!r} is not 0/1 (or true/false): fix or remove the row")


def _read_statement_rows(path: Path) -> list[tuple[str, int, str]]:
    rows: list[tuple[str, int, str]] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            if "statement" not in fields or "label" not in fields:
                raise SafelabError(
                    f"{path}:1: header is {','.join(fields) or '(empty)'}; a statement CSV needs "
                    "the columns statement,label"
                )
            for row in reader:
                where = f"{path}:{reader.line_num}"
                text = (row.get("statement") or "").strip()
                if not text:
                    raise SafelabError(f"{where}: empty statement: fix or remove the row")
                rows.append((text, _parse_label(row.get("label"), where), where))
    except UnicodeDecodeError as e:
        raise SafelabError(f"{path}: not UTF-8 text ({e.reason}): save it as UTF-8") from None
    except csv.Error as e:
        raise SafelabError(f"{path}: malformed CSV ({e})") from None
    if not rows:
        raise SafelabError(f"{path}: no rows: a statement CSV needs at least one labelled row")
    return rows


def _check_both_labels(examples: Sequence[Example], path: Path) -> None:
    labels = {e.label for e in examples}
    if labels != {0, 1}:
        raise SafelabError(
            f"{path}: every row has label {labels.pop()}: a probe needs both true (1) and false (0) rows"
        )


def load_statements(
    path: str | Path,
    *,
    template: Template = "raw",
    position: ReadPosition = "last",
    user_prompt: str = DEFAULT_USER_PROMPT,
    limit: int | None = None,
    seed: int = 0,
) -> ContrastSet:
    """True/false statements from a ``statement,label`` CSV (other columns are ignored).

    Args:
        template: ``raw`` reads the statement as plain text; ``chat`` makes it the assistant's
            answer to ``user_prompt``.
        limit: keep a seeded random sample of ``limit`` rows (every row is still parsed).
        seed: the sample's seed.
    """
    p = check_data_file(path)
    prompt = user_prompt if template == "chat" else ""
    examples = [Example(t, y, prompt, w) for t, y, w in _read_statement_rows(p)]
    _check_both_labels(examples, p)
    data = ContrastSet(p.stem, str(p), examples, "statements", template, position, file_hash(p))
    return data.sample(limit, seed)


_SPEAKER = re.compile(r"(?:^|\s)([A-Z][\w .'-]{0,40}):\s")


def split_reply(text: str) -> tuple[str, str] | None:
    """Split ``"<scenario> ... <Speaker>: <reply>"`` at the last speaker tag."""
    matches = list(_SPEAKER.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    prompt, reply = text[: m.start()].strip(), text[m.end() :].strip()
    return (prompt, reply) if prompt and reply else None


def load_replies(
    path: str | Path,
    *,
    template: Template = "chat",
    position: ReadPosition = "mean",
    limit: int | None = None,
    seed: int = 0,
) -> ContrastSet:
    """Lie (0) / honest (1) replies: the scenario is the user turn, the reply the assistant's.

    Rows look like ``"You are a salesperson AI. ... Human: Is it cotton? AI: No, it is not.",1``.
    """
    p = check_data_file(path)
    examples = []
    for text, label, where in _read_statement_rows(p):
        split = split_reply(text)
        if split is None:
            raise SafelabError(
                f"{where}: no '<Speaker>: <reply>' at the end of the statement: "
                "a reply row ends with e.g. 'AI: <the reply>'"
            )
        examples.append(Example(split[1], label, split[0], where))
    _check_both_labels(examples, p)
    data = ContrastSet(p.stem, str(p), examples, "replies", template, position, file_hash(p))
    return data.sample(limit, seed)


@dataclass(frozen=True)
class Pair:
    """An A/B contrast pair: the question and the behaviour-matching / non-matching answers."""

    question: str
    matching: str
    not_matching: str
    where: str = ""


_PAIR_KEYS = (
    ("question", "answer_matching_behavior", "answer_not_matching_behavior"),
    ("prompt", "correct", "incorrect"),
    ("prompt", "positive", "negative"),
)


def _pair_from_record(rec: Any, where: str) -> Pair:
    if not isinstance(rec, dict):
        raise SafelabError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    for q, pos, neg in _PAIR_KEYS:
        if pos in rec and neg in rec:
            question, a, b = rec.get(q, ""), rec[pos], rec[neg]
            if isinstance(a, list):  # some model-written evals list several matching answers
                a = a[0] if a else ""
            if isinstance(b, list):
                b = b[0] if b else ""
            if not all(isinstance(v, str) for v in (question, a, b)):
                raise SafelabError(f"{where}: {q}, {pos} and {neg} must be strings")
            a, b = a.strip(), b.strip()
            if not a or not b or a == b:
                raise SafelabError(
                    f"{where}: {pos} and {neg} must be two different, non-empty answers"
                )
            return Pair(question.strip(), a, b, where)
    raise SafelabError(
        f"{where}: a pair needs question/answer_matching_behavior/answer_not_matching_behavior, "
        f"prompt/correct/incorrect or prompt/positive/negative; got keys {', '.join(sorted(rec))}"
    )


def read_pairs(path: str | Path) -> list[Pair]:
    """Parse a CAA ``.json`` list or a ``.jsonl`` of pair records."""
    p = check_data_file(path)
    text = p.read_text(encoding="utf-8")
    pairs: list[Pair] = []
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise SafelabError(f"{p}:{e.lineno}: invalid JSON ({e.msg})") from None
        pairs = [_pair_from_record(r, f"{p}:item {i}") for i, r in enumerate(records)]
    else:
        pairs = [_pair_from_record(rec, f"{p}:{n}") for n, rec in read_jsonl_rows(p, text=text)]
    if not pairs:
        raise SafelabError(f"{p}: no pairs found")
    return pairs


def answer_split(model: WhiteBoxModel, a: str, b: str) -> int:
    """Number of answer tokens up to and including the first token where ``a`` and ``b`` differ."""
    ta = model.tokenizer(a, add_special_tokens=False)["input_ids"]
    tb = model.tokenizer(b, add_special_tokens=False)["input_ids"]
    n = 0
    while n < min(len(ta), len(tb)) and ta[n] == tb[n]:
        n += 1
    if n >= len(ta) or n >= len(tb):
        raise SafelabError(
            f"answers {a!r} and {b!r} do not differ in any token: one is a prefix of the other"
        )
    return n + 1


def load_pairs(
    path: str | Path,
    model: WhiteBoxModel,
    *,
    template: Template = "chat",
    position: ReadPosition = "last",
    limit: int | None = None,
    seed: int = 0,
) -> ContrastSet:
    """A/B pairs as labelled examples: the matching answer (1) and the other one (0).

    Each answer is cut after the first token where the two answers differ (``(A`` vs ``(B``),
    so ``last`` reads the answer letter, as contrastive activation addition does. ``limit``
    counts pairs.
    """
    p = check_data_file(path)
    pairs = read_pairs(p)
    examples = []
    for i, pr in enumerate(pairs):
        stop = answer_split(model, pr.matching, pr.not_matching)
        examples.append(Example(pr.matching, 1, pr.question, pr.where, i, stop))
        examples.append(Example(pr.not_matching, 0, pr.question, pr.where, i, stop))
    data = ContrastSet(_pair_name(p), str(p), examples, "pairs", template, position, file_hash(p))
    return data.sample(None if limit is None else 2 * limit, seed)


def _pair_name(p: Path) -> str:
    # CAA files are all called generate_dataset.json / test_dataset_ab.json: use the folder.
    return p.parent.name if p.stem.startswith(("generate_dataset", "test_dataset")) else p.stem


def load_contrast(
    path: str | Path,
    model: WhiteBoxModel,
    *,
    kind: Literal["auto", "statements", "replies", "pairs"] = "auto",
    template: Template | None = None,
    position: ReadPosition | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> ContrastSet:
    """Any supported file: ``.csv`` is statements (or replies), ``.json``/``.jsonl`` pairs."""
    p = check_data_file(path)
    if kind == "auto":
        kind = "statements" if p.suffix.lower() == ".csv" else "pairs"
    if kind == "statements":
        return load_statements(
            p, template=template or "raw", position=position or "last", limit=limit, seed=seed
        )
    if kind == "replies":
        return load_replies(
            p, template=template or "chat", position=position or "mean", limit=limit, seed=seed
        )
    if kind == "pairs":
        return load_pairs(
            p,
            model,
            template=template or "chat",
            position=position or "last",
            limit=limit,
            seed=seed,
        )
    raise SafelabError(f"unknown data kind {kind!r}: use auto, statements, replies or pairs")


def parse_position(value: str) -> ReadPosition:
    """``last``, ``mean`` or an integer token index, from a command-line string."""
    if value in ("last", "mean"):
        return value  # type: ignore[return-value]
    try:
        return int(value)
    except ValueError:
        raise SafelabError(
            f"unknown read position {value!r}: use last, mean or a token index"
        ) from None
