"""``run_trace(cfg, out)``: one prompt's attribution graph, as JSON and as a viewer page.

>>> cfg = TraceConfig(prompt="The capital of France is", target=" Paris", transcoders="runs/tc")
>>> result = run_trace(cfg, "runs/trace-paris")
>>> result.replacement_score, result.completeness_score

``out/graph.json`` is circuit-tracer's frontend JSON (with ``graph-metadata.json`` beside it, so
its viewer lists it), ``out/graph.html`` a self-contained viewer, ``out/metrics.json`` the
config, the scores and the timings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from safelab.errors import SafelabError
from safelab.files import atomic_write_text

if TYPE_CHECKING:
    from safelab.attribution.graph import Graph, Pruned
    from safelab.attribution.replacement import PromptState
    from safelab.models.whitebox import WhiteBoxModel
    from safelab.transcoders.transcoder import TranscoderSet


@dataclass(frozen=True)
class TraceConfig:
    """One attribution graph: the CLI's options and the run's ``metrics.json``."""

    prompt: str
    target: str
    transcoders: str
    model: str = "default"
    chat: bool = False
    """Render ``prompt`` as a user turn with the chat template (generation prompt appended)."""
    max_feature_nodes: int = 512
    batch_size: int = 64
    node_threshold: float = 0.8
    edge_threshold: float = 0.98
    contexts: int = 5
    """Top contexts per feature in the viewer (0: none)."""
    store: str | None = None
    """Store for the contexts (default: the one the transcoders were trained on)."""
    threads: int | None = None


@dataclass
class TraceResult:
    out: Path
    graph_json: Path
    html: Path
    target_token: int
    target_prob: float
    replacement_score: float
    completeness_score: float
    n_active: int
    n_features: int
    n_nodes_kept: int
    n_edges_kept: int
    seconds: dict[str, float] = field(default_factory=dict)
    top_features: list[dict[str, Any]] = field(default_factory=list)


def target_token(model: WhiteBoxModel, target: str) -> int:
    """The single token id of ``target``; one line naming its tokens when it is not one token."""
    ids = model.tokenizer(target, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = [model.tokenizer.decode([i]) for i in ids]
        hint = f" (try {pieces[0]!r})" if pieces else ""
        raise SafelabError(
            f"--target {target!r} is {len(ids)} tokens {pieces}, not one: give a single token{hint}"
        )
    return int(ids[0])


def prompt_ids(model: WhiteBoxModel, prompt: str, chat: bool) -> torch.Tensor:
    from safelab.models.inputs import encode_inputs

    if not prompt.strip():
        raise SafelabError("--prompt is empty: give the text whose next token to attribute")
    inp: Any = [{"role": "user", "content": prompt}] if chat else prompt
    (enc,) = encode_inputs(model, [inp])
    return torch.tensor(enc.ids, dtype=torch.long)


def build_graph(
    model: WhiteBoxModel,
    transcoders: TranscoderSet,
    ids: torch.Tensor,
    target: int,
    *,
    max_feature_nodes: int = 512,
    batch_size: int = 64,
) -> tuple[PromptState, Graph]:
    from safelab.attribution.graph import attribute
    from safelab.attribution.replacement import check_supported, clean_state

    check_supported(model)
    transcoders.check_fits(model)
    state = clean_state(model, ids, transcoders, transcoders.meta.skip_first)
    graph = attribute(
        model,
        state,
        transcoders,
        target,
        max_feature_nodes=max_feature_nodes,
        batch_size=batch_size,
    )
    return state, graph


def run_trace(
    cfg: TraceConfig, out: str | Path, *, model: WhiteBoxModel | None = None
) -> TraceResult:
    """Build, prune and score the graph of ``cfg.prompt`` for ``cfg.target``; write it to ``out``.

    ``model``: an already loaded model to use instead of loading ``cfg.model``.
    """
    from safelab.attribution.export import graph_json
    from safelab.attribution.graph import graph_scores, prune
    from safelab.attribution.viewer import render_html
    from safelab.models.loading import load_model
    from safelab.transcoders.transcoder import load_transcoders

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    for name, v in (("node_threshold", cfg.node_threshold), ("edge_threshold", cfg.edge_threshold)):
        if not 0.0 <= v <= 1.0:
            raise SafelabError(f"--{name.replace('_', '-')} {v} is outside [0, 1]")
    t0 = time.perf_counter()
    transcoders = load_transcoders(cfg.transcoders)
    if model is None:
        model = load_model(cfg.model, dtype="float32")
    transcoders.check_fits(model)
    tok = target_token(model, cfg.target)
    ids = prompt_ids(model, cfg.prompt, cfg.chat)
    t1 = time.perf_counter()
    state, graph = build_graph(
        model,
        transcoders,
        ids,
        tok,
        max_feature_nodes=cfg.max_feature_nodes,
        batch_size=cfg.batch_size,
    )
    t2 = time.perf_counter()
    pruned = prune(graph, cfg.node_threshold, cfg.edge_threshold)
    replacement, completeness = graph_scores(graph)
    t3 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    slug = out.name or "graph"
    data = graph_json(
        graph,
        pruned,
        model.tokenizer,
        slug=slug,
        scan=f"safelab/{Path(cfg.transcoders).name}",
        prompt=model.tokenizer.decode(ids.tolist()),
        node_threshold=cfg.node_threshold,
    )
    contexts = _contexts(cfg, transcoders, model, data)
    top = top_features(graph, pruned, model, transcoders)
    prob = float(graph.logit_probabilities[0])
    seconds = {
        "load": round(t1 - t0, 2),
        "attribute": round(t2 - t1, 2),
        "prune_score": round(t3 - t2, 2),
    }
    summary = {
        "target": cfg.target,
        "target_token": tok,
        "target_prob": prob,
        "top_prediction": model.tokenizer.decode([int(state.logits.argmax())]),
        "replacement_score": replacement,
        "completeness_score": completeness,
        "n_active": int(graph.active_features.shape[0]),
        "n_features": graph.n_features,
        "n_nodes_kept": len(data["nodes"]),
        "n_edges_kept": len(data["links"]),
        "seconds": seconds,
    }
    data["safelab"] = {**summary, "contexts": contexts, "top_features": top}
    gpath = out / "graph.json"
    atomic_write_text(gpath, json.dumps(data) + "\n")
    _graph_metadata(out, data["metadata"])
    html = out / "graph.html"
    atomic_write_text(html, render_html(data))
    seconds["total"] = round(time.perf_counter() - t0, 2)
    atomic_write_text(
        out / "metrics.json",
        json.dumps({"config": dataclasses.asdict(cfg), **summary, "top_features": top}, indent=2)
        + "\n",
    )
    return TraceResult(
        out=out,
        graph_json=gpath,
        html=html,
        target_token=tok,
        target_prob=prob,
        replacement_score=replacement,
        completeness_score=completeness,
        n_active=summary["n_active"],
        n_features=graph.n_features,
        n_nodes_kept=summary["n_nodes_kept"],
        n_edges_kept=summary["n_edges_kept"],
        seconds=seconds,
        top_features=top,
    )


def top_features(
    graph: Graph, pruned: Pruned, model: WhiteBoxModel, transcoders: TranscoderSet, n: int = 10
) -> list[dict[str, Any]]:
    """The kept features with the largest total effect on the logit, with what they promote."""
    from safelab.attribution.graph import total_effects

    h = total_effects(graph)
    kept = [i for i in range(graph.n_features) if bool(pruned.node_mask[i])]
    kept.sort(key=lambda i: -abs(float(h[i])))
    w_u = model.hf.get_output_embeddings().weight.detach().float().cpu()
    out = []
    for i in kept[:n]:
        layer, pos, feat, act = graph.feature(i)
        promoted = (w_u @ transcoders[layer].W_dec[feat]).topk(5).indices.tolist()
        out.append(
            {
                "node_id": f"{layer}_{feat}_{pos}",
                "layer": layer,
                "pos": pos,
                "feature": feat,
                "activation": act,
                "total_effect": float(h[i]),
                "direct_effect": float(graph.adjacency_matrix[-1, i]),
                "promotes": [model.tokenizer.decode([t]) for t in promoted],
            }
        )
    return out


def _contexts(
    cfg: TraceConfig, transcoders: TranscoderSet, model: WhiteBoxModel, data: dict[str, Any]
) -> dict[str, Any]:
    from safelab.attribution.contexts import top_contexts
    from safelab.interp.store import MANIFEST, ActivationStore

    if cfg.contexts <= 0:
        return {}
    where = cfg.store or (transcoders.meta.train or {}).get("store")
    if not where or not (Path(where) / MANIFEST).is_file():
        return {}
    feats = sorted(
        {
            (int(n["layer"]), int(n["node_id"].split("_")[1]))
            for n in data["nodes"]
            if n["feature_type"] == "cross layer transcoder"
        }
    )
    found = top_contexts(ActivationStore(where), transcoders, model.tokenizer, feats, cfg.contexts)
    return {f"{layer}_{feat}": v for (layer, feat), v in found.items()}


def _graph_metadata(out: Path, meta: dict[str, Any]) -> None:
    path = out / "graph-metadata.json"
    have: dict[str, Any] = {"graphs": []}
    if path.is_file():
        with contextlib.suppress(json.JSONDecodeError):
            have = json.loads(path.read_text())
    have["graphs"] = [g for g in have.get("graphs", []) if g.get("slug") != meta["slug"]]
    have["graphs"].append(meta)
    atomic_write_text(path, json.dumps(have, indent=2) + "\n")
