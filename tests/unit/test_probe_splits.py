"""Grouped splits, controls and honest flags on planted data (no model except one tiny one)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from safelab.errors import SafelabError
from safelab.interp.contrast import ContrastSet, Example, load_statements
from safelab.interp.controls import (
    bag_of_words,
    shuffled_control,
    shuffled_labels,
    token_embeddings,
)
from safelab.interp.splits import example_groups, make_split, near_duplicate_groups
from safelab.interp.sweep import fit_and_evaluate

CONTINENTS = ("Europe", "Asia")


def paired(
    n_subjects: int = 160, d: int = 4096, truth: float = 1.6, noise: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, ContrastSet]:
    """Minimal pairs on shared subjects: activation = subject vector + small ±truth direction.

    Each subject ("Country7") gets a true and a false statement. In this high-dimensional,
    few-rows regime a logistic probe memorises subjects; under a row split the held-out twin of
    a memorised row then gets the opposite score.
    """
    g = torch.Generator().manual_seed(seed)
    subjects = torch.randn(n_subjects, d, generator=g)
    w = torch.randn(d, generator=g)
    w = w / w.norm()
    rows, examples = [], []
    for k in range(n_subjects):
        for y in (1, 0):
            rows.append(subjects[k] + (y - 0.5) * truth * w + noise * torch.randn(d, generator=g))
            place = CONTINENTS[y ^ (k % 2)]
            examples.append(Example(f"Country{k} is in {place}.", y, where=f"p.csv:{len(rows)}"))
    return torch.stack(rows), ContrastSet("paired", "p.csv", examples, "statements")


def test_subject_memorising_probe_is_below_chance_on_rows_and_recovers_grouped() -> None:
    x, data = paired()
    rows = fit_and_evaluate({"s": x}, data, n_resamples=300, group="rows")
    grouped = fit_and_evaluate({"s": x}, data, n_resamples=300)
    r, g = rows.sites["s"], grouped.sites["s"]
    assert rows.split["how"] == "rows" and not rows.split["grouped"]
    assert r.auroc_ci[1] < 0.5, r  # the whole interval below chance
    flags = {f["flag"] for f in rows.flags}
    assert {"best_below_chance", "sites_below_chance"} <= flags
    # The words memorise subjects too: the bag-of-words baseline is below chance on the row split.
    assert "bag_of_words_below_chance" in flags
    assert "bag_of_words_below_chance" not in {f["flag"] for f in grouped.flags}
    assert "below_chance" in r.flags
    # Near-duplicate detection found the pairs without being told.
    assert grouped.split["how"] == "near_duplicates" and grouped.split["grouped"]
    assert grouped.split["n_groups"] == 160 and grouped.split["largest_group"] == 2
    assert g.auroc_ci[0] > 0.7, g
    assert not any(f["flag"].startswith("best_") for f in grouped.flags)
    # The shuffled-label control sits near chance on the same split.
    assert g.control_auroc is not None and 0.35 < g.control_auroc < 0.65


def test_near_duplicates_group_minimal_pairs_not_unrelated_rows() -> None:
    texts = [
        "The city of Paris is in France.",
        "The city of Paris is in Japan.",
        "The city of Lyon is in France.",
        "The city of Lyon is in Brazil.",
        "Water boils at 100 degrees Celsius at sea level.",
        "Water boils at 50 degrees Celsius at sea level.",
        "The salmon is a fish.",
        "Photosynthesis turns light into chemical energy.",
        "the city of paris is in france",
    ]
    # A template shared by many rows must not chain them: France appears in 60 more rows.
    texts += [f"The city of Town{i} is in France." for i in range(60)]
    g = near_duplicate_groups(texts)
    assert g[0] == g[1] == g[8]  # a minimal pair and an exact duplicate (case, punctuation)
    assert g[2] == g[3] and g[4] == g[5]
    assert g[0] != g[2]  # same template and country, different subject
    assert len({g[0], g[2], g[4], g[6], g[7]}) == 5
    assert len(set(g[9:].tolist())) == 60


def test_near_duplicates_scale_to_ten_thousand_rows() -> None:
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(5000)]
    texts = [" ".join(rng.choice(vocab, size=8)) for _ in range(10_000)]
    import time

    t = time.perf_counter()
    g = near_duplicate_groups(texts)
    assert time.perf_counter() - t < 20  # O(n · max_df), not O(n²) (generous for a loaded CI)
    assert len(set(g.tolist())) > 9_900


def _csv(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _domain_rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for dom in ("cities", "animals", "elements", "inventors"):
        for k in range(12):
            for y in (1, 0):
                rows.append(
                    {
                        "statement": f"{dom} item {k} claim {'right' if y else 'wrong'} {k * 7}",
                        "label": y,
                        "subject": f"{dom}-{k}",
                        "domain": dom,
                    }
                )
    return rows


def test_group_column_keeps_each_subject_on_one_side(tmp_path: Path) -> None:
    data = load_statements(_csv(tmp_path / "d.csv", _domain_rows()))
    train, test, info = make_split(data, group="subject", seed=1)
    subj, _ = example_groups(data, "subject")
    assert subj is not None
    assert set(subj[train].tolist()).isdisjoint(subj[test].tolist())
    assert info.how == "group:subject" and info.n_groups == 48
    assert info.n_groups_train + info.n_groups_test == 48
    assert info.n_train + info.n_test == len(data)
    assert "48 groups" in info.line()
    with pytest.raises(SafelabError, match="no column 'topic'.*statement, label, subject, domain"):
        make_split(data, group="topic")


def test_train_on_three_domains_test_on_the_fourth(tmp_path: Path) -> None:
    data = load_statements(_csv(tmp_path / "d.csv", _domain_rows()))
    train, test, info = make_split(data, domain="domain", test_on=["inventors"])
    dom = [r["domain"] for r in _domain_rows()]
    assert {dom[i] for i in test} == {"inventors"}
    assert {dom[i] for i in train} == {"cities", "animals", "elements"}
    assert info.train_domains == ["animals", "cities", "elements"]
    assert info.test_domains == ["inventors"] and info.how == "domain:domain"
    train2, _, _ = make_split(data, domain="domain", train_on=["cities"], test_on=["inventors"])
    assert {dom[i] for i in train2} == {"cities"}
    with pytest.raises(SafelabError, match="not in column 'domain'"):
        make_split(data, domain="domain", test_on=["planets"])
    with pytest.raises(SafelabError, match="--test-on"):
        make_split(data, domain="domain")


def test_bag_of_words_baseline_flags_a_probe_that_only_matches_the_words() -> None:
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 2, n)
    examples = [
        Example(f"Item {i} is {'genuine' if v else 'fake'} stock.", int(v), where=f"w:{i}")
        for i, v in enumerate(y)
    ]
    data = ContrastSet("words", "w.csv", examples, "statements")
    noise = torch.randn(n, 16, generator=torch.Generator().manual_seed(1))
    result = fit_and_evaluate({"s": noise}, data, n_resamples=200)
    assert result.baselines["bag_of_words"]["auroc"] > 0.95
    flags = {f["flag"] for f in result.flags}
    assert "best_not_above_bag_of_words" in flags
    assert "best_not_above_shuffled_control" in flags  # noise is no better than shuffled labels
    out = result.to_dict()
    assert out["flags"] and out["split"]["how"] and "bag_of_words" in out["baselines"]
    m = bag_of_words([e.text for e in examples], y, np.arange(150), np.arange(150, n))
    assert m.auroc > 0.95


def test_token_embedding_baseline_reads_the_last_token(tiny_model) -> None:  # type: ignore[no-untyped-def]
    data = ContrastSet(
        "t", "t.csv", [Example("Paris is in France.", 1), Example("two plus two", 0)], "statements"
    )
    emb = token_embeddings(tiny_model, data)
    table = tiny_model.hf.get_input_embeddings().weight
    last = [enc.ids[-1] for enc in data.encode(tiny_model)]
    assert emb.shape == (2, table.shape[1])
    assert torch.allclose(emb, table[last].float())


@pytest.mark.parametrize("method", ["logistic", "mass_mean"])
def test_shuffled_control_sits_near_chance_when_truth_dominates(method: str) -> None:
    # One direction carries most of the variance: a plain permutation's chance correlation with
    # the labels would steer a mass-mean control to one side of 0.5.
    g = torch.Generator().manual_seed(4)
    n, d = 600, 64
    w = torch.randn(d, generator=g)
    w = w / w.norm()
    y = (torch.rand(n, generator=g) > 0.5).long().numpy()
    x = torch.randn(n, d, generator=g) + torch.tensor(y - 0.5).float().unsqueeze(1) * 8 * w
    labels = np.asarray(y)
    ctrl = shuffled_labels(labels, seed=0)
    assert ctrl.sum() == pytest.approx(labels.sum(), abs=2)
    assert abs(np.corrcoef(ctrl, labels)[0, 1]) < 0.01
    draws = [
        shuffled_control(x, labels, np.arange(450), np.arange(450, n), "s", method=method, seed=s)
        for s in range(4)
    ]
    aurocs = [a for a, _ in draws]
    assert 0.4 < float(np.mean(aurocs)) < 0.6 and all(0.2 < a < 0.8 for a in aurocs), aurocs
    assert all(lo <= a <= hi for a, (lo, hi) in draws)
