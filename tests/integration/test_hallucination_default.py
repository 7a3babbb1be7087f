"""``safelab/hallucination`` on the default model through the ``safelab/`` provider (about a minute)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_real_tables_parse_and_the_task_scores_while_the_model_writes(
    shared_data: Path, tmp_path: Path
) -> None:
    import torch
    from inspect_ai import eval

    from safelab.hallucination.tables import known_tables, load_table
    from safelab.hallucination.task import hallucination
    from safelab.interp.probes import LinearProbe, ProbeConfig

    folder = shared_data / "truth" / "datasets"
    sizes = {name: len(load_table(name, folder).facts) for name in known_tables()}
    assert sizes == {
        "cities": 748,
        "element_symb": 93,
        "inventors": 229,
        "animal_class": 80,
        "sp_en_trans": 174,
    }
    # a probe of the default model's width; the wiring, not its direction, is under test
    torch.manual_seed(0)
    probe = LinearProbe(ProbeConfig("blocks.12.resid_post", 576), torch.randn(576) * 0.01, 0.0)
    probe.save(tmp_path / "p")
    (log,) = eval(
        hallucination(tables="cities", n=2, samples=1, max_tokens=10, data_dir=str(folder)),
        model="safelab/default",
        model_args={"probe": str(tmp_path / "p")},
        log_dir=str(tmp_path / "logs"),
        display="none",
    )
    assert log.status == "success", log.error
    samples = log.samples or []
    assert len(samples) == 2
    for s in samples:
        record = s.output.metadata["safelab"]["probes"]["p"]
        assert len(record["scores"]) == len(s.output.choices[0].logprobs.content)
        assert len(s.metadata["samples"]) == 1
        if "fabricated" in s.metadata:
            for name in ("probe", "logprob", "entropy", "consistency"):
                assert not math.isnan(float(s.scores[f"hallucination_{name}"].value))
            assert s.scores["hallucination_probe"].value == max(
                record["scores"][i] for i in s.metadata["span"]
            )
        else:
            assert s.metadata["excluded"] in ("no_attribute", "no_tokens")
