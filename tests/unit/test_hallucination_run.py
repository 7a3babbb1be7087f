"""The hallucination experiment on a tiny model: spans, probe, baselines, resume, errors, view."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safelab.errors import SafelabError
from safelab.hallucination.collect import Answer, generation_key, read_cache
from safelab.hallucination.run import HallucinationConfig, run_hallucination, sample_entities
from safelab.hallucination.tables import load_table

COUNTRIES = ["Russia", "Poland", "Japan", "Brazil", "Kenya", "Chile", "Peru", "Spain"]


def write_cities(folder: Path, n: int = 48) -> list[tuple[str, str]]:
    rows = ["statement,label,city,country,correct_country"]
    truth = []
    for i in range(n):
        city, country = f"Town{i}", COUNTRIES[i % len(COUNTRIES)]
        wrong = COUNTRIES[(i + 3) % len(COUNTRIES)]
        rows.append(f"The city of {city} is in {country}.,1,{city},{country},{country}")
        rows.append(f"The city of {city} is in {wrong}.,0,{city},{wrong},{country}")
        truth.append((city, country))
    (folder / "cities.csv").write_text("\n".join(rows) + "\n")
    return truth


def seed_cache(model, folder: Path, out: Path, cfg: HallucinationConfig) -> list[str]:
    """Write the generation cache a run would write, with answers whose truth we know.

    Every third answer states a wrong country (fabricated); the sampled answers repeat a right
    answer and scatter a wrong one, so the consistency baseline separates them.
    """
    table = load_table("cities", folder)
    settings = {
        "max_new_tokens": cfg.max_new_tokens,
        "n_samples": cfg.n_samples,
        "temperature": cfg.temperature,
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
    }
    lines = []
    entities = sample_entities(table, cfg.n_per_table, cfg.seed)
    for k, e in enumerate(entities):
        (right,) = table.facts[e]
        wrong = COUNTRIES[(COUNTRIES.index(right) + 1 + k % 5) % len(COUNTRIES)]
        said = wrong if k % 3 == 0 else right
        text = f"{e} is a city in {said}." if k % 7 else f"I do not know where {e} is."
        q = table.question(e)
        prompt = model.tokenizer(model.render_chat(table.messages(e)))["input_ids"]
        ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
        samples = [f"It is in {said if said == right else COUNTRIES[j]}." for j in range(3)]
        a = Answer(
            "cities",
            e,
            q,
            text,
            prompt,
            ids,
            samples,
            generation_key(model.name, json.dumps(table.messages(e)), settings),
        )
        lines.append(json.dumps(a.to_dict()))
    (out / "generations").mkdir(parents=True)
    (out / "generations" / "cities.jsonl").write_text("\n".join(lines) + "\n")
    return entities


@pytest.fixture()
def tiny():
    from tests.tiny import tiny_model

    return tiny_model("llama")


def test_run_labels_spans_trains_probe_and_writes_outputs(tiny, tmp_path: Path) -> None:
    write_cities(tmp_path)
    cfg = HallucinationConfig(
        tables=("cities",),
        data_dir=str(tmp_path),
        n_per_table=40,
        n_samples=3,
        sites=("blocks.1.resid_post", "blocks.2.resid_post"),
        n_resamples=50,
    )
    out = tmp_path / "run"
    seed_cache(tiny, tmp_path, out, cfg)
    res = run_hallucination(cfg, out, model=tiny, log=lambda s: None)
    m = res.metrics
    assert res.generated == 0 and res.reused == 40  # every answer came from the cache
    # every 7th answer states no country: excluded and counted, not labelled
    assert m["excluded"] == {"cities:no_attribute": 6}
    assert m["n_spans"] == 34
    assert m["n_fabricated"] == sum(1 for k in range(40) if k % 3 == 0 and k % 7)
    span = res.spans[0]
    answer = res.answers[span.answer]
    assert answer.text[span.start : span.end] == span.text and span.text in COUNTRIES
    main = m["main"]
    assert main["site"] in cfg.sites
    assert set(main["baselines"]) == {"logprob", "entropy", "consistency"}
    # the sampled answers were written to agree only with right answers
    assert main["baselines"]["consistency"]["auroc"] == 1.0
    for r in [main["probe"], *main["baselines"].values(), main["shuffled_control"]]:
        assert r["auroc_ci"][0] <= r["auroc"] <= r["auroc_ci"][1]
        assert 0 <= r["recall_at_fpr"] <= 1
    # a random tiny model's probe is no better than a perfect consistency score: flagged
    assert any(f["flag"] == "probe_not_above_consistency" for f in res.flags)
    assert (out / "probe" / "cfg.json").is_file() and (out / "view.html").is_file()
    _check_view_in_chromium(out / "view.html", res, tmp_path / "profile")
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["config"]["tables"] == ["cities"] and saved["config"]["seed"] == 0
    assert len((out / "spans.jsonl").read_text().splitlines()) == 34

    # a rerun reuses generations and features and measures the same
    again = run_hallucination(cfg, out, model=tiny, log=lambda s: None)
    assert again.generated == 0
    assert again.metrics["main"]["probe"] == main["probe"]

    # the saved probe evaluated as a given probe scores every span
    import shutil

    shutil.copytree(out / "generations", tmp_path / "given" / "generations")
    given = run_hallucination(
        HallucinationConfig(**{**cfg.to_dict(), "probe": str(out / "probe")}),
        tmp_path / "given",
        model=tiny,
        log=lambda s: None,
    )
    assert given.generated == 0
    assert given.metrics["main"]["split"]["n_test_spans"] == 34
    assert given.metrics["main"]["site"] == main["site"]


def _check_view_in_chromium(page: Path, res, profile: Path) -> None:
    """Headless Chromium renders every answer, its coloured tokens and the true labels."""
    import re

    from tests.browser import dump_dom

    dom = dump_dom(page, profile)
    rows = re.findall(r"<tr>.*?</tr>", dom.split("<tbody>")[1], flags=re.S)
    assert len(rows) == len(res.answers) == 40
    labels = re.findall(r'data-label="(\w+)"', dom)
    assert labels.count("fabricated") == res.metrics["n_fabricated"]
    assert labels.count("supported") == res.metrics["n_spans"] - res.metrics["n_fabricated"]
    assert dom.count(">excluded<") == 6
    assert len(re.findall(r'class="tok[^"]*" style="background:rgb\(255,\d+,\d+\)"', dom)) > 40
    assert dom.count('class="tok span"') >= res.metrics["n_spans"]
    # an answer's tokens, joined, are its text (nothing lost to per-token decoding)
    first = re.findall(r'<span class="tok[^"]*"[^>]*>([^<]*)</span>', rows[0])
    assert "".join(first).replace("&amp;", "&") == res.answers[0].text


def test_generation_cache_resumes_without_regenerating(tiny, tmp_path: Path) -> None:
    from safelab.hallucination.collect import generate_answers

    write_cities(tmp_path, n=6)
    table = load_table("cities", tmp_path)
    path = tmp_path / "gen.jsonl"
    kw = dict(
        max_new_tokens=4, n_samples=1, temperature=1.0, seed=0, batch_size=2, log=lambda s: None
    )
    first, new = generate_answers(tiny, table, table.entities[:2], path, **kw)
    assert new == 2 and len(read_cache(path)) == 2
    both, new = generate_answers(tiny, table, table.entities[:4], path, **kw)
    assert new == 2  # only the two not cached
    assert [a.to_dict() for a in both[:2]] == [a.to_dict() for a in first]
    assert all(len(a.samples) == 1 for a in both)


def test_probe_of_another_width_is_one_line_error(tiny, tmp_path: Path) -> None:
    import torch

    from safelab.interp.probes import LinearProbe, ProbeConfig

    write_cities(tmp_path, n=4)
    LinearProbe(
        ProbeConfig("blocks.1.resid_post", 576, model="SmolLM2"), torch.zeros(576), 0.0
    ).save(tmp_path / "wide")
    cfg = HallucinationConfig(
        tables=("cities",), data_dir=str(tmp_path), probe=str(tmp_path / "wide")
    )
    with pytest.raises(SafelabError, match=r"576 wide .*d_model 32"):
        run_hallucination(cfg, tmp_path / "o", model=tiny, log=lambda s: None)


def test_cli_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safelab.cli import main

    assert main(["hallucination", "--tables", "planets", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown fact table 'planets'" in err
    (tmp_path / "cities.csv").write_text(
        "statement,label,city,country,correct_country\nThe town Oslo is in Norway.,1,Oslo,Norway,Norway\n"
    )
    code = main(
        [
            "hallucination",
            "--tables",
            "cities",
            "--data-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "cities.csv:2:" in err


def test_cli_probe_of_another_width_exits_2(
    tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from safelab.cli import main
    from safelab.interp.probes import LinearProbe, ProbeConfig

    write_cities(tmp_path, n=4)
    tiny.hf.save_pretrained(tmp_path / "model")
    tiny.tokenizer.save_pretrained(tmp_path / "model")
    LinearProbe(ProbeConfig("blocks.1.resid_post", 576), torch.zeros(576), 0.0).save(tmp_path / "p")
    args = ["hallucination", "--tables", "cities", "--data-dir", str(tmp_path)]
    args += [
        "--model",
        str(tmp_path / "model"),
        "--probe",
        str(tmp_path / "p"),
        "--out",
        str(tmp_path / "o"),
    ]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "576 wide" in err and "d_model 32" in err
