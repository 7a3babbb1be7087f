"""Ground-truth traces: one planted sentence decides the answer, or (controls) none does.

Built from ``data/planted.yaml``: a two-option question, a reasoning of neutral sentences that
favour neither option and, in a planted trace, one *decider* sentence committing to an option at
a random position. The planted option alternates between the two so that the model's prior
preference cannot stand in for the planted sentence.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np
import yaml

from safelab.anchors.traces import Trace


def _spec() -> dict[str, Any]:
    text = resources.files("safelab.anchors").joinpath("data/planted.yaml").read_text()
    return dict(yaml.safe_load(text))


def planted_traces(
    n_planted: int, n_controls: int, n_sentences: int = 5, seed: int = 0
) -> list[Trace]:
    """``n_planted`` planted traces then ``n_controls`` controls, ``n_sentences`` sentences each."""
    spec = _spec()
    rng = np.random.default_rng(seed)
    questions = spec["questions"]
    neutral: list[str] = spec["neutral"]
    out: list[Trace] = []
    for t in range(n_planted + n_controls):
        q = questions[t % len(questions)]
        options = tuple(str(o) for o in q["options"])
        planted = t < n_planted
        picks = [neutral[int(i)] for i in rng.choice(len(neutral), n_sentences, replace=False)]
        if planted:
            option = options[(t // len(questions) + t) % 2]
            decider = spec["deciders"][int(rng.integers(len(spec["deciders"])))]
            pos = int(rng.integers(0, n_sentences))
            picks[pos] = decider.format(option=option)
            answer: str = option
        else:
            pos, answer = -1, options[t % 2]
        out.append(
            Trace(
                id=f"{'planted' if planted else 'control'}-{t:03d}",
                question=q["question"] + spec["suffix"],
                reasoning=" ".join(picks),
                answer=answer,
                options=options,
                kind="planted" if planted else "control",
                planted=pos if planted else None,
            )
        )
    return out
