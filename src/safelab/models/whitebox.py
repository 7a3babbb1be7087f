"""The white-box model: a Hugging Face causal LM, its tokenizer and its sites, in one object.

>>> model = load_model("default")
>>> acts = model.capture(["The sky is blue."], "blocks.*.resid_post", position="last")
>>> with model.steer(vector, "blocks.15.resid_post", scale=4):
...     print(model.generate(["Tell me about yourself."]))
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

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
    def hooks(self, fns: Mapping[str, HookFn]) -> Iterator[None]:
        """Attach ``{site: fn}`` forward hooks for the duration of the block.

        ``fn`` receives ``[batch, pos, d_model]`` and may return a replacement tensor. Hooks are
        removed on exit, also when the block raises.
        """
        handles = []
        try:
            for name, fn in fns.items():
                handles.append(self.resolved_site(name).point.register(fn))
            yield
        finally:
            for h in handles:
                h.remove()

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
        """Generate a completion for each prompt (a text or a chat); greedy at temperature 0."""
        from safelab.models.generation import GenerationRequest, generate_batch

        texts = [self.prompt_text(p) for p in prompts]
        if not texts:
            raise SafelabError("empty prompt list: give at least one prompt")
        req = GenerationRequest(max_new_tokens=max_new_tokens, temperature=temperature, **kwargs)
        chat = [not isinstance(p, str) for p in prompts]
        return [r.text for r in generate_batch(self, texts, req, chat_formatted=chat)]

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
