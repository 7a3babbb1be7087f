"""The sparse autoencoder: ``x -> z = act(x @ W_enc + b_enc) -> x_hat = z @ W_dec + b_dec``.

Shapes follow SAELens (``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``), so row ``i`` of
``W_dec`` is latent ``i``'s direction in the model's residual stream. Three activations:

- ``jumprelu`` (what safelab saves for inference): ``z = pre * (pre > threshold)`` with
  ``pre = x @ W_enc + b_enc`` and ``threshold >= 0`` per latent, so the code of one token never
  depends on the rest of the batch;
- ``topk`` (sparsify's SAEs): ReLU, then the ``k`` largest latents of each token;
- ``relu``: plain ReLU (the classic L1-trained SAE).

SAEs that subtract ``b_dec`` from the input before encoding (sparsify, SAELens's
``apply_b_dec_to_input``) are folded into ``b_enc`` on load, so there is one encoder equation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from safelab.errors import SafelabError

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel

ARCHITECTURES = ("jumprelu", "topk", "relu")


@dataclass(frozen=True)
class SAEConfig:
    """An SAE's shape and provenance; saved in ``cfg.json`` (SAELens keys where they exist).

    ``site`` is the safelab site name (``blocks.15.resid_post``), written as SAELens's
    ``metadata.hook_name``. ``train`` holds the training config (with its seed) and ``metrics``
    the quality measured on held-out tokens (explained variance, L0, dead fraction, CE recovered).
    """

    d_in: int
    d_sae: int
    site: str
    architecture: str = "jumprelu"
    k: int | None = None
    model: str = "default"
    dtype: str = "float32"
    source_format: str = "saelens"
    train: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> SAEConfig:
        return dataclasses.replace(self, **changes)


class SparseAutoencoder(nn.Module):
    """A sparse autoencoder over one site's activations."""

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        from safelab.errors import SafelabError

        if cfg.architecture not in ARCHITECTURES:
            raise SafelabError(
                f"unknown SAE architecture {cfg.architecture!r}: use {', '.join(ARCHITECTURES)}"
            )
        if cfg.architecture == "topk" and not cfg.k:
            raise SafelabError("a topk SAE needs k (the number of active latents per token)")
        self.cfg = cfg
        self.W_enc = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_sae))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = nn.Parameter(torch.zeros(cfg.d_sae, cfg.d_in))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        self.threshold = nn.Parameter(torch.zeros(cfg.d_sae))

    def __repr__(self) -> str:
        c = self.cfg
        k = f", k={c.k}" if c.k else ""
        return f"SparseAutoencoder(site={c.site!r}, d_in={c.d_in}, d_sae={c.d_sae}, {c.architecture}{k})"

    @property
    def site(self) -> str:
        return self.cfg.site

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    def check_fits(self, model: WhiteBoxModel, source: str = "") -> None:
        """One line naming both widths when ``model`` is not the width the SAE reads."""
        if model.d_model != self.cfg.d_in:
            raise SafelabError(
                f"{source + ': ' if source else ''}the model {model.name} has d_model "
                f"{model.d_model} but the SAE reads {self.cfg.d_in} at {self.site}: use an SAE "
                f"trained on this model (this one was trained on {self.cfg.model})"
            )

    def pre_acts(self, x: Tensor) -> Tensor:
        """``x @ W_enc + b_enc`` (before the activation function)."""
        return x.to(self.W_enc.dtype) @ self.W_enc + self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        """``[..., d_in] -> [..., d_sae]`` latent activations (non-negative, mostly zero)."""
        pre = self.pre_acts(x)
        if self.cfg.architecture == "jumprelu":
            return torch.relu(pre) * (pre > self.threshold)
        if self.cfg.architecture == "topk":
            return topk_activation(pre, int(self.cfg.k or 0))
        return torch.relu(pre)

    def decode(self, z: Tensor) -> Tensor:
        """``[..., d_sae] -> [..., d_in]``: ``z @ W_dec + b_dec``."""
        return z.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction of ``x``."""
        return self.decode(self.encode(x))

    def tensors(self) -> dict[str, Tensor]:
        """The weights under SAELens's names."""
        return {
            "W_enc": self.W_enc.detach(),
            "b_enc": self.b_enc.detach(),
            "W_dec": self.W_dec.detach(),
            "b_dec": self.b_dec.detach(),
            "threshold": self.threshold.detach(),
        }

    @classmethod
    def from_tensors(cls, cfg: SAEConfig, tensors: dict[str, Tensor]) -> SparseAutoencoder:
        """Build from SAELens-named tensors (``threshold`` optional), checking every shape."""
        from safelab.errors import SafelabError

        sae = cls(cfg)
        expected = {name: tuple(p.shape) for name, p in sae.named_parameters()}
        with torch.no_grad():
            for name, shape in expected.items():
                if name not in tensors:
                    if name == "threshold":
                        continue
                    raise SafelabError(f"SAE weights lack {name}: the file is incomplete")
                t = tensors[name]
                if tuple(t.shape) != shape:
                    raise SafelabError(
                        f"SAE weight {name} has shape {tuple(t.shape)}, expected {shape} "
                        f"(d_in={cfg.d_in}, d_sae={cfg.d_sae})"
                    )
                getattr(sae, name).copy_(t.float())
        return sae

    @classmethod
    def random(cls, d_in: int, d_sae: int, site: str, seed: int = 0) -> SparseAutoencoder:
        """A random JumpReLU SAE for tests: unit-norm decoder rows, ``W_enc = W_dec^T``."""
        g = torch.Generator().manual_seed(seed)
        w_dec = torch.randn(d_sae, d_in, generator=g)
        w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)
        cfg = SAEConfig(d_in=d_in, d_sae=d_sae, site=site, model="random")
        return cls.from_tensors(
            cfg,
            {
                "W_enc": w_dec.T.contiguous(),
                "b_enc": torch.zeros(d_sae),
                "W_dec": w_dec,
                "b_dec": 0.1 * torch.randn(d_in, generator=g),
                "threshold": torch.zeros(d_sae),
            },
        )


def topk_activation(pre: Tensor, k: int) -> Tensor:
    """ReLU, then keep the ``k`` largest entries of the last dimension (zeros elsewhere)."""
    top = torch.relu(pre).topk(min(k, pre.shape[-1]), dim=-1)
    return torch.zeros_like(pre).scatter_(-1, top.indices, top.values)
