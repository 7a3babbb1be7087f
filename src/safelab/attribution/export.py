"""A pruned graph as circuit-tracer's frontend JSON (``circuit_tracer.frontend.graph_models``).

The file has circuit-tracer's ``Model`` shape: ``metadata`` (slug, scan, prompt tokens, node
threshold, ``schema_version: 1``), ``qParams``, ``nodes`` (``node_id``, ``feature``, ``layer``,
``ctx_idx``, ``feature_type``, ``jsNodeId``, ``influence``, ``activation``, ...) and ``links``
(``source``, ``target``, ``weight``), with node ids formed exactly as circuit-tracer forms them
(``{layer}_{feature}_{pos}``, ``0_{layer}_{pos}`` for errors, ``E_{token}_{pos}``,
``{n_layers + 1}_{token}_{pos}`` for logits), so its viewer (``circuit_tracer.frontend``)
opens it beside a ``graph-metadata.json``. safelab adds a ``safelab`` key (scores, timings,
top contexts) that the viewer ignores.
"""

from __future__ import annotations

from typing import Any

from safelab.attribution.graph import Graph, Pruned


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def graph_json(
    graph: Graph,
    pruned: Pruned,
    tokenizer: Any,
    *,
    slug: str,
    scan: str,
    prompt: str,
    node_threshold: float,
) -> dict[str, Any]:
    nodes: dict[int, dict[str, Any]] = {}
    n_layers, n_pos = graph.n_layers, graph.n_pos
    scores = pruned.cumulative_scores
    for node in pruned.node_mask.nonzero().flatten().tolist():
        kind = graph.node_kind(node)
        infl = float(scores[node])
        if kind == "feature":
            layer, pos, feat, act = graph.feature(node)
            nodes[node] = _node(
                node_id=f"{layer}_{feat}_{pos}",
                feature=_cantor(layer, feat),
                layer=str(layer),
                ctx_idx=pos,
                feature_type="cross layer transcoder",
                jsNodeId=f"{layer}_{feat}-0",
                influence=infl,
                activation=act,
            )
        elif kind == "error":
            layer, pos = divmod(node - graph.n_features, n_pos)
            nodes[node] = _node(
                node_id=f"0_{layer}_{pos}",
                feature=-1,
                layer=str(layer),
                ctx_idx=pos,
                feature_type="mlp reconstruction error",
                jsNodeId=f"{layer}_{pos}-0",
                influence=infl,
            )
        elif kind == "token":
            pos = node - graph.token_node(0)
            tok = int(graph.input_tokens[pos])
            nodes[node] = _node(
                node_id=f"E_{tok}_{pos}",
                feature=pos,
                layer="E",
                ctx_idx=pos,
                feature_type="embedding",
                jsNodeId=f"E_{tok}-{pos}",
                influence=infl,
            )
        else:
            i = node - graph.logit_node(0)
            tok = int(graph.logit_tokens[i])
            p = float(graph.logit_probabilities[i])
            top = str(n_layers + 1)
            nodes[node] = _node(
                node_id=f"{top}_{tok}_{n_pos - 1}",
                feature=tok,
                layer=top,
                ctx_idx=n_pos - 1,
                feature_type="logit",
                token_prob=p,
                is_target_logit=i == 0,
                jsNodeId=f"L_{tok}-{n_pos - 1}",
                clerp=f'Output "{tokenizer.decode([tok])}" (p={p:.3f})',
            )
    dsts, srcs = pruned.edge_mask.nonzero(as_tuple=True)
    weights = graph.adjacency_matrix[dsts, srcs].tolist()
    links = [
        {"source": nodes[s]["node_id"], "target": nodes[t]["node_id"], "weight": w}
        for s, t, w in zip(srcs.tolist(), dsts.tolist(), weights, strict=True)
        if s in nodes and t in nodes
    ]
    connected = {x for link in links for x in (link["source"], link["target"])}
    used = [
        n
        for n in nodes.values()
        if n["node_id"] in connected or n["feature_type"] in ("embedding", "logit")
    ]
    return {
        "metadata": {
            "slug": slug,
            "scan": scan,
            "transcoder_list": [],
            "prompt_tokens": [tokenizer.decode([int(t)]) for t in graph.input_tokens],
            "prompt": prompt,
            "node_threshold": node_threshold,
            "schema_version": 1,
        },
        "qParams": {
            "pinnedIds": [],
            "supernodes": [],
            "linkType": "both",
            "clickedId": "",
            "sg_pos": "",
        },
        "nodes": used,
        "links": links,
    }


def _node(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "token_prob": 0.0,
        "is_target_logit": False,
        "run_idx": 0,
        "reverse_ctx_idx": 0,
        "clerp": "",
        "influence": None,
        "activation": None,
    }
    base.update(fields)
    return base
