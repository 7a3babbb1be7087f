"""``safelab steer``: steering vectors from A/B pairs (train, sweep, apply).

``sweep`` captures every layer's activation at the answer token once (cached), makes one
vector per layer from the training pairs, then measures ``Δp(matching answer)`` on held-out
pairs for each (layer, scale) and the multiple-choice accuracy cost at the best layer.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from safelab.commands.data_options import (
    activations,
    add_data_options,
    add_split_options,
    load,
    write_json,
)
from safelab.errors import SafelabError


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SafelabError(
            f"--scales {text!r}: give comma-separated numbers, e.g. -4,-1,1,4"
        ) from None


def default_sweep_layers(n_layers: int) -> list[int]:
    """Layers a sweep tries by default: every k-th from ``n // 10`` to ``n - 2``, ``k = max(1, n // 10)``.

    About ten layers on any depth, skipping the first and last tenth (embedding-like and
    unembedding-like layers rarely steer well): 3, 6, ..., 27 on a 30-layer model; 0, 1 on a
    3-layer one.
    """
    step = max(1, n_layers // 10)
    start = n_layers // 10
    return list(range(start, max(start, n_layers - 2) + 1, step))


def _sweep_sites(requested: str | None, model: Any, captured: list[str]) -> list[str]:
    """``--layers-sites`` as given; '' for every captured site; by default the model's spread."""
    if requested is None:
        spread = [f"blocks.{layer}.resid_post" for layer in default_sweep_layers(model.n_layers)]
        return [s for s in spread if s in captured] or captured
    if not requested:
        return captured
    return [str(s) for s in model.resolve_sites(requested)]


def _sweep(args: argparse.Namespace) -> int:
    from safelab.interp.contrast import read_pairs
    from safelab.interp.steer_sweep import (
        capability_cost,
        choice_prompts,
        contrast_vectors,
        steering_sweep,
    )
    from safelab.report import plots

    t_start = time.perf_counter()
    out = Path(args.out)
    model, data = load(args, args.data)
    if data.kind != "pairs":
        raise SafelabError(f"{args.data}: steering needs A/B pairs (.json/.jsonl), not {data.kind}")
    pairs_all = read_pairs(data.source)
    pair_ids = sorted({e.pair for e in data.examples})
    train_rows = list(range(len(data)))
    split_info: dict[str, Any] = {"how": "test_file", "grouped": True}
    if args.test:
        train_data = data
        test_pairs = read_pairs(args.test)
        test_source = args.test
    else:
        from safelab.interp.splits import make_split

        train_idx, test_idx, info = make_split(
            data, test_frac=args.test_frac, seed=args.seed, group=args.group
        )
        split_info = info.to_dict()
        print(info.line())
        train_rows = train_idx.tolist()
        train_data = data.subset(train_rows)
        test_ids = sorted({data.examples[i].pair for i in test_idx})
        test_pairs = [pairs_all[i] for i in test_ids]
        test_source = (
            f"{args.data} (held-out {len(test_ids)} of {len(pair_ids)} pairs, seed {args.seed})"
        )
    if args.test_limit and len(test_pairs) > args.test_limit:
        test_pairs = test_pairs[: args.test_limit]
    cached = activations(args, model, data)
    acts = {s: v[train_rows] for s, v in cached.acts.items()}
    sweep_sites = _sweep_sites(args.layers_sites, model, list(acts))
    missing = [s for s in sweep_sites if s not in acts]
    if missing:
        raise SafelabError(
            f"sweep sites {', '.join(missing)} were not captured (--sites {args.sites})"
        )
    vectors = contrast_vectors(
        {s: acts[s] for s in sweep_sites},
        train_data,
        method=args.method,
        model_name=model.name,
        seed=args.seed,
    )
    for v in vectors.values():
        v.cfg.positions = args.positions
    test = choice_prompts(model, test_pairs, train_data.template)
    print(
        f"{data.name}: {len(train_data) // 2} training pairs, {len(test)} held-out pairs; "
        f"{'cached' if cached.cached else f'captured in {cached.capture_s:.1f}s'}"
    )
    t_sweep = time.perf_counter()
    result = steering_sweep(
        model,
        vectors,
        test,
        _floats(args.scales),
        positions=args.positions,
        seed=args.seed,
        n_resamples=args.resamples,
        batch_size=args.batch_size,
        progress=True,
    )
    sweep_s = time.perf_counter() - t_sweep
    best = result.best()
    if args.mmlu:
        mc = choice_prompts(model, read_pairs(args.mmlu)[: args.mmlu_limit], "chat")
        result.capability = {
            "data": args.mmlu,
            "at_best_site": [
                capability_cost(
                    model,
                    vectors[best.site],
                    s,
                    mc,
                    positions=args.positions,
                    seed=args.seed,
                    n_resamples=args.resamples,
                    batch_size=args.batch_size,
                )
                for s in _floats(args.scales)
                if s != 0
            ],
        }
        for c in result.capability["at_best_site"]:
            print(
                f"MMLU at {c['site']} scale {c['scale']:+g}: accuracy {c['accuracy']:.3f} -> {c['steered_accuracy']:.3f} "
                f"(Δ {c['delta_accuracy']:+.3f} [{c['delta_accuracy_ci'][0]:+.3f}, {c['delta_accuracy_ci'][1]:+.3f}], n={c['n']})"
            )
    for site, vec in vectors.items():
        vec.cfg.metrics["sweep"] = {
            f"{c.scale:g}": {"delta": c.delta, "delta_ci": c.delta_ci}
            for c in result.cells
            if c.site == site
        }
        vec.save(out / "vectors" / site)
    best_vec = vectors[best.site]
    best_vec.cfg.scale = best.scale
    best_vec.save(out / "vector")
    payload = result.to_dict()
    payload.update(
        model=model.name,
        name=data.name,
        data=data.source,
        data_hash=data.data_hash,
        test=test_source,
        method=args.method,
        scales=_floats(args.scales),
        n_train_pairs=len(train_data) // 2,
        split=split_info,
        norms={
            s: {
                "vector": float(v.vector.norm()),
                "mean_activation": float(acts[s].norm(dim=1).mean()),
            }
            for s, v in vectors.items()
        },
        timing={
            "capture_s": round(cached.capture_s, 2),
            "cached": cached.cached,
            "sweep_s": round(sweep_s, 2),
            "total_s": round(time.perf_counter() - t_start, 2),
        },
    )
    write_json(out / "metrics.json", payload)
    img = plots.steering_curves(
        payload["cells"],
        out / "steering.png",
        title=f"{data.name}: Δp(matching) by layer ({args.method}, {model.name})",
    )
    plots.write_html(out / "report.html", f"steering sweep: {data.name}", [img], payload)
    print(
        f"best {best.site} scale {best.scale:+g}: Δp {best.delta:+.3f} [{best.delta_ci[0]:+.3f}, {best.delta_ci[1]:+.3f}] "
        f"(baseline p {result.baseline_p:.3f}, n={len(test)}, seed={args.seed})"
    )
    print(f"wrote {out / 'metrics.json'}, {out / 'vector'}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from safelab.interp.steer_sweep import contrast_vectors

    model, data = load(args, args.data)
    (site,) = (str(s) for s in model.resolve_sites(args.site))
    cached = activations(args, model, data)
    if site not in cached.acts:
        cached = activations(args, model, data, site)
    vec = contrast_vectors(
        {site: cached.acts[site]}, data, method=args.method, model_name=model.name, seed=args.seed
    )[site]
    vec.cfg.scale = args.scale
    vec.cfg.positions = args.positions
    path = vec.save(args.out)
    print(f"{vec} from {len(data) // 2} pairs -> {path}")
    return 0


def _apply(args: argparse.Namespace) -> int:
    from safelab.interp.steering import resolve_steer
    from safelab.models.loading import load_model

    spec = resolve_steer(args.vector, scale=args.scale)
    model = load_model(args.model)
    chat = [{"role": "user", "content": args.prompt}]
    (plain,) = model.generate([chat], max_new_tokens=args.max_tokens)
    with spec.apply(model):
        (steered,) = model.generate([chat], max_new_tokens=args.max_tokens)
    print(f"--- unsteered\n{plain}\n--- steered ({spec.site}, scale {spec.scale:+g})\n{steered}")
    return 0


def _steer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--method",
        choices=["mean_diff", "pca"],
        default="mean_diff",
        help="contrastive mean difference or PCA of differences",
    )
    p.add_argument(
        "--positions",
        choices=["all", "last"],
        default="all",
        help="add the vector at every token or only the last",
    )


