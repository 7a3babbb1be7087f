"""Benchmark: the attribution graph of a 16-token prompt on 2 cores, time and peak memory.

Times ``safelab.attribution.trace.build_graph`` (clean pass, transcoder encoding, the batched
backward passes of the local replacement model for the logit and up to ``--max-feature-nodes``
features) plus pruning and scoring, for a prompt of exactly 16 tokens. The peer in the same run
is one plain forward + backward pass of the model over the same prompt (``model.hf``,
gradients to the input embeddings); the ratio says how many such passes a graph costs.
Peak memory is the process's maximum resident set size (``ru_maxrss``).

Run::

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python bench/trace.py --transcoders runs/transcoders

Last line: ``{"graph_s", "peer_s", "graph_vs_peer", "n_tokens", "n_features", "peak_rss_mb", ...}``.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from _util import final_json, machine_note

PROMPT = "Fact: the capital of the country of France is the city of Paris, and of Italy it is"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--transcoders", default="runs/transcoders")
    p.add_argument("--max-feature-nodes", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--target", default=" Rome")
    args = p.parse_args()

    from safelab.attribution.graph import graph_scores, prune
    from safelab.attribution.trace import build_graph, target_token
    from safelab.models.loading import load_model
    from safelab.transcoders.transcoder import load_transcoders

    torch.set_num_threads(args.threads)
    model = load_model("default", dtype="float32")
    ts = load_transcoders(args.transcoders)
    ids = torch.tensor(model.tokenizer(PROMPT)["input_ids"])[:16]
    tok = target_token(model, args.target)
    print(machine_note(), f"n_tokens={len(ids)}", flush=True)

    def peer() -> None:
        emb = model.hf.get_input_embeddings()(ids[None]).detach().requires_grad_()
        out = model.hf(inputs_embeds=emb).logits[0, -1, tok]
        out.backward()

    peer()
    t0 = time.perf_counter()
    for _ in range(3):
        peer()
    peer_s = (time.perf_counter() - t0) / 3
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t1 = time.perf_counter()
    _, graph = build_graph(
        model, ts, ids, tok, max_feature_nodes=args.max_feature_nodes, batch_size=args.batch_size
    )
    pruned = prune(graph)
    rep, comp = graph_scores(graph)
    graph_s = time.perf_counter() - t1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"graph {graph_s:.1f}s  peer {peer_s:.2f}s  {machine_note()}", flush=True)
    final_json(
        {
            "graph_s": round(graph_s, 2),
            "peer_s": round(peer_s, 3),
            "graph_vs_peer": round(graph_s / peer_s, 1),
            "n_tokens": len(ids),
            "n_active": int(graph.active_features.shape[0]),
            "n_features": graph.n_features,
            "max_feature_nodes": args.max_feature_nodes,
            "batch_size": args.batch_size,
            "kept_nodes": int(pruned.node_mask.sum()),
            "replacement_score": rep,
            "completeness_score": comp,
            "peak_rss_mb_before_graph": round(rss0),
            "peak_rss_mb": round(rss),
            "threads": args.threads,
        }
    )


if __name__ == "__main__":
    main()
