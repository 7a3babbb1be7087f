"""The local replacement model: one prompt's computation made linear in its features.

For a prompt, the clean forward pass fixes everything nonlinear that is not a feature:

- every RMSNorm's scale ``1 / rms(x)`` (the norm becomes ``x * s * weight`` with ``s`` frozen);
- every attention pattern (queries and keys are detached, so ``softmax(QK^T)`` is a constant
  and attention is linear in the values: its OV circuit);
- every MLP, replaced by its transcoder: the active features' decoder vectors times their
  activations, plus an **error node** per (layer, position) holding what the transcoder missed
  (``mlp_out - a @ W_dec``, the decoder bias included), plus the skip connection ``x @ W_skip``
  (linear, so it stays live).

Run forward, this model reproduces the original logits exactly (the error nodes make up the
difference); run backward, its gradient from a target (a feature's pre-activation, a logit) to
each source (a feature, an error node, a token embedding) is the direct effect along residual
paths and attention OV circuits only, which is what an attribution-graph edge is (Ameisen et al.
2025, "Circuit Tracing"; circuit-tracer). The real Hugging Face modules run; hooks freeze them,
and each block's ``mlp`` is swapped for the replacement only inside the context manager.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from safelab.errors import SafelabError

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel
    from safelab.transcoders.transcoder import TranscoderSet

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "olmo2", "granite")


def check_supported(model: WhiteBoxModel) -> None:
    kind = str(model.hf.config.model_type)
    if kind not in SUPPORTED:
        raise SafelabError(
            f"attribution supports Llama-style decoders ({', '.join(SUPPORTED)}); {model.name} "
            f"is {kind!r}: use one of those families"
        )


@dataclass
class PromptState:
    """The clean forward pass of one prompt and its transcoder decomposition."""

    ids: Tensor
    """``[n]`` token ids."""
    embeds: Tensor
    """``[n, d]`` token embeddings (what ``blocks.0.resid_pre`` receives)."""
    mlp_in: list[Tensor]
    mlp_out: list[Tensor]
    acts: list[Tensor]
    """Per layer ``[n, d_sae]`` feature activations (zero at skipped positions)."""
    const: list[Tensor]
    """Per layer ``[n, d]``: ``mlp_out - skip(mlp_in)``, what the replacement MLP adds."""
    errors: list[Tensor]
    """Per layer ``[n, d]``: ``mlp_out - a @ W_dec - skip(mlp_in)`` (the error nodes)."""
    logits: Tensor
    """``[vocab]`` logits at the last position."""

    @property
    def n_layers(self) -> int:
        return len(self.mlp_in)

    @property
    def n_pos(self) -> int:
        return int(self.ids.shape[0])


@torch.no_grad()
def clean_state(
    model: WhiteBoxModel, ids: Tensor, transcoders: TranscoderSet, skip_first: bool = True
) -> PromptState:
    """Run the prompt once; read every MLP's input and output; encode with the transcoders."""
    n_layers = model.n_layers
    mlp_in: dict[int, Tensor] = {}
    mlp_out: dict[int, Tensor] = {}

    def reader(store: dict[int, Tensor], layer: int) -> Any:
        def fn(t: Tensor) -> None:
            store[layer] = t[0].detach().float().clone()

        return fn

    fns: dict[str, Any] = {}
    for layer in range(n_layers):
        fns[f"blocks.{layer}.mlp_in"] = reader(mlp_in, layer)
        fns[f"blocks.{layer}.mlp_out"] = reader(mlp_out, layer)
    ids = ids.to(model.device)
    with model.hooks(fns):
        logits = model.hf(input_ids=ids[None], use_cache=False).logits[0, -1].float()
    embeds = model.hf.get_input_embeddings()(ids[None])[0].float()
    acts, const, errors = [], [], []
    for layer in range(n_layers):
        tc = transcoders[layer]
        x, y = mlp_in[layer], mlp_out[layer]
        a = tc.encode(x)
        if skip_first:
            a[0] = 0
        c = y - tc.skip(x)
        acts.append(a)
        const.append(c)
        errors.append(c - a @ tc.W_dec)
    return PromptState(
        ids=ids.cpu(),
        embeds=embeds.cpu(),
        mlp_in=[mlp_in[i].cpu() for i in range(n_layers)],
        mlp_out=[mlp_out[i].cpu() for i in range(n_layers)],
        acts=[a.cpu() for a in acts],
        const=[c.cpu() for c in const],
        errors=[e.cpu() for e in errors],
        logits=logits.cpu(),
    )


class ReplacementMLP(nn.Module):
    """Returns ``const + leaf + x @ W_skip``: the MLP's frozen output, a gradient probe, the skip."""

    def __init__(self, const: Tensor, w_skip: Tensor | None) -> None:
        super().__init__()
        self.const = const
        self.w_skip = w_skip
        self.leaf: Tensor | None = None
        self.seen: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        self.seen = x
        out = self.const.to(x.dtype).expand(x.shape[0], -1, -1)
        if self.leaf is not None:
            out = out + self.leaf
        if self.w_skip is not None:
            out = out + x @ self.w_skip.to(x.dtype)
        return out


def _frozen_rmsnorm(module: nn.Module) -> Any:
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6))

    def hook(m: nn.Module, args: tuple[Any, ...], out: Tensor) -> Tensor:
        x = args[0].float()
        scale = torch.rsqrt(x.detach().pow(2).mean(-1, keepdim=True) + eps)
        return m.weight * (x * scale).to(out.dtype)

    return module.register_forward_hook(hook)


def _detach_output(module: nn.Module) -> Any:
    return module.register_forward_hook(lambda _m, _a, out: out.detach())


@contextmanager
def local_replacement(
    model: WhiteBoxModel, state: PromptState, transcoders: TranscoderSet
) -> Iterator[list[ReplacementMLP]]:
    """Inside the block, ``model.adapter.body()`` computes the local replacement model.

    Yields the per-layer :class:`ReplacementMLP` modules (set ``.leaf`` to probe gradients,
    read ``.seen`` for the MLP inputs of the last forward).
    """
    check_supported(model)
    blocks = model.adapter.blocks()
    handles: list[Any] = []
    originals: list[nn.Module] = []
    reps: list[ReplacementMLP] = []
    try:
        handles.append(_frozen_rmsnorm(model.adapter.final_norm()))
        for layer, block_ in enumerate(blocks):
            block: Any = block_
            handles.append(_frozen_rmsnorm(block.input_layernorm))
            handles.append(_frozen_rmsnorm(block.post_attention_layernorm))
            handles.append(_detach_output(block.self_attn.q_proj))
            handles.append(_detach_output(block.self_attn.k_proj))
            tc = transcoders[layer]
            rep = ReplacementMLP(state.const[layer].to(model.device)[None], tc.W_skip)
            originals.append(block.mlp)
            block.mlp = rep
            reps.append(rep)
        yield reps
    finally:
        for h in handles:
            h.remove()
        for block, mlp in zip(blocks, originals, strict=False):
            block.mlp = mlp
