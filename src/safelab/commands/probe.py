"""``safelab probe``: train, sweep, evaluate and generalise linear probes; score text per token.

Activations are captured once per (model, data, read position) into the activation cache and
reused by every later run that only changes the probe.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from safelab.commands.data_options import (
    activations,
    add_data_options,
    add_split_options,
    load,
    write_json,
)
from safelab.commands.options import add_options, add_ray_option, from_options
from safelab.errors import SafelabError


def _sweep(args: argparse.Namespace) -> int:
    from safelab.distributed import ray_address
    from safelab.interp.probe_sweep import ProbeSweepConfig, run_probe_sweep

    cfg = from_options(ProbeSweepConfig, args)
    result = run_probe_sweep(cfg, args.out, ray=ray_address(args.ray))
    for line in result.summary_lines():
        print(line)
    print(f"wrote {Path(args.out) / 'metrics.json'}, {Path(args.out) / 'probe'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from safelab.interp.probes import LinearProbe
    from safelab.report import plots
    from safelab.stats import detector_metrics, roc_points

    probe = LinearProbe.load(args.probe)
    if args.position is None and probe.cfg.position in ("last", "mean"):
        args.position = probe.cfg.position
    model, data = load(args, args.data)
    in_sweep = probe.site in {str(s) for s in model.resolve_sites(args.sites)}
    cached = activations(args, model, data, None if in_sweep else probe.site)
    scores = probe.score(cached.acts[probe.site]).numpy()
    labels = np.asarray(data.labels)
    m = detector_metrics(scores, labels, n_resamples=args.resamples, seed=args.seed)
    payload = {
        "probe": str(args.probe),
        "site": probe.site,
        "data": data.source,
        "data_hash": data.data_hash,
        **m.to_dict(),
    }
    print(
        f"{data.name} at {probe.site}: AUROC {m.auroc:.3f} [{m.auroc_ci[0]:.3f}, {m.auroc_ci[1]:.3f}], "
        f"acc {m.accuracy:.3f}, recall@1%FPR {m.recall_at_1pct_fpr:.3f} (n={m.n})"
    )
    if args.out:
        out = Path(args.out)
        fpr, tpr = roc_points(scores, labels)
        img = plots.roc_curves(
            {data.name: (fpr, tpr, m.auroc)}, out / "roc.png", title=f"{probe.site} on {data.name}"
        )
        write_json(out / "metrics.json", payload)
        plots.write_html(out / "report.html", f"probe evaluation: {data.name}", [img], payload)
        print(f"wrote {out / 'metrics.json'}")
    return 0


def _generalise(args: argparse.Namespace) -> int:
    from safelab.interp.contrast import load_contrast, parse_position
    from safelab.interp.sweep import generalisation_matrix
    from safelab.models.loading import load_model
    from safelab.report import plots

    model = load_model(args.model)
    site = args.site or f"blocks.{model.n_layers // 2}.resid_post"
    datasets = []
    capture_s = 0.0
    if args.train_on or args.test_on:
        raise SafelabError(
            "--train-on/--test-on belong to probe sweep; generalise --domain COLUMN makes the "
            "whole domain-by-domain matrix"
        )
    if args.domain and len(args.data) != 1:
        raise SafelabError("--domain splits one --data file into its domains: give one file")
    for path in args.data:
        data = load_contrast(
            path,
            model,
            template=args.template,
            position=parse_position(args.position) if args.position else None,
            limit=args.limit,
            seed=args.seed,
        )
        cached = activations(args, model, data)
        capture_s += cached.capture_s
        if site not in cached.acts:
            raise SafelabError(f"--site {site} is not among the captured --sites {args.sites}")
        if args.domain:
            from safelab.interp.splits import column_values

            values = column_values(data, args.domain)
            for name in sorted(set(values)):
                idx = [i for i, v in enumerate(values) if v == name]
                part = data.subset(idx)
                part.name = name
                datasets.append((part, {site: cached.acts[site][idx]}))
        else:
            datasets.append((data, {site: cached.acts[site]}))
    t0 = time.perf_counter()
    mat = generalisation_matrix(
        datasets,
        site,
        method=args.method,
        test_frac=args.test_frac,
        seed=args.seed,
        n_resamples=args.resamples,
        group=args.group,
    )
    out = Path(args.out)
    payload = {
        **mat.to_dict(),
        "model": model.name,
        "data": list(args.data),
        "domain": args.domain,
        "group": args.group,
        "limit": args.limit,
        "timing": {"capture_s": round(capture_s, 2), "fit_s": round(time.perf_counter() - t0, 2)},
    }
    write_json(out / "metrics.json", payload)
    img = plots.heatmap(
        mat.auroc,
        mat.names,
        out / "generalisation.png",
        title=f"AUROC, train row / test column, {site} ({args.method})",
    )
    plots.write_html(out / "report.html", "probe generalisation", [img], payload)
    width = max(len(n) for n in mat.names)
    print(" " * (width + 2) + " ".join(f"{n[:8]:>8}" for n in mat.names))
    for name, row in zip(mat.names, mat.auroc, strict=True):
        print(f"{name:>{width}}  " + " ".join(f"{v:8.3f}" for v in row))
    print(f"wrote {out / 'metrics.json'}, {out / 'generalisation.png'}")
    return 0


def _score(args: argparse.Namespace) -> int:
    from safelab.interp.probes import LinearProbe, score_tokens
    from safelab.models.loading import load_model

    probe = LinearProbe.load(args.probe)
    model = load_model(args.model)
    texts = list(args.text or [])
    if args.file:
        texts += [t for t in Path(args.file).read_text().splitlines() if t.strip()]
    if not texts:
        raise SafelabError("nothing to score: give --text or --file")
    records = score_tokens(model, probe, texts)
    if args.json:
        print(json.dumps([{"text": t, **r} for t, r in zip(texts, records, strict=True)], indent=2))
        return 0
    for text, rec in zip(texts, records, strict=True):
        print(f"{text!r}: mean {rec['mean']:.3f}, max {rec['max']:.3f}, last {rec['last']:.3f}")
        print(
            "  "
            + " ".join(
                f"{tok.strip() or repr(tok)}[{s:.2f}]"
                for tok, s in zip(rec["tokens"], rec["scores"], strict=True)
            )
        )
    return 0


def _probe_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--method", choices=["logistic", "mass_mean"], default="logistic", help="probe type"
    )
    p.add_argument("--c", type=float, default=1.0, help="inverse L2 strength for logistic probes")
    p.add_argument(
        "--test-frac",
        type=float,
        default=0.25,
        help="held-out fraction (stratified; groups kept whole)",
    )
    add_split_options(p)


def register(subparsers: Any) -> None:
    """Add ``safelab probe {sweep,train,evaluate,generalise,score}``."""
    parser = subparsers.add_parser(
        "probe", help="linear probes: layer sweeps, held-out metrics, generalisation, token scores"
    )
    sub = parser.add_subparsers(dest="probe_command", required=True)

    from safelab.interp.probe_sweep import ProbeSweepConfig

    sweep = sub.add_parser(
        "sweep", help="a probe per layer on a held-out split; AUROC with intervals"
    )
    sweep.add_argument("--out", required=True, help="output folder (metrics.json, plots, probes)")
    add_options(sweep, ProbeSweepConfig, skip=("site",), required=("data",))
    add_ray_option(sweep)
    sweep.set_defaults(func=_sweep)

    train = sub.add_parser("train", help="one probe at one site (held-out metrics saved with it)")
    train.add_argument("--out", required=True)
    add_options(train, ProbeSweepConfig, skip=("sae", "sae_k"), required=("data", "site"))
    add_ray_option(train)
    train.set_defaults(func=_sweep)

    ev = sub.add_parser("evaluate", help="score a saved probe on a data set (all rows)")
    ev.add_argument("--probe", required=True, help="probe folder or probe.safetensors")
    ev.add_argument("--data", required=True)
    ev.add_argument("--out", default=None, help="folder for metrics.json and roc.png")
    add_data_options(ev)
    ev.set_defaults(func=_evaluate)

    gen = sub.add_parser(
        "generalise", help="train on each data set, test on the others (AUROC matrix)"
    )
    gen.add_argument("--data", nargs="+", required=True, help="two or more statement CSVs")
    gen.add_argument(
        "--site", default=None, help="site to probe (default: the middle layer's resid_post)"
    )
    gen.add_argument("--out", required=True)
    add_data_options(gen, kinds=False)
    _probe_options(gen)
    gen.set_defaults(func=_generalise)

    sc = sub.add_parser("score", help="a probe score for every token of a text")
    sc.add_argument("--probe", required=True)
    sc.add_argument("--text", action="append", help="text to score (repeatable)")
    sc.add_argument("--file", default=None, help="a file of texts, one per line")
    sc.add_argument("--model", default="default")
    sc.add_argument("--json", action="store_true", help="print JSON")
    sc.set_defaults(func=_score)
