"""The ``-M`` model args of the ``safelab/`` provider: one frozen dataclass.

Its fields' metadata is the single source for the documentation table, the parsing of
Inspect's ``model_args`` and the unknown-arg error message. Kept free of torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from safelab.errors import SafelabError


def _split(value: Any) -> tuple[str, ...]:
    """Comma-separated text (or a list) as a tuple of non-empty, stripped strings."""
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return tuple(str(v).strip() for v in items if str(v).strip())


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off")
    return bool(value)


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None or v == "" else convert(v)


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if str(value) not in choices:
            raise ValueError(value)
        return str(value)

    return parse


def _threads(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("auto", "torch") and not (text.isdigit() and int(text) > 0):
        raise ValueError(value)
    return text


def _arg(default: Any, doc: str, parse: Callable[[Any], Any]) -> Any:
    return field(default=default, metadata={"doc": doc, "parse": parse})


@dataclass(frozen=True)
class ProviderArgs:
    """What ``-M key=value`` asks of a ``safelab/<model>`` instance."""

    steer: str | None = _arg(
        None,
        "a steering vector (folder or ``.safetensors``; ``SAE_FOLDER#FEATURE`` with safelab.sae)",
        _optional(str),
    )
    steer_scale: float | None = _arg(
        None, "its scale (default: the scale saved with the vector)", _optional(float)
    )
    steer_site: str | None = _arg(None, "override the vector's site", _optional(str))
    steer_positions: str | None = _arg(
        None, "override the vector's positions: all or last (default: as saved)", _optional(str)
    )
    capture: tuple[str, ...] = _arg(
        (), "sites (comma-separated, globs allowed) summarised per sample", _split
    )
    probe: tuple[str, ...] = _arg(
        (), "probe(s) (comma-separated paths) scored per token per sample", _split
    )
    sae: tuple[str, ...] = _arg(
        (), "SAE folder(s) (comma-separated): top features per response token per sample", _split
    )
    sae_top_k: int = _arg(5, "features recorded per token for each SAE (default 5)", int)
    capture_vectors: bool = _arg(
        True, "keep the mean response activation vector in the log (default true)", _as_bool
    )
    dtype: str = _arg(
        "auto", "auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16, float16", str
    )
    device: str | None = _arg(None, "cpu, cuda, cuda:1, ...", _optional(str))
    linear: str | None = _arg(
        None,
        "how the linear layers multiply: auto (oneDNN-packed weights for a float32 model on "
        "CPU, else torch), onednn, or torch (MKL's sgemm, as before); default: "
        "$SAFELAB_LINEAR_KERNEL, else auto",
        _optional(_choice("auto", "onednn", "torch")),
    )
    batch_size: int = _arg(32, "most samples decoded together (default 32)", int)
    batching: str = _arg(
        "continuous",
        "continuous (samples join and leave one running decode batch) or static (one padded "
        "generate call per batch of samples, as before)",
        _choice("continuous", "static"),
    )
    threads: str | None = _arg(
        "auto",
        "torch threads for generation: auto (default: the cores other processes leave free, "
        "re-checked every few seconds), a number, or torch (torch's own setting, untouched)",
        _optional(_threads),
    )
    prefix_cache_mb: float = _arg(
        512.0,
        "shared-prefix KV cache size in MiB (least recently used evicted; 0 turns it off); "
        "used with continuous batching",
        float,
    )
    context_window: int | None = _arg(
        None,
        "prompt + completion tokens (default: the model's max_position_embeddings); a longer "
        "request stops with Inspect's model_length stop reason",
        _optional(int),
    )
    tool_descriptions: str = _arg(
        "full",
        "full (each tool's JSON schema) or compact (one line a tool, for small windows)",
        _choice("full", "compact"),
    )

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def parse(cls, model_args: Mapping[str, Any]) -> ProviderArgs:
        """Convert Inspect's ``model_args``; an unknown key is a one-line error naming the known."""
        unknown = sorted(set(model_args) - set(cls.names()))
        if unknown:
            raise SafelabError(
                f"unknown model args for safelab/: {', '.join(unknown)} "
                f"(known: {', '.join(cls.names())})"
            )
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in model_args:
                continue
            try:
                values[f.name] = f.metadata["parse"](model_args[f.name])
            except (TypeError, ValueError):
                raise SafelabError(
                    f"-M {f.name}={model_args[f.name]!r}: expected {f.metadata['doc']}"
                ) from None
        return cls(**values)

    @classmethod
    def table(cls) -> str:
        """The model args as a reStructuredText table (the provider's docstring shows it)."""
        width = max(len(n) for n in cls.names()) + 4
        rule = "=" * width + "  " + "=" * 64
        rows = [f"{'``' + f.name + '``':<{width}}  {f.metadata['doc']}" for f in fields(cls)]
        return "\n".join([rule, *rows, rule])
