"""Default training texts for SAEs: passages built from the public data in ``../shared/data``.

The statements of the truth CSVs and the instructions of the refusal splits, shuffled with a fixed
seed and joined into passages of about ``per_text`` tokens (the same recipe as
``bench/store.py``), until ``total`` tokens. Nothing is copied into the project.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

from safelab.data import shared_data_root
from safelab.errors import SafelabError


def read_sentences(data: Path | None = None) -> list[str]:
    """The sentences of the shared data (default :func:`safelab.data.shared_data_root`)."""
    data = shared_data_root() if data is None else data
    truth = data / "truth" / "datasets"
    refusal = data / "refusal" / "dataset" / "splits"
    if not truth.is_dir() or not refusal.is_dir():
        raise SafelabError(
            f"shared data not found under {data} (need truth/ and refusal/): pass --data FILE"
        )
    out: list[str] = []
    for f in sorted(truth.glob("*.csv")):
        with f.open(newline="", encoding="utf-8") as fh:
            out.extend(row["statement"].strip() for row in csv.DictReader(fh) if row["statement"])
    for f in sorted(refusal.glob("*.json")):
        out.extend(str(r["instruction"]).strip() for r in json.loads(f.read_text()))
    return [s for s in out if s]


def build_passages(
    sentences: list[str], tokenizer: Any, total: int, per_text: int = 128
) -> list[str]:
    """Passages of about ``per_text`` tokens until about ``total`` tokens."""
    lengths = dict(
        zip(
            sentences,
            (len(i) for i in tokenizer(sentences, add_special_tokens=False)["input_ids"]),
            strict=True,
        )
    )
    texts: list[str] = []
    tokens, seed = 0, 0
    while tokens < total:
        order = list(sentences)
        random.Random(seed).shuffle(order)
        seed += 1
        parts: list[str] = []
        n = 0
        for s in order:
            parts.append(s)
            n += lengths[s] + 1  # the joining space may merge tokens: recount the passage
            if n >= per_text:
                text = " ".join(parts)
                texts.append(text)
                tokens += len(tokenizer(text, add_special_tokens=True)["input_ids"])
                parts, n = [], 0
                if tokens >= total:
                    break
    return texts
