"""Binary tasks for weak-to-strong experiments, and their fixed weak-train / strong-train / test splits.

A :class:`BinaryTask` is a list of texts with 0/1 labels. Where they come from:

- built-in offline tasks over ``../shared/data`` (:data:`BUILTIN_TASKS`): true/false statements
  (``truth-*``), the lie-detector question set turned into true/false statements
  (``lie-detector``), model-written-eval persona statements (``mwe-*``: does the statement
  express the persona?) and harmful vs harmless instructions (``harmful``, a sentiment-like
  contrast);
- any ``text,label`` (or ``statement,label``) CSV or JSONL file: :func:`load_labelled_file`;
- the Hugging Face hub for online users (``hub:sciq``, ``hub:boolq``, ``hub:anthropic_hh``),
  through the optional ``datasets`` package: :func:`load_hub_task`.

Splits (:func:`split_task`) are fixed: rows are capped at ``max_rows`` by a seeded, stratified
sample, then shuffled with :data:`SPLIT_SEED` and cut into weak-train (35%), strong-train (35%)
and test (30%), stratified by label so each part keeps the task's class balance. Tasks of
paired statements carry groups (``truth-cities``: the city; ``lie-detector``: the fact), and
whole groups go to one part: otherwise a bag of words would see "Krasnodar ... Russia" labelled
true in training and score its false twin by the city's name, which makes it worse than chance.
The weak supervisor learns from weak-train's ground truth, labels strong-train, and the student learns
from those labels; every model is scored on test. The three parts never share a row index.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from safelab.data import shared_data_root
from safelab.errors import SafelabError

SPLIT_SEED = 0
"""The one seed that fixes every task's split; training seeds never change it."""
SPLIT_FRACTIONS = (0.35, 0.35, 0.30)
"""weak-train, strong-train, test."""
DEFAULT_MAX_ROWS = 1500
_TRUE = {"1", "1.0", "true", "yes"}
_FALSE = {"0", "0.0", "false", "no"}


@dataclass
class BinaryTask:
    """Texts with 0/1 labels, and where they came from."""

    name: str
    texts: list[str]
    labels: list[int]
    source: str
    meta: dict[str, Any] = field(default_factory=dict)
    groups: list[str] | None = None
    """Rows sharing a group (a true/false pair about one city) always land in one split."""

    def __post_init__(self) -> None:
        if self.groups is not None and len(self.groups) != len(self.texts):
            raise SafelabError(f"task {self.name}: {len(self.groups)} groups for {len(self)} rows")
        if len(self.texts) != len(self.labels):
            raise SafelabError(
                f"task {self.name}: {len(self.texts)} texts, {len(self.labels)} labels"
            )
        classes = set(self.labels)
        if classes - {0, 1}:
            raise SafelabError(f"task {self.name}: labels must be 0/1, got {sorted(classes)}")
        if len(classes) < 2:
            only = classes.pop() if classes else "none"
            raise SafelabError(
                f"task {self.name} ({self.source}): every row has label {only}: "
                "weak-to-strong needs both classes 0 and 1"
            )

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: Sequence[int], **meta: Any) -> BinaryTask:
        return BinaryTask(
            self.name,
            [self.texts[i] for i in idx],
            [self.labels[i] for i in idx],
            self.source,
            {**self.meta, **meta},
            None if self.groups is None else [self.groups[i] for i in idx],
        )

    @property
    def data_hash(self) -> str:
        h = hashlib.sha256()
        for t, y in zip(self.texts, self.labels, strict=True):
            h.update(f"{y}\t{t}\n".encode())
        return h.hexdigest()[:16]


@dataclass
class Splits:
    """Row indices of the three disjoint parts of one task."""

    weak_train: list[int]
    strong_train: list[int]
    test: list[int]
    seed: int = SPLIT_SEED

    def sizes(self) -> dict[str, int]:
        return {
            "weak_train": len(self.weak_train),
            "strong_train": len(self.strong_train),
            "test": len(self.test),
        }

    def describe(self, task: BinaryTask) -> str:
        y = np.asarray(task.labels)
        parts = [
            f"{name} {len(idx)} ({int(y[idx].sum())} positive)"
            for name, idx in (
                ("weak-train", self.weak_train),
                ("strong-train", self.strong_train),
                ("test", self.test),
            )
        ]
        return f"{task.name}: " + ", ".join(parts)


