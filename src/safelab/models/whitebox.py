"""The white-box model: a Hugging Face causal LM, its tokenizer and its sites, in one object.

>>> model = load_model("default")
>>> acts = model.capture(["The sky is blue."], "blocks.*.resid_post", position="last")
>>> with model.steer(vector, "blocks.15.resid_post", scale=4):
...     print(model.generate(["Tell me about yourself."]))
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from safelab.errors import SafelabError
from safelab.models import capture as _capture
from safelab.models import interventions as _interventions
from safelab.models.adapters import ArchitectureAdapter, HookFn, ResolvedSite, adapter_for
from safelab.models.inputs import Input, Position, encode_inputs
from safelab.models.interventions import StepPositions
from safelab.models.sites import Site, all_sites, resolve_sites

if TYPE_CHECKING:
    from safelab.models.capture import Activations
    from safelab.models.kvcache import PrefixCache, PrefixCacheConfig
    from safelab.models.loading import ModelSource


class WhiteBoxModel:
    """A transformers causal LM with named sites, capture and interventions."""

    def __init__(
        self, hf: Any, tokenizer: Any, name: str, source: ModelSource | None = None
    ) -> None:
        self.hf = hf
        self.tokenizer = tokenizer
        self.name = name
        self.source = source
        self.prefix_cache: PrefixCache | None = None
        """Shared-prefix KV cache used by :meth:`generate` (off unless :meth:`use_prefix_cache`)."""
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    def __repr__(self) -> str:
        return (
            f"WhiteBoxModel({self.name!r}, {self.hf.config.model_type}, layers={self.n_layers}, "
            f"d_model={self.d_model}, dtype={self.dtype}, device={self.device})"
        )

    @property
    def hf(self) -> Any:
        """The transformers model; replacing it (e.g. after merging a LoRA) re-resolves sites."""
        return self._hf

    @hf.setter
    def hf(self, hf: Any) -> None:
        self._hf = hf
        self.adapter: ArchitectureAdapter = adapter_for(hf)
        self._resolved: dict[str, ResolvedSite] = {}
        self._patterns: dict[tuple[str, ...], list[Site]] = {}
        self._active_hooks: list[tuple[Hashable | None, bool | str, int]] = []
        self._prefix_state = threading.local()
        cache = getattr(self, "prefix_cache", None)
        if cache is not None:
            cache.clear()  # new weights: nothing cached before applies

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave the per-thread prefix-pass state behind (it is made anew)."""
        state = self.__dict__.copy()
        state.pop("_prefix_state", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._prefix_state = threading.local()

    # -- shape -----------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers

    @property
    def d_model(self) -> int:
        cfg = self.hf.config
        return int(getattr(cfg, "hidden_size", None) or cfg.n_embd)

    @property
    def context_window(self) -> int:
        """Positions the model takes (prompt plus completion), from its config."""
        cfg = self.hf.config
        for key in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
            value = getattr(cfg, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return 2048

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    @property
    def body(self) -> Any:
        """The decoder without the unembedding: capture runs this, not the full LM."""
        return self.adapter.body()

    # -- sites and hooks -------------------------------------------------------------------
    @property
    def sites(self) -> list[Site]:
        return all_sites(self.n_layers)

    def resolve_sites(self, patterns: str | Sequence[str] | Sequence[Site]) -> list[Site]:
        """Expand site names and globs (comma-separated or a list); cached per pattern list."""
        key = (patterns,) if isinstance(patterns, str) else tuple(str(p) for p in patterns)
        if key not in self._patterns:
            self._patterns[key] = resolve_sites(
                patterns if isinstance(patterns, str) else list(key), self.n_layers
            )
        return list(self._patterns[key])

    def resolved_site(self, name: str | Site) -> ResolvedSite:
        """One site, parsed and located on the modules once, then cached."""
        key = str(name)
        if key not in self._resolved:
            site = name if isinstance(name, Site) else Site.parse(key, self.n_layers)
            self._resolved[key] = self.adapter.resolve(site)
        return self._resolved[key]

    @contextmanager
    def hooks(
        self,
        fns: Mapping[str, HookFn],
        *,
        key: Hashable | None = None,
        cacheable: bool | Literal["last"] = False,
    ) -> Iterator[None]:
        """Attach ``{site: fn}`` forward hooks for the duration of the block.

        ``fn`` receives ``[batch, pos, d_model]`` and may return a replacement tensor. Hooks are
        removed on exit, also when the block raises.

        Args:
            key: a hashable description of what the hooks do (the interventions pass one).
                Without it the hooks are opaque: generation then runs as one padded
                ``generate`` call, with no prefix cache and no continuous batching.
            cacheable: each position's output depends only on its own input, whatever forward
                call it comes in (steering at every position, ablation): keys and values
                computed under these hooks can be reused, under ``key``. ``"last"``: the hooks
                change only each forward call's last position (steering ``positions="last"``):
                a prompt's positions before its last token are what the model computes without
                them, so those prefixes are shared with the unhooked model
                (:meth:`prefix_scope`), computed inside :meth:`prefix_pass`.
        """
        handles = []
        entry = (key, cacheable, len(fns))
        try:
            for name, fn in fns.items():
                if cacheable == "last":
                    fn = self._outside_prefix_pass(fn)
                handles.append(self.resolved_site(name).point.register(fn))
            self._active_hooks.append(entry)
            yield
        finally:
            for h in handles:
                h.remove()
            if entry in self._active_hooks:
                self._active_hooks.remove(entry)

    def intervention_key(self) -> tuple[Hashable, ...] | None:
        """What the active hooks do, as a hashable; ``None`` when some hook is opaque.

        Opaque: registered through :meth:`hooks` without a ``key``, or straight on a torch module
        (counted, so a hook safelab did not place is never mistaken for none).
        """
        import torch.nn.modules.module as tm

        if any(k is None for k, _, _ in self._active_hooks):
            return None
        ours = sum(n for _, _, n in self._active_hooks)
        present = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in self.hf.modules())
        if present != ours or tm._global_forward_hooks or tm._global_forward_pre_hooks:
            return None
        return tuple(k for k, _, _ in self._active_hooks)

    def cache_scope(self) -> Hashable | None:
        """The prefix cache's scope now: weights, dtype, device and interventions.

        ``None`` (do not cache) while an opaque or position-dependent hook is active or the model
        is in training mode. The weights enter by identity and in-place version counter, so an
        optimizer step invalidates everything cached before it.
        """
        if any(c is not True for _, c, _ in self._active_hooks):
            return None
        return self.prefix_scope()

    def prefix_scope(self) -> Hashable | None:
        """The scope whose cached prefixes the active hooks can read: :meth:`cache_scope`, or,
        while hooks that act only at a call's last position are active (:meth:`hooks`
        ``cacheable="last"``), the scope without them.

        Under such hooks only a prompt's positions before its last token may be read from or
        stored in this scope, and they are computed inside :meth:`prefix_pass`
        (:mod:`safelab.models.decode` does both; :attr:`acts_at_last` says when). ``None`` while
        an opaque or other position-dependent hook is active, or in training mode.
        """
        keys = self.intervention_key()
        if keys is None or self.hf.training:
            return None
        if any(c is False for _, c, _ in self._active_hooks):
            return None
        keys = tuple(k for k, c, _ in self._active_hooks if c is True)
        version = sum(p._version for p in self.hf.parameters())
        return (id(self.hf), version, str(self.dtype), str(self.device), self.linear_kernel, keys)

    @property
    def acts_at_last(self) -> bool:
        """Whether a hook that changes only each forward call's last position is active."""
        return any(c == "last" for _, c, _ in self._active_hooks)

    @contextmanager
    def prefix_pass(self) -> Iterator[None]:
        """Suspend, in this thread, the hooks that act only at a call's last position.

        For forward calls over a prefix that a later call extends: in one call over the whole
        prompt those positions are not the last, so the hooks leave them alone there too.
        """
        state = self._prefix_state
        state.depth = getattr(state, "depth", 0) + 1
        try:
            yield
        finally:
            state.depth -= 1

    def _outside_prefix_pass(self, fn: HookFn) -> HookFn:
        state = self._prefix_state

        def hook(t: Tensor) -> Tensor | None:
            return None if getattr(state, "depth", 0) else fn(t)

        return hook

    @property
    def linear_kernel(self) -> str:
        """What the linear layers multiply with in inference: ``onednn``, ``torch`` or ``mixed``."""
        from safelab.models.kernels import linear_kernel

        return linear_kernel(self.hf)

    def use_linear_kernel(self, kernel: str = "auto") -> str:
        """Multiply the linear layers with ``kernel`` (``auto``, ``onednn`` or ``torch``).

        See :mod:`safelab.models.kernels`; returns the kernel in effect. ``load_model`` calls it
        with its ``linear`` argument.
        """
        from safelab.models.kernels import set_linear_kernel

        chosen = set_linear_kernel(self.hf, kernel)
        cache = self.prefix_cache
        if cache is not None:
            cache.clear()
        return chosen

    def use_prefix_cache(self, cfg: PrefixCacheConfig | None) -> PrefixCache | None:
        """Turn the shared-prefix KV cache of :meth:`generate` on (with its size) or off (None)."""
        from safelab.models.kvcache import PrefixCache

        self.prefix_cache = PrefixCache(cfg) if cfg is not None else None
        return self.prefix_cache

    # -- text ------------------------------------------------------------------------------
    def render_chat(
        self,
        messages: Sequence[Mapping[str, str]],
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
    ) -> str:
        """Render a chat with the tokenizer's own chat template.

        ``continue_final_message`` leaves a final assistant message open (a prefill), so
        generation continues it instead of starting a new turn.
        """
        if getattr(self.tokenizer, "chat_template", None) is None:
            # Base models without a template: a plain, readable transcript.
            if continue_final_message:
                *head, last = messages
                text = "".join(f"{m['role']}: {m['content']}\n" for m in head)
                return text + f"{last['role']}: {last['content']}"
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
            return text + ("assistant:" if add_generation_prompt else "")
        return str(
            self.tokenizer.apply_chat_template(
                [dict(m) for m in messages],
                tokenize=False,
                add_generation_prompt=add_generation_prompt and not continue_final_message,
                continue_final_message=continue_final_message,
            )
        )

    def prompt_text(self, prompt: Input) -> str:
        """A chat rendered for generation, or a raw text as is."""
        if isinstance(prompt, str):
            return prompt
        return self.render_chat(prompt, add_generation_prompt=True)

    def generate(
        self,
        prompts: Sequence[Input],
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        **kwargs: Any,
    ) -> list[str]:
        """Generate a completion for each prompt (a text or a chat); greedy at temperature 0.

        With :meth:`use_prefix_cache` on, prompts run through the shared-prefix cache and one
        continuous decode batch (same greedy tokens; see :mod:`safelab.models.decode`).
        """
        from safelab.models.generation import GenerationRequest, generate_batch

        texts = [self.prompt_text(p) for p in prompts]
        if not texts:
            raise SafelabError("empty prompt list: give at least one prompt")
        req = GenerationRequest(max_new_tokens=max_new_tokens, temperature=temperature, **kwargs)
        chat = [not isinstance(p, str) for p in prompts]
        results = generate_batch(self, texts, req, chat_formatted=chat, cache=self.prefix_cache)
        return [r.text for r in results]

    # -- white-box -------------------------------------------------------------------------
    def capture(
        self,
        inputs: Sequence[Input],
        sites: str | Sequence[str],
        position: Position = "last",
        *,
        batch_size: int = 16,
        progress: bool = False,
    ) -> Activations:
        """Activations at ``sites`` for ``inputs``; see :func:`safelab.models.capture.capture`."""
        return _capture.capture(
            self, inputs, sites, position, batch_size=batch_size, progress=progress
        )

    def logits(self, inputs: Sequence[Input]) -> list[Tensor]:
        """Next-token logits ``[len, vocab]`` for each input (one forward pass per batch)."""
        out: list[Tensor] = []
        for e in encode_inputs(self, inputs):
            ids = torch.tensor([e.ids], device=self.device)
            with torch.inference_mode():
                out.append(self.hf(input_ids=ids).logits[0].float().cpu())
        return out

    def steer(
        self, vector: Tensor, site: str, scale: float = 1.0, positions: StepPositions = "all"
    ) -> Any:
        """Context manager adding ``scale * vector`` at ``site``; see :mod:`safelab.models.interventions`.

        A saved :class:`~safelab.interp.steering.SteeringVector` carries its own site, scale and
        positions: apply it with ``resolve_steer(path).apply(model)`` so they are honoured.
        """
        return _interventions.steer(self, vector, site, scale=scale, positions=positions)

    def ablate(self, direction: Tensor, sites: str | Sequence[str]) -> Any:
        """Context manager projecting ``direction`` out at ``sites``."""
        return _interventions.ablate(self, direction, sites)

    def patch(self, site: str, values: Tensor, positions: Sequence[int] | None = None) -> Any:
        """Context manager overwriting the activation at ``site`` with ``values``."""
        return _interventions.patch(self, site, values, positions)
