"""The ``safelab`` command line: thin over the Python API.

User mistakes (a bad path, an unknown site, a malformed row) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from safelab.commands.options import add_ray_option
from safelab.distributed import ray_address
from safelab.errors import one_line

# Subcommand modules that register themselves: ``register(subparsers)``. Missing ones are
# skipped so that a partial install still offers the rest.
COMMAND_MODULES: tuple[str, ...] = (
    "safelab.commands.eval",
    "safelab.commands.audit",
    "safelab.commands.probe",
    "safelab.commands.steer",
    "safelab.commands.monitor",
    "safelab.commands.organism",
    "safelab.commands.loop",
    "safelab.commands.sae",
    "safelab.commands.w2s",
    "safelab.commands.hallucination",
    "safelab.commands.validate",
    "safelab.commands.anchors",
    "safelab.commands.transcoders",
    "safelab.commands.trace",
)


_NO_DEFAULT_SHOWN = (
    argparse._HelpAction,
    argparse._VersionAction,
    argparse._StoreTrueAction,
    argparse._StoreFalseAction,
    argparse._SubParsersAction,
)


class SafelabParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose every option's help says its default.

    Subcommand parsers are made of the same class (argparse's ``add_subparsers`` default), so
    ``safelab sae train --help`` shows ``--k`` with its default as the top level does.
    """

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        action.help = help_with_default(action)
        return action


def help_with_default(action: argparse.Action) -> str | None:
    """``action.help`` ending with ``(default: X)`` unless it already names its default."""
    text = action.help
    if (
        text == argparse.SUPPRESS
        or isinstance(action, _NO_DEFAULT_SHOWN)
        or action.required
        or (not action.option_strings and action.nargs not in ("?", "*"))
        or "default" in (text or "").lower()
    ):
        return text
    default = action.default
    shown = "none" if default is None or default == [] else "%(default)s"
    return f"{text} (default: {shown})" if text else f"default: {shown}"


def build_parser() -> argparse.ArgumentParser:
    parser = SafelabParser(
        prog="safelab",
        description="An AI-safety lab in a box: behavioural evals and white-box tools on the same models.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("describe", help="describe a model: architecture, shape and its sites")
    p.add_argument(
        "model", nargs="?", default="default", help="default, a folder, a .gguf file or a hub id"
    )
    p.add_argument("--sites", action="store_true", help="list every site name")
    p.add_argument("--dtype", default="auto")
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("chat", help="answer a chat prompt (optionally steered)")
    p.add_argument("prompt", nargs="+", help="the user message")
    p.add_argument("--model", default="default")
    p.add_argument("--system", default=None, help="a system message")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument(
        "--steer",
        default=None,
        help="a steering vector (folder or .safetensors); applied at its saved site and positions",
    )
    p.add_argument(
        "--scale", type=float, default=None, help="steering scale (default: the vector's)"
    )
    p.add_argument("--dtype", default="auto")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("capture", help="capture activations into an on-disk store (resumable)")
    p.add_argument(
        "--data", required=True, help=".txt (a line each), .csv or .jsonl of texts or chats"
    )
    p.add_argument("--sites", required=True, help="site names or globs, e.g. 'blocks.*.resid_post'")
    p.add_argument("--out", required=True, help="store folder (rerun the same command to resume)")
    p.add_argument("--model", default="default")
    p.add_argument("--position", default="last", help="all, last, response, or a token index")
    p.add_argument("--column", default=None, help="CSV/JSONL field holding the text")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--store-dtype", default="float32", help="float32, float16 or bfloat16")
    p.add_argument("--shard-rows", type=int, default=65536)
    p.add_argument("--limit", type=int, default=None, help="only the first N inputs")
    add_ray_option(p)
    p.add_argument(
        "--workers", type=int, default=2, help="with --ray: actors, each holding one model"
    )
    p.add_argument(
        "--gpus-per-worker", type=float, default=0.0, help="with --ray: GPUs each actor asks for"
    )
    p.set_defaults(func=cmd_capture)

    p = sub.add_parser("store", help="describe an activation store")
    p.add_argument("path")
    p.set_defaults(func=cmd_store)

    p = sub.add_parser(
        "tour",
        help="the foundation in two minutes: chat, capture, a truth probe, an Inspect eval "
        "with the probe attached",
    )
    p.add_argument("--out", default="runs/tour", help="where the tour writes its files")
    p.add_argument(
        "--data", default=None, help="a statement,label CSV (default: ../shared/data truth/cities)"
    )
    p.add_argument("--n", type=int, default=400, help="statements to use")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_tour)

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(
            "safelab: interrupted (finished work is saved; rerun the command to resume)",
            file=sys.stderr,
        )
        return 130
    except Exception as e:  # a user error of safelab's or of Inspect's: one line, exit 2
        line = one_line(e)
        if line is None:
            raise
        print(f"safelab: error: {line}", file=sys.stderr)
        return 2


