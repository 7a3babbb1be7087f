"""Cross-check with circuit-tracer itself: its loader reads safelab's transcoder set, its engine
computes the same edges as safelab's, and its frontend schema accepts safelab's graph.json.

circuit-tracer (PyPI ``circuit-tracer`` 0.5.0) pins ``transformers<=4.57.3`` and pulls nnsight and
TransformerLens, so it lives in a side virtualenv, never in ``.venv``::

    python -m venv .venv-ct && .venv-ct/bin/pip install torch==2.13.0 circuit-tracer==0.5.0

Two steps, one per environment, sharing a folder::

    .venv/bin/python bench/circuit_tracer_check.py ours --transcoders runs/transcoders --work runs/ctcheck
    .venv-ct/bin/python bench/circuit_tracer_check.py theirs --work runs/ctcheck

``ours`` writes safelab's graph (edges into the logit from every feature, error and token node,
as a safetensors file) and the model folder; ``theirs`` loads the transcoders with
``circuit_tracer.transcoder.load_transcoder_set``, builds circuit-tracer's nnsight
``ReplacementModel`` of the same local model folder (offline), runs ``circuit_tracer.attribute``
for the same prompt and target, and compares the logit's incoming edges feature by feature.
Last line: ``{"features_compared", "max_abs_diff", "pearson", "schema_ok", ...}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

PROMPT = "The capital of France is"
TARGET = " Paris"


def ours(args: argparse.Namespace) -> None:
    from safetensors.torch import save_file

    from safelab.attribution.graph import attribute
    from safelab.attribution.replacement import clean_state
    from safelab.attribution.trace import TraceConfig, run_trace, target_token
    from safelab.models.loading import default_gguf_path, dequantised_folder, load_model
    from safelab.transcoders.transcoder import load_transcoders

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = load_model("default", dtype="float32")
    ts = load_transcoders(args.transcoders)
    ts.check_fits(model)
    ids = torch.tensor(model.tokenizer(PROMPT)["input_ids"])
    tok = target_token(model, TARGET)
    state = clean_state(model, ids, ts)
    graph = attribute(model, state, ts, tok, max_feature_nodes=args.max_feature_nodes)
    nf = graph.n_features
    feats = graph.active_features[graph.selected_features]
    save_file(
        {
            "features": feats.contiguous(),
            "logit_row_features": graph.adjacency_matrix[-1, :nf].contiguous(),
            "logit_row_rest": graph.adjacency_matrix[-1, nf:-1].contiguous(),
            "ids": ids,
            "active": graph.active_features.contiguous(),
            "logits": state.logits.contiguous(),
        },
        str(work / "ours.safetensors"),
    )
    r = run_trace(
        TraceConfig(prompt=PROMPT, target=TARGET, transcoders=args.transcoders, contexts=0),
        work / "trace",
        model=model,
    )
    (work / "ours.json").write_text(
        json.dumps(
            {
                "model_folder": str(dequantised_folder(default_gguf_path())),
                "transcoders": str(Path(args.transcoders).resolve()),
                "target": tok,
                "n_layers": model.n_layers,
                "graph_json": str(r.graph_json.resolve()),
            }
        )
    )
    print(f"wrote {work}/ours.safetensors ({nf} features)")


def theirs(args: argparse.Namespace) -> None:
    import yaml
    from circuit_tracer import ReplacementModel, attribute
    from circuit_tracer.frontend.graph_models import Model
    from circuit_tracer.transcoder import load_transcoder_set
    from safetensors.torch import load_file

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    info = json.loads((work / "ours.json").read_text())
    mine = load_file(str(work / "ours.safetensors"))
    folder = Path(info["transcoders"])
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    paths = {i: str(folder / p) for i, p in enumerate(cfg["transcoders"])}
    ts = load_transcoder_set(
        paths,
        scan=cfg["scan"],
        feature_input_hook=cfg["feature_input_hook"],
        feature_output_hook=cfg["feature_output_hook"],
        device=torch.device("cpu"),
        lazy_encoder=False,
        lazy_decoder=False,
    )
    print(f"circuit-tracer loaded {len(ts)} transcoders from {folder}", flush=True)
    model = ReplacementModel.from_pretrained_and_transcoders(
        _tokenizer_for_transformers4(Path(info["model_folder"]), work / "model"),
        ts,
        backend="nnsight",
        device=torch.device("cpu"),
    )
    g = attribute(
        mine["ids"],
        model,
        attribution_targets=torch.tensor([info["target"]]),
        batch_size=args.batch_size,
        max_feature_nodes=args.max_feature_nodes,
    )
    nf = len(g.selected_features)
    theirs_feats = g.active_features[g.selected_features]
    row = g.adjacency_matrix[-1, :nf]
    key = {tuple(int(v) for v in f): float(row[i]) for i, f in enumerate(theirs_feats)}
    pairs = [
        (float(v), key[tuple(int(x) for x in f)])
        for f, v in zip(mine["features"], mine["logit_row_features"], strict=True)
        if tuple(int(x) for x in f) in key
    ]
    a = torch.tensor([p[0] for p in pairs])
    b = torch.tensor([p[1] for p in pairs])
    pearson = float(torch.corrcoef(torch.stack([a, b]))[0, 1]) if len(pairs) > 2 else float("nan")
    schema_ok = True
    try:
        Model.model_validate(json.loads(Path(info["graph_json"]).read_text()))
    except Exception as e:
        schema_ok = False
        print(f"schema: {str(e)[:300]}")
    ours_active = {tuple(int(x) for x in f) for f in mine["active"]}
    theirs_active = {tuple(int(x) for x in f) for f in g.active_features}
    logits = mine["logits"]
    out = {
        "active_ours": len(ours_active),
        "active_theirs": len(theirs_active),
        "active_overlap": len(ours_active & theirs_active),
        "logit_raw": float(logits[info["target"]]),
        "logit_demeaned": float(logits[info["target"]] - logits.mean()),
        "features_compared": len(pairs),
        "ours_features": int(mine["features"].shape[0]),
        "theirs_features": nf,
        "max_abs_diff": float((a - b).abs().max()) if pairs else None,
        "max_abs_edge": float(a.abs().max()) if pairs else None,
        "pearson": pearson,
        "logit_row_sum_ours": float(
            mine["logit_row_features"].sum() + mine["logit_row_rest"].sum()
        ),
        "logit_row_sum_theirs": float(g.adjacency_matrix[-1].sum()),
        "schema_ok": schema_ok,
    }
    print(json.dumps(out), flush=True)


def _tokenizer_for_transformers4(folder: Path, copy: Path) -> str:
    """The model folder with a tokenizer class transformers 4 knows (links to the weights).

    transformers 5 writes ``tokenizer_class: TokenizersBackend``, which circuit-tracer's pinned
    transformers 4.57 cannot import; the tokenizer itself (``tokenizer.json``) is the same.
    """
    copy.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        target = copy / f.name
        if f.name == "tokenizer_config.json":
            cfg = json.loads(f.read_text())
            cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
            target.write_text(json.dumps(cfg))
        elif not target.exists():
            target.symlink_to(f)
    return str(copy)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("step", choices=["ours", "theirs"])
    p.add_argument("--transcoders", default="runs/transcoders")
    p.add_argument("--work", default="runs/ctcheck")
    p.add_argument("--max-feature-nodes", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    (ours if args.step == "ours" else theirs)(args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
