"""One owner for steering: chat, the CLI and the Inspect provider apply the same thing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from inspect_ai.model import ChatMessageUser, GenerateConfig, get_model

from safelab import cli
from safelab.errors import SafelabError
from safelab.interp import steer_sweep
from safelab.interp.steer_run import default_sweep_layers
from safelab.interp.steering import (
    SteeringConfig,
    SteeringVector,
    resolve_steer,
)
from safelab.models import loading
from safelab.provider import batcher
from safelab.provider.batcher import share_model

SITE = "blocks.1.resid_post"
PROBE = "The quick brown fox"


@pytest.fixture
def saved(tmp_path: Path, tiny_model: Any) -> Path:
    """A vector saved with scale 3 and positions 'last' (not the defaults)."""
    vector = torch.randn(tiny_model.d_model, generator=torch.Generator().manual_seed(1)) * 8
    cfg = SteeringConfig(site=SITE, d_model=tiny_model.d_model, scale=3.0, positions="last")
    SteeringVector(cfg, vector).save(tmp_path / "vec")
    return tmp_path / "vec"


def _record(model: Any, into: list[torch.Tensor]) -> None:
    (logits,) = model.logits([PROBE])
    into.append(logits)


def _via_chat(model: Any, saved: Path, monkeypatch: pytest.MonkeyPatch) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: model)

    def generate(prompts: Any, **kw: Any) -> list[str]:
        _record(model, seen)  # inside the chat's steering context
        return ["ok"]

    monkeypatch.setattr(model, "generate", generate, raising=False)
    assert cli.main(["chat", "--steer", str(saved), "hi"]) == 0
    monkeypatch.undo()
    (logits,) = seen
    return logits


def _via_sweep(model: Any, saved: Path, monkeypatch: pytest.MonkeyPatch) -> torch.Tensor:
    seen: list[torch.Tensor] = []

    def probs(m: Any, test: Any, batch_size: int = 16) -> np.ndarray:
        _record(m, seen)
        return np.zeros(2)

    monkeypatch.setattr(steer_sweep, "choice_probs", probs)
    vec = SteeringVector.load(saved)
    steer_sweep.steering_sweep(model, {SITE: vec}, [], [3.0], positions="last", n_resamples=10)
    monkeypatch.undo()
    _, steered = seen  # unsteered baseline first
    return steered


def _via_provider(model: Any, saved: Path, monkeypatch: pytest.MonkeyPatch) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    real = batcher.DecodeBatch.add_many

    def add_many(self: Any, *args: Any, **kwargs: Any) -> Any:  # samples join the decode batch
        _record(self.model, seen)  # inside the provider's intervention context
        return real(self, *args, **kwargs)

    monkeypatch.setattr(batcher.DecodeBatch, "add_many", add_many)
    share_model(model, f"steer-owner-{id(model)}")
    api = get_model(f"safelab/steer-owner-{id(model)}", steer=str(saved)).api
    out = asyncio.run(
        api.generate([ChatMessageUser(content="hi")], [], "none", GenerateConfig(max_tokens=2))
    )
    monkeypatch.undo()
    assert out.metadata["safelab"]["steer"] == {
        "site": SITE,
        "scale": 3.0,
        "positions": "last",
        "method": "mean_diff",
    }
    (logits,) = seen
    return logits


def test_chat_sweep_and_provider_apply_the_same_steering(
    tiny_model: Any, saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (plain,) = tiny_model.logits([PROBE])
    chat = _via_chat(tiny_model, saved, monkeypatch)
    sweep = _via_sweep(tiny_model, saved, monkeypatch)
    provider = _via_provider(tiny_model, saved, monkeypatch)
    assert torch.equal(chat, sweep)
    # The provider computes in its own worker thread, whose OpenMP thread count can differ from
    # the main thread's after earlier tests (float32 sums then differ in the last bits): the
    # same steering within rounding; a different one moves the last position by ~scale x |v|.
    torch.testing.assert_close(provider, chat, atol=1e-5, rtol=1e-5)
    # positions 'last' from the saved cfg: only the last position moves (chat used to steer all)
    assert torch.equal(chat[:-1], plain[:-1])
    assert not torch.allclose(chat[-1], plain[-1])
    (every,) = _logits_under(tiny_model, resolve_steer(saved, positions="all"))
    assert not torch.allclose(every[:-1], plain[:-1])


def _logits_under(model: Any, spec: Any) -> list[torch.Tensor]:
    with spec.apply(model):
        return list(model.logits([PROBE]))


def test_resolve_steer_takes_the_cfg_unless_overridden(saved: Path) -> None:
    spec = resolve_steer(saved)
    assert (spec.site, spec.scale, spec.positions) == (SITE, 3.0, "last")
    spec = resolve_steer(saved, scale=-1, positions="all", site="blocks.0.resid_post")
    assert (spec.site, spec.scale, spec.positions) == ("blocks.0.resid_post", -1.0, "all")
    with pytest.raises(SafelabError, match="unknown steering positions"):
        resolve_steer(saved, positions="first")


def test_sae_feature_specs_go_to_the_sae_feature_resolver(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safelab.sae import steer as sae_steer

    calls: list[tuple[str, int]] = []

    def feature_direction(folder: str, index: int) -> sae_steer.FeatureDirection:
        calls.append((folder, index))
        v = SteeringVector.load(saved)
        return sae_steer.FeatureDirection(v.vector, v.cfg.site, v.cfg.d_model, "", 1.0, "x")

    monkeypatch.setattr(sae_steer, "feature_direction", feature_direction)
    assert resolve_steer("runs/sae#1234", scale=2).scale == 2.0
    assert calls == [("runs/sae", 1234)]


def test_default_sweep_layers_fit_any_depth() -> None:
    assert default_sweep_layers(30) == [3, 6, 9, 12, 15, 18, 21, 24, 27]  # as before on SmolLM2
    assert default_sweep_layers(3) == [0, 1]
    assert default_sweep_layers(1) == [0]
    for n in range(1, 80):
        layers = default_sweep_layers(n)
        assert layers and all(0 <= x < n for x in layers)


def test_steer_sweep_runs_on_a_three_layer_model(tiny_folder: Path, tmp_path: Path) -> None:
    rows = [
        {
            "question": f"Is {i} safe?\n (A) Yes\n (B) No",
            "answer_matching_behavior": "(A)" if i % 2 else "(B)",
            "answer_not_matching_behavior": "(B)" if i % 2 else "(A)",
        }
        for i in range(8)
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "sweep"
    argv = ["steer", "sweep", "--data", str(data), "--out", str(out), "--model", str(tiny_folder)]
    argv += ["--cache", str(tmp_path / "cache"), "--scales=-1,1", "--resamples", "50"]
    assert cli.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(metrics["sites"]) == ["blocks.0.resid_post", "blocks.1.resid_post"]
    assert metrics["config"]["scales"] == "-1,1" and metrics["config"]["kind"] == "pairs"
