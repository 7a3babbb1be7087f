"""Architecture adapters: where each site lives on the real Hugging Face modules.

An adapter maps a :class:`~safelab.models.sites.Site` to a :class:`HookPoint`: a module plus
whether the site is that module's input or output; :class:`ResolvedSite` keeps the two together
so a model parses each site name once. Hooks are plain PyTorch forward hooks on
the model as transformers built it; nothing is reimplemented.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

from safelab.errors import SafelabError
from safelab.models.sites import Site

HookFn = Callable[[Tensor], Tensor | None]
"""A site hook: receives the activation ``[batch, pos, d_model]``; may return a replacement."""


@dataclass(frozen=True)
class HookPoint:
    """A site's location: ``module``'s input (``pre``) or output (``post``).

    ``index`` selects the element when the module returns a tuple (attention modules return
    ``(output, weights)``).
    """

    module: nn.Module
    where: Literal["pre", "post"]
    index: int = 0

    def register(self, fn: HookFn) -> Any:
        """Register ``fn`` on the module; returns the handle (call ``.remove()``)."""
        if self.where == "pre":

            def pre_hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                if args:
                    new = fn(args[0])
                    return None if new is None else ((new, *args[1:]), kwargs)
                new = fn(kwargs["hidden_states"])
                return None if new is None else (args, {**kwargs, "hidden_states": new})

            return self.module.register_forward_pre_hook(pre_hook, with_kwargs=True)

        index = self.index

        def post_hook(_m: nn.Module, _args: tuple[Any, ...], output: Any) -> Any:
            if isinstance(output, tuple):
                new = fn(output[index])
                if new is None:
                    return None
                return (*output[:index], new, *output[index + 1 :])
            return fn(output)

        return self.module.register_forward_hook(post_hook)


@dataclass(frozen=True)
class ResolvedSite:
    """A site name parsed once: its :class:`Site` and where it lives on the real modules."""

    site: Site
    point: HookPoint

    @property
    def layer(self) -> int | None:
        return self.site.layer

    @property
    def kind(self) -> str:
        return self.site.kind

    @property
    def module(self) -> nn.Module:
        return self.point.module

    def __str__(self) -> str:
        return str(self.site)


class ArchitectureAdapter:
    """Locates blocks and their parts for one model family.

    Subclasses name the attribute paths; the defaults fit Llama-style decoders
    (Llama, Mistral, Qwen2, Qwen3, SmolLM).
    """

    families: tuple[str, ...] = ()

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    # -- structure -------------------------------------------------------------------------
    def body(self) -> nn.Module:
        """The decoder without the unembedding (``model.model`` for Llama)."""
        return _get(self.model, "model")

    def blocks(self) -> nn.ModuleList:
        return _get(self.body(), "layers")

    def final_norm(self) -> nn.Module:
        return _get(self.body(), "norm")

    @property
    def n_layers(self) -> int:
        return len(self.blocks())

    # -- sites -----------------------------------------------------------------------------
    def hook_point(self, site: Site) -> HookPoint:
        if site.layer is None:
            return HookPoint(self.final_norm(), "post")
        if site.layer >= self.n_layers:
            raise SafelabError(f"unknown site {site}: this model has blocks 0..{self.n_layers - 1}")
        block = self.blocks()[site.layer]
        return self.block_hook_point(block, site.kind)

    def resolve(self, site: Site) -> ResolvedSite:
        """``site`` with its hook point looked up."""
        return ResolvedSite(site, self.hook_point(site))

    def block_hook_point(self, block: nn.Module, kind: str) -> HookPoint:
        if kind == "resid_pre":
            return HookPoint(block, "pre")
        if kind == "resid_post":
            return HookPoint(block, "post")
        if kind == "resid_mid":
            return HookPoint(_get(block, "post_attention_layernorm"), "pre")
        if kind == "attn_out":
            return HookPoint(_get(block, "self_attn"), "post", 0)
        if kind == "mlp_out":
            return HookPoint(_get(block, "mlp"), "post")
        if kind == "mlp_in":
            return HookPoint(_get(block, "mlp"), "pre")
        raise SafelabError(f"unknown site kind {kind!r}")


class GemmaAdapter(ArchitectureAdapter):
    """Gemma 2/3: sandwich norms, so a sublayer's contribution is its post-norm's output."""

    families = ("gemma2", "gemma3", "gemma3_text")

    def body(self) -> nn.Module:
        body = _get(self.model, "model")
        # Gemma3ForConditionalGeneration nests the text decoder one level down.
        return getattr(body, "language_model", body)

    def block_hook_point(self, block: nn.Module, kind: str) -> HookPoint:
        if kind == "resid_mid":
            return HookPoint(_get(block, "pre_feedforward_layernorm"), "pre")
        if kind == "attn_out":
            return HookPoint(_get(block, "post_attention_layernorm"), "post")
        if kind == "mlp_out":
            return HookPoint(_get(block, "post_feedforward_layernorm"), "post")
        return super().block_hook_point(block, kind)


class GPT2Adapter(ArchitectureAdapter):
    """GPT-2: ``transformer.h``, ``ln_1``/``attn``/``ln_2``/``mlp``, ``ln_f``."""

    families = ("gpt2",)

    def body(self) -> nn.Module:
        return _get(self.model, "transformer")

    def blocks(self) -> nn.ModuleList:
        return _get(self.body(), "h")

    def final_norm(self) -> nn.Module:
        return _get(self.body(), "ln_f")

    def block_hook_point(self, block: nn.Module, kind: str) -> HookPoint:
        if kind == "resid_mid":
            return HookPoint(_get(block, "ln_2"), "pre")
        if kind == "attn_out":
            return HookPoint(_get(block, "attn"), "post", 0)
        return super().block_hook_point(block, kind)


LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", "gemma", "phi3", "olmo2", "granite")
_ADAPTERS: dict[str, type[ArchitectureAdapter]] = {
    **{f: ArchitectureAdapter for f in LLAMA_LIKE},
    **{f: GemmaAdapter for f in GemmaAdapter.families},
    **{f: GPT2Adapter for f in GPT2Adapter.families},
}


def adapter_for(model: nn.Module) -> ArchitectureAdapter:
    """The adapter for a transformers model, chosen by ``config.model_type``."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    cls = _ADAPTERS.get(str(model_type))
    if cls is None:
        raise SafelabError(
            f"no architecture adapter for model_type {model_type!r}: supported are "
            f"{', '.join(sorted(_ADAPTERS))} (add one in safelab/models/adapters.py)"
        )
    return cls(model)


def _get(module: nn.Module, name: str) -> Any:
    try:
        return getattr(module, name)
    except AttributeError:
        raise SafelabError(
            f"{type(module).__name__} has no submodule {name!r}: this checkpoint does not match "
            "its architecture adapter"
        ) from None