def register(subparsers: Any) -> None:
    """Add ``safelab steer {sweep,train,apply}``."""
    parser = subparsers.add_parser(
        "steer", help="steering vectors from A/B pairs: layer/scale sweeps, capability cost"
    )
    sub = parser.add_subparsers(dest="steer_command", required=True)

    sw = sub.add_parser("sweep", help="Δp(matching answer) by layer and scale on held-out pairs")
    sw.add_argument(
        "--data",
        required=True,
        help="A/B pairs: CAA .json, model-written-eval .jsonl, or prompt/positive/negative .jsonl",
    )
    sw.add_argument("--out", required=True)
    sw.add_argument(
        "--test", default=None, help="held-out pairs file (default: a --test-frac split of --data)"
    )
    sw.add_argument("--test-frac", type=float, default=0.25)
    add_split_options(sw, domains=False)
    sw.add_argument("--test-limit", type=int, default=None, help="at most this many held-out pairs")
    sw.add_argument(
        "--layers-sites",
        default=None,
        help="sites to sweep; '' for every captured site (default: resid_post every k-th layer "
        "from n//10 to n-2, k = max(1, n//10): blocks 3,6,...,27 of a 30-layer model)",
    )
    sw.add_argument("--scales", default="-4,-1,1,4", help="comma-separated multiples of the vector")
    sw.add_argument(
        "--mmlu",
        default=None,
        help="multiple-choice pairs (prompt/correct/incorrect) for the capability cost",
    )
    sw.add_argument("--mmlu-limit", type=int, default=100)
    add_data_options(sw, kinds=False)
    _steer_options(sw)
    sw.set_defaults(func=_sweep, kind="pairs")

    tr = sub.add_parser("train", help="one steering vector at one site from all pairs")
    tr.add_argument("--data", required=True)
    tr.add_argument("--site", required=True)
    tr.add_argument("--out", required=True)
    tr.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="scale saved with the vector (-M steer_scale overrides)",
    )
    add_data_options(tr, kinds=False)
    _steer_options(tr)
    tr.set_defaults(func=_train, kind="pairs")

    ap = sub.add_parser("apply", help="generate with and without a steering vector")
    ap.add_argument("--vector", required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--scale", type=float, default=None)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--model", default="default")
    ap.set_defaults(func=_apply)
