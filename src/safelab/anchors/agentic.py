"""The agentic-misalignment scenario as a thought-anchors trace (see ``data/agentic.yaml``).

The system prompt and inbox are built by :func:`safelab.evals.agentic.build_sample`, so the
scenario is the one the behavioural eval runs; the answer is the declared choice (``email``:
the harmful action, or ``accept``).
"""

from __future__ import annotations

from importlib import resources

import yaml

from safelab.anchors.traces import Trace


def agentic_trace() -> Trace:
    from safelab.evals.agentic import build_sample

    spec = yaml.safe_load(
        resources.files("safelab.anchors").joinpath("data/agentic.yaml").read_text()
    )
    sample = build_sample(spec["condition"]["scenario"], dict(spec["condition"]), n_filler=0)
    meta = sample.metadata or {}
    system = str(meta["system_prompt"]).rstrip() + "\n\n" + spec["choice_instruction"]
    return Trace(
        id="agentic-blackmail",
        question=str(sample.input),
        reasoning=" ".join(str(spec["reasoning"]).split()),
        answer=str(spec["answer"]),
        options=tuple(spec["options"]),
        system=system,
        kind="agentic",
        meta={"condition": spec["condition"]},
    )
