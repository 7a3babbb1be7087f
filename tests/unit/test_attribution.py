"""Attribution graphs on a tiny random Llama with random transcoders: exactness and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from safelab.attribution.export import graph_json
from safelab.attribution.graph import (
    attribute,
    graph_scores,
    logit_direction,
    prune,
    total_effects,
)
from safelab.attribution.replacement import clean_state, local_replacement
from safelab.attribution.trace import target_token
from safelab.attribution.viewer import render_html
from safelab.cli import main
from safelab.errors import SafelabError
from safelab.transcoders.transcoder import (
    Transcoder,
    TranscoderSetMeta,
    load_transcoders,
    save_layer,
    write_set_files,
)
from tests.tiny import tiny_model

PROMPT = "Paris is the capital of France."


def random_set(model, folder: Path, d_sae: int = 24, skip: bool = True, name: str | None = None):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(1)
    d = model.d_model
    for layer in range(model.n_layers):
        w = torch.randn(d_sae, d, generator=g)
        w /= w.norm(dim=1, keepdim=True)
        tc = Transcoder(
            layer=layer,
            W_enc=0.5 * w.T.contiguous(),
            b_enc=0.05 * torch.randn(d_sae, generator=g),
            W_dec=0.1 * w,
            b_dec=0.01 * torch.randn(d, generator=g),
            threshold=torch.full((d_sae,), 0.3),
            W_skip=0.05 * torch.randn(d, d, generator=g) if skip else None,
        )
        save_layer(tc, folder)
    meta = TranscoderSetMeta(model=name or model.name, n_layers=model.n_layers, d_model=d)
    write_set_files(folder, meta, list(range(model.n_layers)))
    return load_transcoders(folder)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    model = tiny_model("llama")
    ts = random_set(model, tmp_path_factory.mktemp("tc"))
    ids = torch.tensor(model.tokenizer(PROMPT)["input_ids"])
    state = clean_state(model, ids, ts)
    target = int(state.logits.argmax())
    graph = attribute(model, state, ts, target, max_feature_nodes=100_000, batch_size=32)
    return model, ts, state, graph


def test_local_replacement_model_reproduces_the_logits(setup) -> None:  # type: ignore[no-untyped-def]
    model, ts, state, _ = setup
    assert sum(int((a > 0).sum()) for a in state.acts) > 20  # the graph has features to attribute
    with torch.no_grad():
        clean = model.hf(input_ids=state.ids[None]).logits[0, -1]
        with local_replacement(model, state, ts):
            h = model.adapter.body()(inputs_embeds=state.embeds[None], use_cache=False)
        replaced = model.hf.lm_head(h.last_hidden_state)[0, -1]
    torch.testing.assert_close(replaced, clean, atol=1e-4, rtol=1e-4)
    # and the swap is undone: the real MLPs are back
    assert all(type(b.mlp).__name__ == "LlamaMLP" for b in model.adapter.blocks())


def test_edges_into_every_node_add_up_to_its_value(setup) -> None:  # type: ignore[no-untyped-def]
    model, ts, state, graph = setup
    adj = graph.adjacency_matrix
    torch.testing.assert_close(adj[-1].sum(), graph.logit_values[0], atol=1e-4, rtol=1e-4)
    h = torch.tensor(0.0)
    # the logit row read by hand: the demeaned logit of the target
    with torch.no_grad():
        h = model.hf(input_ids=state.ids[None], output_hidden_states=True).hidden_states[-1][0, -1]
    assert float(h @ logit_direction(model, int(graph.logit_tokens[0]))) == pytest.approx(
        float(graph.logit_values[0]), abs=1e-4
    )
    assert graph.n_features > 10
    for row in range(graph.n_features):
        layer, pos, feat, _ = graph.feature(row)
        pre = float(state.mlp_in[layer][pos] @ ts[layer].W_enc[:, feat])
        assert float(adj[row].sum()) == pytest.approx(pre, abs=1e-4)
        # a feature is only fed by sources below it and at or before its position
        for src in adj[row].nonzero().flatten().tolist():
            if graph.node_kind(src) == "feature":
                s_layer, s_pos, _, _ = graph.feature(src)
                assert s_layer < layer and s_pos <= pos


def test_batching_does_not_change_the_rows(setup) -> None:  # type: ignore[no-untyped-def]
    model, ts, state, graph = setup
    target = int(graph.logit_tokens[0])
    small = attribute(model, state, ts, target, max_feature_nodes=6, batch_size=1)
    for r in range(small.n_features):
        node = int(small.selected_features[r])
        big_row = int((graph.selected_features == node).nonzero()[0])
        torch.testing.assert_close(
            small.adjacency_matrix[r, small.n_features :],
            graph.adjacency_matrix[big_row, graph.n_features :],
            atol=1e-5,
            rtol=1e-4,
        )


def test_pruning_scores_and_export(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, _, _, graph = setup
    pruned = prune(graph, 0.8, 0.98)
    assert bool(pruned.node_mask[-1]) and bool(pruned.node_mask[graph.token_node(0)])
    assert 0 < int(pruned.node_mask[: graph.n_features].sum()) < graph.n_features
    replacement, completeness = graph_scores(graph)
    assert 0.0 <= replacement <= 1.0 and 0.0 <= completeness <= 1.0
    everything = prune(graph, 1.0, 1.0)
    assert int(everything.edge_mask.sum()) >= int(pruned.edge_mask.sum())
    assert total_effects(graph).shape == (graph.n_features,)
    data = graph_json(
        graph, pruned, model.tokenizer, slug="t", scan="s", prompt=PROMPT, node_threshold=0.8
    )
    ids = {n["node_id"] for n in data["nodes"]}
    assert all(link["source"] in ids and link["target"] in ids for link in data["links"])
    kinds = {n["feature_type"] for n in data["nodes"]}
    assert {"embedding", "logit", "cross layer transcoder"} <= kinds
    assert sum(n["is_target_logit"] for n in data["nodes"]) == 1
    json.dumps(data)


def test_viewer_draws_every_node_in_chromium(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.browser import dump_dom

    model, _, _, graph = setup
    pruned = prune(graph)
    data = graph_json(
        graph, pruned, model.tokenizer, slug="t", scan="s", prompt=PROMPT, node_threshold=0.8
    )
    data["safelab"] = {"target": "x", "top_features": [], "contexts": {}}
    page = tmp_path / "graph.html"
    page.write_text(render_html(data))
    dom = dump_dom(page, tmp_path / "profile")
    assert f'data-rendered="{len(data["nodes"])}"' in dom
    assert dom.count('class="node') == len(data["nodes"])
    assert dom.count('class="edge"') == len(data["links"])
    assert "incoming" in dom  # the target logit's panel opened on load


# -- bad input -------------------------------------------------------------------------------------
def test_a_target_of_several_tokens_names_its_tokens() -> None:
    model = tiny_model("llama")
    with pytest.raises(SafelabError, match=r"is \d+ tokens \[.*\], not one"):
        target_token(model, " quick brown fox")


def test_a_set_missing_a_layer_or_for_another_model_is_refused(tmp_path: Path) -> None:
    model = tiny_model("llama")
    ts = random_set(model, tmp_path / "a", skip=False)
    (tmp_path / "a" / "layer_1.safetensors").unlink()
    with pytest.raises(SafelabError, match="does not cover every layer.*layers 1 are missing"):
        load_transcoders(tmp_path / "a").check_fits(model)
    ts = random_set(model, tmp_path / "b", skip=False, name="another-model")
    with pytest.raises(SafelabError, match="trained on another-model, not tiny-llama"):
        ts.check_fits(model)
    wide = tiny_model("qwen2")
    wide.name = model.name
    ts = random_set(model, tmp_path / "c", skip=False)
    ts.meta.d_model = 64
    with pytest.raises(SafelabError, match="d_model"):
        ts.check_fits(wide)


def test_cli_bad_transcoders_exits_2_with_one_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(
        ["trace", "--prompt", "x", "--target", " Paris", "--transcoders", str(tmp_path / "nope")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "no transcoder set" in err