def cap_rows(task: BinaryTask, max_rows: int | None, seed: int = SPLIT_SEED) -> BinaryTask:
    """A seeded, label-stratified sample of at most ``max_rows`` rows (file order kept)."""
    if max_rows is None or len(task) <= max_rows:
        return task
    if max_rows < 20:
        raise SafelabError(f"max_rows must be at least 20, got {max_rows}")
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    if task.groups is not None:
        members = _members(task.groups)
        for g in rng.permutation(len(members)):
            if len(keep) >= max_rows:
                break
            keep.extend(members[g])
    else:
        y = np.asarray(task.labels)
        for c in (0, 1):
            idx = np.flatnonzero(y == c)
            n = round(max_rows * len(idx) / len(y))
            keep.extend(rng.choice(idx, size=n, replace=False).tolist())
    return task.subset(sorted(keep), rows_before_cap=len(task), max_rows=max_rows)


def _members(groups: Sequence[str]) -> list[list[int]]:
    """Row indices of each group, groups in order of first appearance."""
    index: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        index.setdefault(g, []).append(i)
    return list(index.values())


def split_task(
    task: BinaryTask,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
    seed: int = SPLIT_SEED,
) -> Splits:
    """Disjoint weak-train / strong-train / test indices, stratified by label."""
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise SafelabError(
            f"split fractions {list(fractions)}: give three positive numbers summing to 1"
        )
    y = np.asarray(task.labels)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    if task.groups is not None:
        # Whole groups in shuffled order, cut where the running row count passes each fraction.
        members = _members(task.groups)
        bounds = np.cumsum(fractions)[:2] * len(task)
        done = 0
        for g in rng.permutation(len(members)):
            k = int((done >= bounds).sum())
            parts[k].extend(members[g])
            done += len(members[g])
    for c in (0, 1) if task.groups is None else ():
        idx = rng.permutation(np.flatnonzero(y == c))
        a = round(fractions[0] * len(idx))
        b = a + round(fractions[1] * len(idx))
        for k, chunk in enumerate((idx[:a], idx[a:b], idx[b:])):
            parts[k].extend(int(i) for i in chunk)
    splits = Splits(sorted(parts[0]), sorted(parts[1]), sorted(parts[2]), seed=seed)
    for name, part in zip(("weak-train", "strong-train", "test"), parts, strict=True):
        if set(y[part].tolist()) != {0, 1}:
            raise SafelabError(
                f"task {task.name}: the {name} split has {len(part)} rows and not both classes: "
                "use a larger task (or a larger max_rows)"
            )
    return splits


# -- loaders -------------------------------------------------------------------------------


def _label(raw: Any, where: str) -> int:
    if isinstance(raw, bool):
        return int(raw)
    value = str(raw if raw is not None else "").strip().lower()
    if value in _TRUE:
        return 1
    if value in _FALSE:
        return 0
    raise SafelabError(f"{where}: label {raw!r} is not 0/1 (or true/false): fix or remove the row")


