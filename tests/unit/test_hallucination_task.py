"""The ``safelab/hallucination`` task end to end with mockllm: labels, span scorers, ROC."""

from __future__ import annotations

from pathlib import Path

from inspect_ai import eval
from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessageAssistant,
    Logprob,
    Logprobs,
    ModelOutput,
    TopLogprob,
    get_model,
)

from safelab.hallucination.task import hallucination, table_samples, truncated_entropy
from safelab.monitors.roc import monitor_report
from tests.unit.test_hallucination_run import write_cities


def output(
    pieces: list[str], probe: list[float], logprob: list[float], spread: float
) -> ModelOutput:
    """An answer as the safelab/ provider returns it: logprobs and per-token probe scores."""
    content = [
        Logprob(
            token=t,
            logprob=lp,
            top_logprobs=[TopLogprob(token=t, logprob=lp), TopLogprob(token="x", logprob=spread)],
        )
        for t, lp in zip(pieces, logprob, strict=True)
    ]
    message = ChatMessageAssistant(content="".join(pieces), model="mockllm")
    return ModelOutput(
        model="mockllm",
        choices=[
            ChatCompletionChoice(
                message=message, stop_reason="stop", logprobs=Logprobs(content=content)
            )
        ],
        metadata={"safelab": {"probes": {"p": {"tokens": pieces, "scores": probe}}}},
    )


def test_task_labels_answers_and_scores_the_span(tmp_path: Path) -> None:
    truth = dict(write_cities(tmp_path, n=8))
    samples = table_samples(["cities"], 4, 0, str(tmp_path))
    entities = [s.metadata["entity"] for s in samples]
    outputs = []
    for k, e in enumerate(entities):
        right = truth[e]
        wrong = next(c for c in truth.values() if c != right)
        if k % 4 == 3:  # states no country: excluded, unscored by every monitor
            outputs += [ModelOutput.from_content("mockllm", "I do not know.")] * 3
            continue
        bad = k % 2 == 1
        said = wrong if bad else right
        pieces = ["It", " is", " in", f" {said}", "."]
        probe = [0.2, 0.1, 0.1, 0.9 if bad else 0.3, 0.2]
        lp = [-0.1, -0.1, -0.1, -2.5 if bad else -0.2, -0.1]
        outputs.append(output(pieces, probe, lp, -1.0 if bad else -6.0))
        outputs += [
            ModelOutput.from_content("mockllm", f"It is in {right if not bad else c}.")
            for c in ("no", right)
        ]
    (log,) = eval(
        hallucination(tables="cities", n=4, samples=2, data_dir=str(tmp_path)),
        model=get_model("mockllm/model", custom_outputs=outputs),
        log_dir=str(tmp_path / "logs"),
        display="none",
        max_samples=1,
    )
    assert log.status == "success", log.error
    by_entity = {s.metadata["entity"]: s for s in log.samples or []}
    for k, e in enumerate(entities):
        s = by_entity[e]
        if k % 4 == 3:
            assert s.metadata["excluded"] == "no_attribute" and "fabricated" not in s.metadata
            assert all(sc.value != sc.value for sc in s.scores.values())  # NaN: unscored
            continue
        assert s.metadata["fabricated"] == k % 2 and s.metadata["span"] == [3]
        assert s.scores["hallucination_probe"].value == (0.9 if k % 2 else 0.3)
        assert s.scores["hallucination_logprob"].value == (2.5 if k % 2 else 0.2)
        assert s.scores["hallucination_consistency"].value == (1.0 if k % 2 else 0.0)
    report = monitor_report(log.location, "fabricated", n_resamples=50)
    assert report.n_labelled == 3 and report.n_positive == 1
    for name in ("hallucination_probe", "hallucination_logprob", "hallucination_entropy"):
        assert report.monitors[name].auroc == 1.0
        assert report.monitors[name].n_unscored == 0  # the excluded sample has no label
    assert report.monitors["hallucination_consistency"].auroc == 1.0


def test_truncated_entropy() -> None:
    import math

    assert abs(truncated_entropy([math.log(0.5), math.log(0.5)]) - math.log(2)) < 1e-9
    # the missing mass counts as one outcome: a lower bound on the full entropy
    assert abs(truncated_entropy([math.log(0.5)]) - math.log(2)) < 1e-9
    assert truncated_entropy([0.0]) == 0.0
