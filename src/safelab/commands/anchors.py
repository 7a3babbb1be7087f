"""``safelab anchors``: which sentences of a reasoning trace decide the answer (thought anchors)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "anchors",
        help="thought anchors: resampling, counterfactual, forced-answer, receiver-head and "
        "suppression importance of each sentence of a reasoning trace",
    )
    p.add_argument(
        "prompt", nargs="*", help="a question: the model writes its trace, then it is analysed"
    )
    p.add_argument(
        "--data",
        default=None,
        help="planted (ground truth, default without a prompt), comparison, addition, agentic, "
        "or a .jsonl of traces (question, reasoning, answer[, options]) or questions",
    )
    p.add_argument("--rollouts", type=int, default=20, help="rollouts per prefix (default 20)")
    p.add_argument("--out", default="runs/anchors", help="output folder (rerun to resume)")
    p.add_argument("--model", default="default")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens per rollout")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--similarity", type=float, default=0.8, help="counterfactual cosine threshold")
    p.add_argument("--embedder", default="auto", help="auto, minilm or model (mean-pooled states)")
    p.add_argument(
        "--no-attention", action="store_true", help="skip the attention and suppression views"
    )
    p.add_argument(
        "--no-resampling",
        action="store_true",
        help="skip the rollouts: forced-answer, receiver and suppression views only",
    )
    p.add_argument(
        "--elicited",
        choices=("sampled", "expected"),
        default="sampled",
        help="a rollout without an answer line counts as the option drawn after 'Answer:' "
        "(sampled, default) or as the distribution it is drawn from (expected)",
    )
    p.add_argument("--planted", type=int, default=30, help="planted traces (--data planted)")
    p.add_argument("--controls", type=int, default=10, help="control traces (--data planted)")
    p.add_argument("--sentences", type=int, default=5, help="sentences per planted trace")
    p.add_argument(
        "--problems", type=int, default=10, help="questions (--data comparison|addition)"
    )
    p.add_argument("--limit", type=int, default=None, help="only the first N rows of a data file")
    p.add_argument(
        "--threshold", type=float, default=0.1, help="anchor rule: CI lower bound (nats)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--from-end",
        action="store_true",
        help="work through the traces last first (a second process on the same --out)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="summarise the traces finished so far in --out (no model, no sampling)",
    )
    p.set_defaults(func=cmd_anchors)


def cmd_anchors(args: argparse.Namespace) -> int:
    from safelab.anchors.run import AnchorsConfig, report_only, run_anchors

    prompt = " ".join(args.prompt) if args.prompt else None
    cfg = AnchorsConfig(
        data=args.data or ("planted" if prompt is None else None),
        prompt=prompt,
        model=args.model,
        rollouts=args.rollouts,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        similarity=args.similarity,
        embedder=args.embedder,
        attention=not args.no_attention,
        resample=not args.no_resampling,
        elicited=args.elicited,
        n_planted=args.planted,
        n_controls=args.controls,
        n_problems=args.problems,
        n_sentences=args.sentences,
        limit=args.limit,
        anchor_threshold=args.threshold,
        seed=args.seed,
        from_end=args.from_end,
    )
    result = report_only(cfg, args.out) if args.report_only else run_anchors(cfg, args.out)
    s = result.metrics["summary"]
    for m, v in s.get("planted", {}).get("by_method", {}).items():
        t = v["top1"]
        print(f"planted {m:15s} mean rank {v['mean_rank']:.2f}  top-1 {t['k']}/{t['n']}")
    if "controls" in s:
        c = s["controls"]["false_anchor_rate"]
        print(f"controls false-anchor rate {c['k']}/{c['n']}")
    print(f"report: {result.report_path}")
    print(f"metrics: {result.metrics_path}")
    return 0
