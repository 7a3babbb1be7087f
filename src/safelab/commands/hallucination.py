"""``safelab hallucination``: a token-level hallucination probe on the model's own answers."""

from __future__ import annotations

import argparse

from safelab.errors import SafelabError


def _names(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _n(value: str) -> int | None:
    if value == "all":
        return None
    try:
        return int(value)
    except ValueError:
        raise SafelabError(f"--n {value!r}: give a number of entities or 'all'") from None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from safelab.hallucination.run import DEFAULT_SITES, HallucinationConfig
    from safelab.hallucination.tables import DEFAULT_DATA_DIR, known_tables

    d = HallucinationConfig()
    p = sub.add_parser(
        "hallucination",
        help="hallucination probe: label the model's own answers against fact tables, train a "
        "token-level probe, compare with log-prob, entropy and sampling-consistency baselines",
    )
    p.add_argument(
        "--tables",
        default=",".join(d.tables),
        help=f"comma-separated fact tables: {', '.join(known_tables())}",
    )
    p.add_argument("--out", default="runs/hallucination", help="output folder (rerun to resume)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="the truth/datasets folder")
    p.add_argument("--model", default=d.model)
    p.add_argument("--n", type=_n, default=d.n_per_table, help="entities per table, or 'all'")
    p.add_argument("--max-tokens", type=int, default=d.max_new_tokens, help="answer budget")
    p.add_argument(
        "--samples",
        type=int,
        default=d.n_samples,
        help="sampled answers for the consistency baseline",
    )
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--sites", default=",".join(DEFAULT_SITES), help="probe sites (comma-separated)")
    p.add_argument(
        "--probe", default=None, help="evaluate this saved probe instead of training one"
    )
    p.add_argument("--test-frac", type=float, default=d.test_frac)
    p.add_argument("--fpr", type=float, default=d.fpr, help="false-positive rate for recall")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--resamples", type=int, default=d.n_resamples, help="bootstrap resamples")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--device", default=None, help="cpu (default), cuda, ...")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; 1 is faster on oversubscribed cores)",
    )
    p.set_defaults(func=cmd_hallucination)


def cmd_hallucination(args: argparse.Namespace) -> int:
    from safelab.hallucination.run import HallucinationConfig, run_hallucination

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = HallucinationConfig(
        tables=_names(args.tables),
        data_dir=args.data_dir,
        model=args.model,
        n_per_table=args.n,
        max_new_tokens=args.max_tokens,
        n_samples=args.samples,
        temperature=args.temperature,
        sites=_names(args.sites),
        probe=args.probe,
        test_frac=args.test_frac,
        fpr=args.fpr,
        seed=args.seed,
        n_resamples=args.resamples,
        batch_size=args.batch_size,
        device=args.device,
    )
    result = run_hallucination(cfg, args.out)
    print(result.summary())
    print(
        f"answers: {result.generated} generated, {result.reused} reused; "
        f"metrics: {result.out / 'metrics.json'}; view: {result.out / 'view.html'}"
    )
    return 0
