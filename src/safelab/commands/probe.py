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
    split_from_args,
    write_json,
)
from safelab.errors import SafelabError


def _sweep(args: argparse.Namespace) -> int:
    from safelab.interp.sweep import fit_and_evaluate
    from safelab.report import plots

    out = Path(args.out)
    t_start = time.perf_counter()
    sae = None
    if args.sae:  # read before the model load and the sweep, which take a minute
        from safelab.sae.sae import load_sae

        sae = load_sae(args.sae)
    model, data = load(args, args.data)
    if sae is not None:
        sae.check_fits(model, f"--sae {args.sae}")
        model.resolve_sites(sae.site)
    cached = activations(args, model, data)
    if getattr(args, "site", None):
        (site,) = (str(s) for s in model.resolve_sites(args.site))
        if site not in cached.acts:
            cached = activations(args, model, data, site)
        cached.acts = {site: cached.acts[site]}
    print(
        f"{data.name}: {len(data)} examples, {len(cached.sites)} sites; "
        f"{'cached' if cached.cached else f'captured in {cached.capture_s:.1f}s'} ({cached.store})"
    )
    split = split_from_args(args, data)
    embeddings = None
    if args.controls:
        from safelab.interp.controls import token_embeddings

        embeddings = token_embeddings(model, data)
    result = fit_and_evaluate(
        cached.acts,
        data,
        method=args.method,
        c=args.c,
        test_frac=args.test_frac,
        seed=args.seed,
        n_resamples=args.resamples,
        model_name=model.name,
        progress=True,
        split=split,
        controls=args.controls,
        embeddings=embeddings,
    )
    best = result.best_site
    payload = result.to_dict()
    if sae is not None:
        payload["sae_probe"] = _sae_column(args, sae, model, data, cached, split)
    payload.update(
        model=model.name,
        name=data.name,
        template=data.template,
        position=str(data.position),
        limit=args.limit,
        activation_cache=str(cached.store),
        timing={
            "capture_s": round(cached.capture_s, 2),
            "cached": cached.cached,
            "fit_and_metrics_s": round(result.fit_s, 2),
            "total_s": round(time.perf_counter() - t_start, 2),
        },
    )
    for site, probe in result.probes.items():
        probe.save(out / "probes" / site)
    result.probes[best].save(out / "probe")
    images = [
        plots.roc_curves(
            {
                best: (
                    result.sites[best].roc["fpr"],
                    result.sites[best].roc["tpr"],
                    result.sites[best].auroc,
                )
            },
            out / "roc.png",
            title=f"{data.name}: held-out ROC at {best}",
        )
    ]
    if len(result.sites) > 1:
        curves = {
            f"{data.name} ({args.method})": {
                s: (r.auroc, r.auroc_ci) for s, r in result.sites.items()
            }
        }
        if args.controls:
            curves["shuffled-label control"] = {
                s: (r.control_auroc, r.control_auroc_ci)
                for s, r in result.sites.items()
                if r.control_auroc is not None and r.control_auroc_ci is not None
            }
            for name, m in result.baselines.items():
                curves[f"{name.replace('_', '-')} baseline"] = {
                    s: (m["auroc"], m["auroc_ci"]) for s in result.sites
                }
        images.insert(
            0,
            plots.auroc_by_layer(
                curves,
                out / "auroc_by_layer.png",
                title=f"{data.name}: held-out probe AUROC by layer ({model.name})",
            ),
        )
    write_json(out / "metrics.json", payload)
    warnings = [f["message"] for f in result.flags]
    plots.write_html(out / "report.html", f"probe sweep: {data.name}", images, payload, warnings)
    r = result.sites[best]
    for name, m in result.baselines.items():
        print(
            f"baseline {name.replace('_', '-')}: AUROC {m['auroc']:.3f} "
            f"[{m['auroc_ci'][0]:.3f}, {m['auroc_ci'][1]:.3f}] (same split)"
        )
    for w in warnings:
        print(f"WARNING: {w}")
    flagged = [f["flag"] for f in result.flags if f["flag"].startswith("best_")]
    print(
        f"{'FLAGGED ' if flagged else ''}best {best}: AUROC {r.auroc:.3f} "
        f"[{r.auroc_ci[0]:.3f}, {r.auroc_ci[1]:.3f}], "
        f"recall@1%FPR {r.recall_at_1pct_fpr:.3f} (n_test={result.n_test}, seed={args.seed})"
        + (f" [{', '.join(flagged)}]" if flagged else "")
    )
    if sp := payload.get("sae_probe"):
        dense = result.sites.get(sp["site"])
        dense_text = f"; dense probe there {dense.auroc:.3f}" if dense is not None else ""
        print(
            f"sparse SAE probe at {sp['site']} (k={sp['k']} latents of {sp['sae']}): AUROC "
            f"{sp['auroc']:.3f} [{sp['auroc_ci'][0]:.3f}, {sp['auroc_ci'][1]:.3f}]{dense_text}"
        )
    print(
        f"timing: capture {payload['timing']['capture_s']}s, fit+metrics {payload['timing']['fit_and_metrics_s']}s"
    )
    print(f"wrote {out / 'metrics.json'}, {out / 'probe'}")
    return 0


def _sae_column(
    args: argparse.Namespace, sae: Any, model: Any, data: Any, cached: Any, split: Any
) -> Any:
    """The k-sparse SAE-latent probe on the same rows and split as the dense probe at its site."""
    import numpy as np

    from safelab.sae.probe import sparse_probe

    acts = cached.acts.get(sae.site)
    if acts is None:
        acts = activations(args, model, data, sae.site).acts[sae.site]
    train, test, _ = split
    labels = np.asarray(data.labels)
    res = sparse_probe(
        sae,
        acts[train],
        labels[train],
        acts[test],
        labels[test],
        k=args.sae_k,
        seed=args.seed,
        n_resamples=args.resamples,
    )
    return {"sae": str(args.sae), "site": sae.site, **res.to_dict()}


def _evaluate(args: argparse.Namespace) -> int:
    from safelab.interp.metrics import detector_metrics, roc_points
    from safelab.interp.probes import LinearProbe
    from safelab.report import plots

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

    sweep = sub.add_parser(
        "sweep", help="a probe per layer on a held-out split; AUROC with intervals"
    )
    sweep.add_argument(
        "--data", required=True, help="statement,label CSV or JSONL/JSON of A/B pairs"
    )
    sweep.add_argument("--out", required=True, help="output folder (metrics.json, plots, probes)")
    add_data_options(sweep)
    _probe_options(sweep)
    sweep.add_argument(
        "--no-controls",
        dest="controls",
        action="store_false",
        help="skip the shuffled-label control and the bag-of-words / token-embedding baselines",
    )
    sweep.add_argument(
        "--sae",
        default=None,
        help="an SAE folder: add the k-sparse probe on its latents at its site (same split)",
    )
    sweep.add_argument("--sae-k", type=int, default=8, help="latents in the sparse SAE probe")
    sweep.set_defaults(func=_sweep)

    train = sub.add_parser("train", help="one probe at one site (held-out metrics saved with it)")
    train.add_argument("--data", required=True)
    train.add_argument("--site", required=True, help="e.g. blocks.12.resid_post")
    train.add_argument("--out", required=True)
    add_data_options(train)
    _probe_options(train)
    train.add_argument("--no-controls", dest="controls", action="store_false")
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
