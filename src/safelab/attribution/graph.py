"""The attribution graph of one prompt and target: nodes, direct-effect edges, pruning, scores.

Nodes, in circuit-tracer's order: active features (visited ones), error nodes (layer-major,
``n_layers * n_pos``), token embeddings (``n_pos``), logit nodes. ``adjacency[t, s]`` is the
direct effect of source ``s`` on target ``t`` in the local replacement model
(:mod:`safelab.attribution.replacement`): the source's output vector (activation times decoder
row, the error vector, the token embedding) dotted with the gradient of the target at the
source's write site. A feature's target value is its pre-activation (without ``b_enc``); a
logit node's is the logit minus the mean logit.

Rows are computed in batches, features chosen by their current influence on the logit
(circuit-tracer's order), up to ``max_feature_nodes``; the graph keeps the visited features.
Pruning and the two scores follow ``circuit_tracer.graph`` (``prune_graph``,
``compute_graph_scores``): influence is the power series of the row-normalised absolute
adjacency weighted by the logit probabilities; nodes are kept to ``node_threshold`` of the
cumulative influence, edges to ``edge_threshold``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from safelab.attribution.replacement import PromptState, local_replacement

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel
    from safelab.transcoders.transcoder import TranscoderSet


@dataclass
class Graph:
    """An unpruned attribution graph (circuit-tracer's ``Graph`` fields, CPU tensors)."""

    input_tokens: Tensor
    """``[n_pos]`` token ids."""
    active_features: Tensor
    """``[n_active, 3]`` (layer, pos, feature) of every active feature."""
    activation_values: Tensor
    selected_features: Tensor
    """Indices into ``active_features`` of the feature nodes (rows computed)."""
    logit_tokens: Tensor
    logit_probabilities: Tensor
    adjacency_matrix: Tensor
    """``[N, N]``: targets (rows) by sources (columns), N = features + errors + tokens + logits."""
    n_layers: int
    logit_values: Tensor
    """Demeaned logit of each logit node (its row sums to this, exactly, in the full graph)."""

    @property
    def n_pos(self) -> int:
        return int(self.input_tokens.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.selected_features.shape[0])

    @property
    def n_logits(self) -> int:
        return int(self.logit_tokens.shape[0])

    def feature(self, node: int) -> tuple[int, int, int, float]:
        """``(layer, pos, feature, activation)`` of feature node ``node``."""
        i = int(self.selected_features[node])
        layer, pos, feat = (int(v) for v in self.active_features[i])
        return layer, pos, feat, float(self.activation_values[i])

    def error_node(self, layer: int, pos: int) -> int:
        return self.n_features + layer * self.n_pos + pos

    def token_node(self, pos: int) -> int:
        return self.n_features + self.n_layers * self.n_pos + pos

    def logit_node(self, i: int = 0) -> int:
        return self.n_features + self.n_layers * self.n_pos + self.n_pos + i

    def node_kind(self, node: int) -> str:
        if node < self.n_features:
            return "feature"
        if node < self.token_node(0):
            return "error"
        if node < self.logit_node(0):
            return "token"
        return "logit"


# -- the engine ----------------------------------------------------------------------------------
class _Sources:
    """Every source's output vector, grouped by layer, for the edge read-out."""

    def __init__(self, state: PromptState, transcoders: TranscoderSet) -> None:
        self.state = state
        self.active: list[Tensor] = []  # per layer [m, 2] (pos, feat)
        self.vectors: list[Tensor] = []  # per layer [m, d]: a * W_dec[feat]
        rows = []
        for layer in range(state.n_layers):
            a = state.acts[layer]
            nz = a.nonzero()
            self.active.append(nz)
            w = transcoders[layer].W_dec[nz[:, 1]]
            self.vectors.append(a[nz[:, 0], nz[:, 1]][:, None] * w)
            rows.append(
                torch.cat([torch.full((len(nz), 1), layer), nz], dim=1)
                if len(nz)
                else torch.zeros(0, 3, dtype=torch.long)
            )
        self.index = torch.cat(rows).long()  # [n_active, 3] (layer, pos, feat)
        self.values = torch.cat(
            [state.acts[layer][nz[:, 0], nz[:, 1]] for layer, nz in enumerate(self.active)]
        )
        self.offsets = [0]
        for nz in self.active:
            self.offsets.append(self.offsets[-1] + len(nz))

    @property
    def n_active(self) -> int:
        return int(self.index.shape[0])


def _rows(
    model: WhiteBoxModel,
    state: PromptState,
    transcoders: TranscoderSet,
    src: _Sources,
    targets: list[tuple[int, int, Tensor]],
) -> tuple[Tensor, Tensor, Tensor]:
    """Direct effects on each target ``(layer, pos, read vector)`` (layer ``n_layers`` = logit).

    Returns ``(feature_edges [B, n_active], error_edges [B, n_layers, n_pos], token_edges
    [B, n_pos])``.
    """
    b, n, d = len(targets), state.n_pos, state.embeds.shape[1]
    dev = model.device
    leaf_emb = torch.zeros(b, n, d, device=dev, requires_grad=True)
    with local_replacement(model, state, transcoders) as reps:
        for rep in reps:
            rep.leaf = torch.zeros(b, n, d, device=dev, requires_grad=True)
        embeds = state.embeds.to(dev)[None].expand(b, -1, -1) + leaf_emb
        with torch.enable_grad():
            h = model.adapter.body()(inputs_embeds=embeds, use_cache=False).last_hidden_state
            total = torch.zeros((), device=dev)
            for i, (layer, pos, vec) in enumerate(targets):
                x = h if layer == state.n_layers else reps[layer].seen
                assert x is not None
                total = total + x[i, pos] @ vec.to(dev)
            leaves = [leaf_emb] + [rep.leaf for rep in reps if rep.leaf is not None]
            grads = torch.autograd.grad(total, leaves, allow_unused=True)
    g_emb = grads[0] if grads[0] is not None else torch.zeros_like(leaf_emb)
    g_mlp = [g if g is not None else torch.zeros_like(leaf_emb) for g in grads[1:]]
    tok = (g_emb * state.embeds.to(dev)[None]).sum(-1)
    err = torch.stack(
        [(g * state.errors[layer].to(dev)[None]).sum(-1) for layer, g in enumerate(g_mlp)], dim=1
    )
    feats = []
    for layer, g in enumerate(g_mlp):
        nz = src.active[layer]
        if len(nz):
            feats.append((g[:, nz[:, 0]] * src.vectors[layer].to(dev)[None]).sum(-1))
    fe = torch.cat(feats, dim=1) if feats else torch.zeros(b, 0, device=dev)
    return fe.detach().cpu(), err.detach().cpu(), tok.detach().cpu()


def logit_direction(model: WhiteBoxModel, token: int) -> Tensor:
    """``W_U[token] - mean(W_U)``: reads the demeaned logit from the final normed residual."""
    w = model.hf.get_output_embeddings().weight.detach().float()
    return (w[token] - w.mean(0)).cpu()


def attribute(
    model: WhiteBoxModel,
    state: PromptState,
    transcoders: TranscoderSet,
    target: int,
    *,
    max_feature_nodes: int = 1024,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> Graph:
    """The unpruned graph of ``state``'s prompt for the logit of token ``target``."""
    src = _Sources(state, transcoders)
    n_layers, n_pos = state.n_layers, state.n_pos
    n_err = n_layers * n_pos
    probs = torch.softmax(state.logits.double(), -1)
    logit_vec = logit_direction(model, target)
    enc_cols = {layer: transcoders[layer].W_enc for layer in range(n_layers)}

    # rows: a dict node -> (feature edges over all active, error edges, token edges)
    rows: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
    fe, er, to = _rows(model, state, transcoders, src, [(n_layers, n_pos - 1, logit_vec)])
    logit_row = (fe[0], er[0].flatten(), to[0])
    budget = min(max_feature_nodes, src.n_active)
    done = 0
    while len(rows) < budget:
        influence = _partial_influence(src.n_active, logit_row, rows)
        if rows:
            influence[list(rows)] = -1.0
        order = torch.argsort(influence, descending=True)
        pick = [int(i) for i in order[: min(batch_size, budget - len(rows))] if influence[i] > 0]
        if not pick:
            break
        targets = []
        for i in pick:
            layer, pos, feat = (int(v) for v in src.index[i])
            targets.append((layer, pos, enc_cols[layer][:, feat]))
        fe, er, to = _rows(model, state, transcoders, src, targets)
        for j, i in enumerate(pick):
            rows[i] = (fe[j], er[j].flatten(), to[j])
        done += len(pick)
        if progress is not None:
            progress(done, budget)

    selected = torch.tensor(sorted(rows), dtype=torch.long)
    nf = len(selected)
    size = nf + n_err + n_pos + 1
    adj = torch.zeros(size, size)
    for r, i in enumerate(selected.tolist()):
        fr, er_, tr = rows[i]
        adj[r, :nf] = fr[selected]
        adj[r, nf : nf + n_err] = er_
        adj[r, nf + n_err : nf + n_err + n_pos] = tr
    adj[-1, :nf] = logit_row[0][selected] if nf else adj[-1, :0]
    adj[-1, nf : nf + n_err] = logit_row[1]
    adj[-1, nf + n_err : nf + n_err + n_pos] = logit_row[2]
    logit_value = float(state.logits[target] - state.logits.mean())
    return Graph(
        input_tokens=state.ids.clone(),
        active_features=src.index,
        activation_values=src.values,
        selected_features=selected,
        logit_tokens=torch.tensor([target]),
        logit_probabilities=probs[target : target + 1].float(),
        adjacency_matrix=adj,
        n_layers=n_layers,
        logit_values=torch.tensor([logit_value]),
    )


def _partial_influence(
    n_active: int,
    logit_row: tuple[Tensor, Tensor, Tensor],
    rows: dict[int, tuple[Tensor, Tensor, Tensor]],
) -> Tensor:
    """Influence of every active feature on the logit through the rows computed so far.

    circuit-tracer's ``compute_partial_influences``: each computed row is normalised by its
    absolute sum over all sources (features, errors, tokens); uncomputed features are sinks.
    """
    nodes = list(rows)
    full = [torch.cat([r.abs() for r in logit_row])]
    full += [torch.cat([r.abs() for r in rows[i]]) for i in nodes]
    mat = torch.stack(full)
    mat = mat / mat.sum(1, keepdim=True).clamp_min(1e-10)
    row_node = torch.tensor(nodes, dtype=torch.long)
    weights = torch.zeros(len(full))
    weights[0] = 1.0
    influence = torch.zeros(mat.shape[1])
    for _ in range(512):
        prod = weights @ mat
        if not bool((prod > 0).any()):
            break
        influence += prod
        weights = torch.zeros(len(full))
        if len(nodes):
            weights[1:] = prod[row_node]
    return influence[:n_active]


# -- pruning and scores (circuit_tracer.graph, same definitions) -----------------------------------
def normalize_matrix(matrix: Tensor) -> Tensor:
    m = matrix.abs()
    return m / m.sum(dim=1, keepdim=True).clamp(min=1e-10)


def compute_influence(a: Tensor, logit_weights: Tensor, max_iter: int = 1000) -> Tensor:
    """``w @ (A + A^2 + ...)`` by repeated products (the graph is acyclic: it terminates)."""
    cur = logit_weights @ a
    influence = cur.clone()
    for _ in range(max_iter):
        cur = cur @ a
        if not bool(cur.any()):
            break
        influence += cur
    return influence


def find_threshold(scores: Tensor, threshold: float) -> Tensor:
    s = torch.sort(scores, descending=True).values
    cum = torch.cumsum(s, dim=0) / torch.sum(s).clamp_min(1e-20)
    i = min(
        int(torch.searchsorted(cum, torch.tensor(threshold, dtype=cum.dtype)).item()), len(s) - 1
    )
    return s[i]


@dataclass
class Pruned:
    node_mask: Tensor
    edge_mask: Tensor
    cumulative_scores: Tensor
    influence: Tensor


def logit_weights(graph: Graph) -> Tensor:
    w = torch.zeros(graph.adjacency_matrix.shape[0])
    w[-graph.n_logits :] = graph.logit_probabilities
    return w


def prune(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Pruned:
    """circuit-tracer's ``prune_graph``: influence-ranked nodes, then edges, then dangling nodes."""
    adj = graph.adjacency_matrix
    n_logits, n_tokens, n_features = graph.n_logits, graph.n_pos, graph.n_features
    w = logit_weights(graph)
    node_influence = compute_influence(normalize_matrix(adj), w)
    node_mask = node_influence >= find_threshold(node_influence, node_threshold)
    node_mask[-n_logits - n_tokens :] = True
    pruned = adj.clone()
    pruned[~node_mask] = 0
    pruned[:, ~node_mask] = 0
    normed = normalize_matrix(pruned)
    edge_scores = normed * (compute_influence(normed, w) + w)[:, None]
    edge_mask = edge_scores >= find_threshold(edge_scores.flatten(), edge_threshold)
    old = node_mask.clone()
    node_mask[: -n_logits - n_tokens] &= edge_mask[:, : -n_logits - n_tokens].any(0)
    node_mask[:n_features] &= edge_mask[:n_features].any(1)
    while not torch.equal(node_mask, old):
        old[:] = node_mask
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False
        node_mask[: -n_logits - n_tokens] &= edge_mask[:, : -n_logits - n_tokens].any(0)
        node_mask[:n_features] &= edge_mask[:n_features].any(1)
    s, order = torch.sort(node_influence, descending=True)
    cum = torch.cumsum(s, dim=0) / torch.sum(s).clamp_min(1e-20)
    scores = torch.zeros_like(node_influence)
    scores[order] = cum
    return Pruned(node_mask, edge_mask, scores, node_influence)


def graph_scores(graph: Graph) -> tuple[float, float]:
    """circuit-tracer's ``(replacement_score, completeness_score)``."""
    n_f, n_pos = graph.n_features, graph.n_pos
    e0, e1 = n_f, n_f + graph.n_layers * n_pos
    t1 = e1 + n_pos
    w = logit_weights(graph)
    normed = normalize_matrix(graph.adjacency_matrix)
    infl = compute_influence(normed, w)
    tok, err = infl[e1:t1].sum(), infl[e0:e1].sum()
    replacement = float(tok / (tok + err).clamp_min(1e-20))
    non_error = 1 - normed[:, e0:e1].sum(-1)
    out_infl = infl + w
    completeness = float((non_error * out_infl).sum() / out_infl.sum())
    return replacement, completeness


def total_effects(graph: Graph) -> Tensor:
    """Signed total effect of removing each feature node on the logit, through the graph.

    ``H_s = A[logit, s] + sum_t H_t * A[t, s] / a_t``: ablating feature ``t``'s inputs by
    ``A[t, s]`` lowers its activation by as much (JumpReLU is linear while active), and ``H_t /
    a_t`` is the logit's change per unit of ``t``. Predicted change of the logit when ``s`` is
    zeroed: ``-H_s``.
    """
    nf = graph.n_features
    adj = graph.adjacency_matrix
    acts = torch.tensor([graph.feature(i)[3] for i in range(nf)])
    layers = torch.tensor([graph.feature(i)[0] for i in range(nf)])
    h = adj[-1, :nf].double().clone()
    per_unit = adj[:nf, :nf].double() / acts.double().clamp_min(1e-12)[:, None]
    # process targets from the top layer down, so each H_t is final before it is pushed back
    for layer in sorted(set(layers.tolist()), reverse=True):
        rows = (layers == layer).nonzero().squeeze(1)
        if len(rows):
            h += h[rows] @ per_unit[rows]
    return h.float()
