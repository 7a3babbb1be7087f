"""``safelab probe``: train, sweep, evaluate and generalise linear probes; score text per token.

Activations are captured once per (model, data, read position) into the activation cache and
reused by every later run that only changes the probe.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from safelab.commands.data_options import (
    activations,
    add_data_options,
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
    from safelab.interp.probe_sweep import GeneralisationConfig, run_generalisation

    if args.train_on or args.test_on:
        raise SafelabError(
            "--train-on/--test-on belong to probe sweep; generalise --domain COLUMN makes the "
            "whole domain-by-domain matrix"
        )
    from safelab.distributed import ray_address

    result = run_generalisation(
        from_options(GeneralisationConfig, args), args.out, ray=ray_address(args.ray)
    )
    for line in result.table_lines():
        print(line)
    print(f"wrote {Path(args.out) / 'metrics.json'}, {Path(args.out) / 'generalisation.png'}")
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

    from safelab.interp.probe_sweep import GeneralisationConfig

    gen = sub.add_parser(
        "generalise", help="train on each data set, test on the others (AUROC matrix)"
    )
    gen.add_argument("--out", required=True)
    add_options(gen, GeneralisationConfig, skip=("kind",), required=("data",))
    # Kept so that a user who reaches for them gets the one-line pointer to probe sweep.
    gen.add_argument("--train-on", default=None, help="(probe sweep only)")
    gen.add_argument("--test-on", default=None, help="(probe sweep only)")
    add_ray_option(gen)
    gen.set_defaults(func=_generalise)

    sc = sub.add_parser("score", help="a probe score for every token of a text")
    sc.add_argument("--probe", required=True)
    sc.add_argument("--text", action="append", help="text to score (repeatable)")
    sc.add_argument("--file", default=None, help="a file of texts, one per line")
    sc.add_argument("--model", default="default")
    sc.add_argument("--json", action="store_true", help="print JSON")
    sc.set_defaults(func=_score)