def _check_file(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise SafelabError(f"task file not found: {p}: give a text,label CSV or JSONL")
    return p


_TEXT_KEYS = ("text", "statement")


def load_labelled_file(
    path: str | Path, name: str | None = None, group: str | None = "group"
) -> BinaryTask:
    """Any CSV or JSONL with a text (``text`` or ``statement``) and a 0/1 ``label`` per row.

    If rows have a ``group`` field (or the named one), rows of one group stay in one split.
    """
    p = _check_file(path)
    rows: list[tuple[str, int]] = []
    groups: list[str] = []
    try:
        if p.suffix.lower() == ".csv":
            with p.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                fields = reader.fieldnames or []
                text_key = next((k for k in _TEXT_KEYS if k in fields), None)
                if text_key is None or "label" not in fields:
                    raise SafelabError(
                        f"{p}:1: header is {','.join(fields) or '(empty)'}; a task CSV needs "
                        "the columns text,label (or statement,label)"
                    )
                for row in reader:
                    where = f"{p}:{reader.line_num}"
                    text = (row.get(text_key) or "").strip()
                    if not text:
                        raise SafelabError(f"{where}: empty text: fix or remove the row")
                    rows.append((text, _label(row.get("label"), where)))
                    if group and group in fields:
                        groups.append(str(row.get(group)))
        else:
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                where = f"{p}:{n}"
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SafelabError(
                        f"{where}: invalid JSON ({e.msg}): one object per line"
                    ) from None
                text_key = next((k for k in _TEXT_KEYS if isinstance(rec, dict) and k in rec), None)
                if text_key is None or "label" not in rec:
                    raise SafelabError(f"{where}: a task row needs text (or statement) and label")
                text = str(rec[text_key]).strip()
                if not text:
                    raise SafelabError(f"{where}: empty text: fix or remove the row")
                rows.append((text, _label(rec["label"], where)))
                if group and group in rec:
                    groups.append(str(rec[group]))
    except UnicodeDecodeError as e:
        raise SafelabError(f"{p}: not UTF-8 text ({e.reason}): save it as UTF-8") from None
    except csv.Error as e:
        raise SafelabError(f"{p}: malformed CSV ({e})") from None
    if not rows:
        raise SafelabError(f"{p}: no rows: a task file needs labelled rows")
    if groups and len(groups) != len(rows):
        raise SafelabError(f"{p}: some rows lack the {group!r} field: give it on every row or none")
    texts, labels = [t for t, _ in rows], [y for _, y in rows]
    return BinaryTask(name or p.stem, texts, labels, str(p), groups=groups or None)


def _truth(file: str, group: str | None = None) -> Callable[[Path], BinaryTask]:
    def load(root: Path) -> BinaryTask:
        return load_labelled_file(root / "truth" / "datasets" / file, group=group)

    return load


def load_lie_detector(root: Path) -> BinaryTask:
    """The lie-detector question set as statements: each fact's true and false completion.

    Both share the fact's own stem ("Vinson Massif is located in the continent of") and differ
    only in the answer (Antarctica / United States): the set's ready-made ``false_statement``
    is worded differently from the stem, which a bag of words would learn instead of the fact.
    """
    p = _check_file(root / "lie-detector" / "data" / "raw_questions" / "questions_1000_all.json")
    records = json.loads(p.read_text(encoding="utf-8"))
    texts: list[str] = []
    labels: list[int] = []
    groups: list[str] = []
    for key, rec in records.items():
        stem, answer, false = rec.get("statement"), rec.get("answer"), rec.get("false_answer")
        if not (isinstance(stem, str) and isinstance(answer, str) and isinstance(false, str)):
            raise SafelabError(f"{p}: item {key} lacks statement/answer/false_answer")
        texts += [f"{stem.strip()} {answer.strip()}.", f"{stem.strip()} {false.strip()}."]
        labels += [1, 0]
        groups += [str(key), str(key)]
    return BinaryTask("lie-detector", texts, labels, str(p), groups=groups)


def load_persona(root: Path, stem: str) -> BinaryTask:
    """A model-written-eval persona file: 1 when the statement expresses the persona."""
    p = _check_file(root / "model-written-evals" / "persona" / f"{stem}.jsonl")
    texts: list[str] = []
    labels: list[int] = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        rec = json.loads(line)
        match = str(rec.get("answer_matching_behavior", "")).strip().lower()
        if "statement" not in rec or match not in ("yes", "no"):
            raise SafelabError(f"{p}:{n}: a persona row needs statement and a Yes/No answer")
        texts.append(str(rec["statement"]).strip())
        labels.append(int(match == "yes"))
    return BinaryTask(f"mwe-{stem}", texts, labels, str(p))


def load_harmful(root: Path, seed: int = SPLIT_SEED) -> BinaryTask:
    """Harmful (1) vs harmless (0) instructions from the refusal splits (train parts), balanced.

    The harmless split is far larger, so a seeded sample of as many harmless instructions as
    there are harmful ones is kept.
    """
    folder = root / "refusal" / "dataset" / "splits"
    harmful, harmless = (
        [str(r["instruction"]).strip() for r in json.loads(_check_file(folder / f).read_text())]
        for f in ("harmful_train.json", "harmless_train.json")
    )
    n = min(len(harmful), len(harmless))
    rng = np.random.default_rng(seed)
    keep = sorted(rng.choice(len(harmless), size=n, replace=False).tolist())
    harmful = (
        sorted(rng.choice(harmful, size=n, replace=False).tolist()) if n < len(harmful) else harmful
    )
    texts = harmful + [harmless[i] for i in keep]
    return BinaryTask("harmful", texts, [1] * len(harmful) + [0] * n, str(folder))


BUILTIN_TASKS: dict[str, Callable[[Path], BinaryTask]] = {
    "truth-cities": _truth("cities.csv", group="city"),
    "truth-neg-cities": _truth("neg_cities.csv", group="city"),
    "truth-sp-en-trans": _truth("sp_en_trans.csv"),
    "truth-larger-than": _truth("larger_than.csv", group="n1"),
    "truth-facts": _truth("facts.csv"),
    "truth-common-claim": _truth("common_claim_true_false.csv"),
    "truth-counterfact": _truth("counterfact_true_false.csv"),
    "lie-detector": load_lie_detector,
    "mwe-power": lambda root: load_persona(root, "desire-for-acquiring-power"),
    "mwe-no-shut-down": lambda root: load_persona(root, "no-shut-down"),
    "mwe-escape-sandbox": lambda root: load_persona(root, "desire-to-escape-sandbox"),
    "harmful": load_harmful,
}
HUB_TASKS = ("sciq", "boolq", "anthropic_hh")


def load_task(spec: str, data_root: str | Path | None = None) -> BinaryTask:
    """A task by name (:data:`BUILTIN_TASKS`), ``hub:<name>``, or a CSV/JSONL path."""
    root = Path(data_root) if data_root is not None else shared_data_root()
    if spec in BUILTIN_TASKS:
        task = BUILTIN_TASKS[spec](root)
        task.name = spec
        return task
    if spec.startswith("hub:"):
        return load_hub_task(spec[4:])
    if spec.lower().endswith((".csv", ".jsonl", ".json")) or Path(spec).is_file():
        return load_labelled_file(spec)
    raise SafelabError(
        f"unknown task {spec!r}: use one of {', '.join(BUILTIN_TASKS)}, "
        f"hub:{{{','.join(HUB_TASKS)}}} or a text,label CSV/JSONL path"
    )


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise SafelabError(
            "hub tasks need the optional `datasets` package: `pip install datasets` "
            "(and network access), or use an offline task"
        ) from None
    return datasets


def load_hub_task(name: str, split: str = "train", seed: int = SPLIT_SEED) -> BinaryTask:
    """sciq, boolq or anthropic_hh from the Hugging Face hub, binarised as in Burns et al.

    - sciq: the question with the correct answer (1) or one random distractor (0), one each;
    - boolq: the passage and question, labelled by the yes/no answer;
    - anthropic_hh: the chosen (1) or the rejected (0) conversation, one picked per pair.
    """
    if name not in HUB_TASKS:
        raise SafelabError(f"unknown hub task {name!r}: use one of {', '.join(HUB_TASKS)}")
    ds = _datasets()
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    labels: list[int] = []
    if name == "sciq":
        rows = ds.load_dataset("allenai/sciq", split=split)
        for r in rows:
            wrong = [r["distractor1"], r["distractor2"], r["distractor3"]][int(rng.integers(3))]
            for answer, label in ((r["correct_answer"], 1), (wrong, 0)):
                texts.append(f"Q: {r['question']} A: {answer}")
                labels.append(label)
        hub_id = "allenai/sciq"
    elif name == "boolq":
        rows = ds.load_dataset("google/boolq", split=split)
        for r in rows:
            texts.append(f"Passage: {r['passage']}\nQuestion: {r['question']}?")
            labels.append(int(bool(r["answer"])))
        hub_id = "google/boolq"
    else:
        rows = ds.load_dataset("Anthropic/hh-rlhf", split=split)
        for r in rows:
            label = int(rng.integers(2))
            texts.append(str(r["chosen"] if label else r["rejected"]).strip())
            labels.append(label)
        hub_id = "Anthropic/hh-rlhf"
    return BinaryTask(f"hub:{name}", texts, labels, f"{hub_id} ({split})")
