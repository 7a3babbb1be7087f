"""Probe fitting, metrics and sweeps on synthetic activations (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from safelab.errors import SafelabError
from safelab.interp.contrast import ContrastSet, Example
from safelab.interp.probes import LinearProbe
from safelab.interp.splits import split_indices
from safelab.interp.sweep import fit_and_evaluate, generalisation_matrix
from safelab.stats import (
    auroc,
    bootstrap_ci,
    detector_metrics,
    mean_ci,
    recall_at_fpr,
    threshold_at_fpr,
)


def planted(
    n: int = 400, d: int = 32, seed: int = 0, margin: float = 3.0
) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """Isotropic noise plus ``±margin/2`` along a random unit direction, by label."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g)
    w = w / w.norm()
    y = (torch.rand(n, generator=g) > 0.5).long()
    x = torch.randn(n, d, generator=g) + (y.float() - 0.5).unsqueeze(1) * margin * w
    return x, y.numpy(), w


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("method", ["logistic", "mass_mean"])
def test_probe_recovers_planted_direction(method: str) -> None:
    x, y, w = planted()
    probe = LinearProbe.fit(x[:300], y[:300], "blocks.1.resid_post", method=method)  # type: ignore[arg-type]
    assert cosine(probe.weight, w) > 0.8
    scores = probe.score(x[300:]).numpy()
    assert auroc(scores, y[300:]) > 0.9


def test_probe_at_chance_on_random_labels() -> None:
    x, _, _ = planted()
    y = np.random.default_rng(1).integers(0, 2, len(x))
    probe = LinearProbe.fit(x[:300], y[:300], "s")
    assert 0.3 < auroc(probe.score(x[300:]).numpy(), y[300:]) < 0.7


def test_mass_mean_and_logistic_agree() -> None:
    x, y, _ = planted(margin=4.0)
    a = LinearProbe.fit(x[:300], y[:300], "s", method="logistic")
    b = LinearProbe.fit(x[:300], y[:300], "s", method="mass_mean")
    assert cosine(a.weight, b.weight) > 0.8
    pa, pb = a.score(x[300:]) > 0.5, b.score(x[300:]) > 0.5
    assert (pa == pb).float().mean() > 0.9


def test_probe_save_load_roundtrip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    x, y, _ = planted(n=100)
    probe = LinearProbe.fit(x, y, "blocks.1.resid_post", model="m", data="d.csv", position="mean")
    probe.cfg.metrics = {"auroc": 0.9}
    path = probe.save(tmp_path / "p")
    back = LinearProbe.load(path)
    assert back.cfg.site == "blocks.1.resid_post" and back.cfg.position == "mean"
    assert back.cfg.metrics == {"auroc": 0.9} and back.cfg.data_hash
    assert torch.allclose(back.score(x), probe.score(x))


def test_auroc_hand_example() -> None:
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([1, 1], [0, 1]) == pytest.approx(0.5)  # a tie counts one half


def test_recall_at_1pct_fpr_hand_example() -> None:
    neg = list(range(100))  # scores 0..99
    pos = [50, 98.5, 99, 99.5, 120]
    # One false positive is allowed among 100 negatives: threshold 98 flags only the 99.
    assert threshold_at_fpr(neg, 0.01) == 98
    scores = neg + pos
    labels = [0] * 100 + [1] * 5
    assert recall_at_fpr(scores, labels, 0.01) == pytest.approx(0.8)
    # With fewer than 100 negatives no false positive is allowed: threshold = top negative.
    assert recall_at_fpr([0.1, 0.2, 0.3, 0.25, 0.9], [0, 0, 0, 1, 1], 0.01) == pytest.approx(0.5)