# -- commands ------------------------------------------------------------------------------


def cmd_describe(args: argparse.Namespace) -> int:
    from safelab.models.loading import load_model
    from safelab.models.sites import BLOCK_KINDS, GLOBAL_SITES

    model = load_model(args.model, dtype=args.dtype)
    cfg = model.hf.config
    print(
        f"model      {model.name}  ({model.source.kind if model.source else '?'}: {model.source.location if model.source else ''})"
    )
    print(f"family     {cfg.model_type}  ({type(model.hf).__name__})")
    print(f"shape      layers={model.n_layers}  d_model={model.d_model}  vocab={cfg.vocab_size}")
    print(
        f"params     {sum(p.numel() for p in model.hf.parameters()) / 1e6:.1f}M  dtype={model.dtype}  device={model.device}"
    )
    print(
        f"chat       {'template from tokenizer' if model.tokenizer.chat_template else 'none (plain transcript)'}"
    )
    print(
        f"sites      blocks.{{0..{model.n_layers - 1}}}.{{{','.join(BLOCK_KINDS)}}}  {' '.join(GLOBAL_SITES)}"
    )
    if args.sites:
        for s in model.sites:
            print(f"  {s}")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from safelab.interp.steering import resolve_steer
    from safelab.models.loading import load_model

    spec = resolve_steer(args.steer, scale=args.scale) if args.steer else None
    model = load_model(args.model, dtype=args.dtype)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": " ".join(args.prompt)})
    ctx: Any = spec.apply(model) if spec else nullcontext()
    with ctx:
        (reply,) = model.generate(
            [messages], max_new_tokens=args.max_tokens, temperature=args.temperature
        )
    print(reply)
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    from safelab.data import read_inputs
    from safelab.interp.store import capture_to_store, check_store_args
    from safelab.models.loading import load_model

    check_store_args(args.out, args.store_dtype)
    inputs = read_inputs(args.data, column=args.column)
    if args.limit is not None:
        inputs = inputs[: args.limit]
    position: Any = int(args.position) if args.position.lstrip("-").isdigit() else args.position
    kw: dict[str, Any] = {
        "position": position,
        "batch_size": args.batch_size,
        "shard_rows": args.shard_rows,
        "dtype": args.store_dtype,
        "progress": True,
        "meta": {"data": os.path.abspath(args.data)},
    }
    if address := ray_address(args.ray):
        from safelab.distributed import Resources
        from safelab.interp.capture_ray import capture_to_store_ray

        resources = Resources(num_cpus=1, num_gpus=args.gpus_per_worker)
        store = capture_to_store_ray(
            args.model,
            inputs,
            args.sites,
            args.out,
            workers=args.workers,
            resources=resources,
            ray=address,
            **kw,
        )
    else:
        model = load_model(args.model, dtype="float32")
        store = capture_to_store(model, inputs, args.sites, args.out, **kw)
    m = store.manifest
    print(
        f"stored {m.rows} rows x {len(m.sites)} sites from {m.inputs_done} inputs in {store.path}"
    )
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    from safelab.interp.store import ActivationStore

    store = ActivationStore(args.path)
    m = store.manifest
    info = {
        k: getattr(m, k)
        for k in ("model", "position", "d_model", "dtype", "rows", "inputs_done", "n_inputs")
    }
    info["sites"] = m.sites
    info["shards"] = len(m.shards)
    info["complete"] = m.complete
    print(json.dumps(info, indent=2))
    return 0


def cmd_tour(args: argparse.Namespace) -> int:
    from safelab.tour import run_tour

    return run_tour(out=args.out, data=args.data, n=args.n, seed=args.seed)


def _version() -> str:
    from safelab import __version__

    return f"safelab {__version__}"


if __name__ == "__main__":
    raise SystemExit(main())