def test_bootstrap_ci_contains_point_estimate() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = y + rng.normal(0, 1.2, 200)
    point = auroc(s, y)
    lo, hi = bootstrap_ci(auroc, s, y, n_resamples=300, seed=3)
    assert lo < point < hi and hi - lo < 0.3
    m = detector_metrics(s, y, n_resamples=200, seed=3)
    for v, (a, b) in [
        (m.auroc, m.auroc_ci),
        (m.accuracy, m.accuracy_ci),
        (m.recall_at_1pct_fpr, m.recall_at_1pct_fpr_ci),
    ]:
        assert a <= v <= b
    assert m.seed == 3
    mean, lo2, hi2 = mean_ci(s, n_resamples=300)
    assert lo2 < mean < hi2
    # Same seed, same interval.
    assert bootstrap_ci(auroc, s, y, n_resamples=300, seed=3) == (lo, hi)


def test_metrics_reject_nan_and_one_class() -> None:
    with pytest.raises(SafelabError, match="NaN"):
        auroc([0.1, float("nan")], [0, 1])
    with pytest.raises(SafelabError, match="positive and one negative"):
        auroc([0.1, 0.2], [1, 1])


def test_split_is_stratified_seeded_and_keeps_groups() -> None:
    y = [0] * 40 + [1] * 60
    tr, te = split_indices(y, 0.25, seed=1)
    assert len(set(tr) & set(te)) == 0 and len(tr) + len(te) == 100
    assert sum(y[i] for i in te) == 15 and len(te) == 25
    assert np.array_equal(split_indices(y, 0.25, seed=1)[1], te)
    groups = [i // 2 for i in range(100)]
    y2 = [i % 2 for i in range(100)]
    tr2, te2 = split_indices(y2, 0.25, seed=0, groups=groups)
    assert {groups[i] for i in tr2}.isdisjoint({groups[i] for i in te2})


def _dataset(name: str, labels: np.ndarray) -> ContrastSet:
    return ContrastSet(
        name, f"{name}.csv", [Example(f"s{i}", int(v)) for i, v in enumerate(labels)], "statements"
    )


def test_sweep_finds_the_planted_site() -> None:
    x, y, _ = planted(n=300)
    noise = torch.randn(300, 32, generator=torch.Generator().manual_seed(5))
    result = fit_and_evaluate(
        {"blocks.0.resid_post": noise, "blocks.1.resid_post": x},
        _dataset("d", y),
        n_resamples=100,
        seed=2,
    )
    assert result.best_site == "blocks.1.resid_post"
    out = result.to_dict()
    assert out["best_auroc"] > 0.9 and out["seed"] == 2
    site = out["sites"]["blocks.1.resid_post"]
    assert site["auroc_ci"][0] <= site["auroc"] <= site["auroc_ci"][1]
    assert 0 <= site["recall_at_1pct_fpr"] <= 1
    assert out["sites"]["blocks.0.resid_post"]["auroc"] < 0.75
    assert result.probes["blocks.1.resid_post"].cfg.metrics["held_out"]["auroc"] == site["auroc"]


def test_generalisation_matrix_shares_and_breaks_directions() -> None:
    x1, y1, w = planted(n=200, seed=1)
    x2, y2, _ = planted(n=200, seed=1)  # same direction, fresh noise
    g = torch.Generator().manual_seed(9)
    other = torch.randn(32, generator=g)
    other = other - (other @ w) * w
    other = other / other.norm()
    y3 = (torch.rand(200, generator=g) > 0.5).long()
    x3 = torch.randn(200, 32, generator=g) + (y3.float() - 0.5).unsqueeze(1) * 3 * other
    sets = [
        (_dataset(n, yy), {"s": xx})
        for n, yy, xx in (("a", y1, x1), ("b", y2, x2), ("c", y3.numpy(), x3))
    ]
    m = generalisation_matrix(sets, "s", n_resamples=50)
    assert m.names == ["a", "b", "c"]
    assert m.auroc[0][1] > 0.9 and m.auroc[1][0] > 0.9  # shared direction transfers
    assert m.auroc[0][2] < 0.75  # an orthogonal direction does not
    assert m.auroc[2][2] > 0.9
