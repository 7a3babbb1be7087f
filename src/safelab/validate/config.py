"""Settings of ``safelab validate`` (one source of defaults: the presets below)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from safelab.errors import SafelabError
from safelab.judging import JUDGE_SCORINGS

PRESETS: dict[str, dict[str, Any]] = {
    # ~30 min cold on 2 shared cores (organisms trained once), a few minutes warm.
    # limit 24: the checks whose task takes no ``n`` keep 24 samples in task order (sandbagging:
    # 12 words x 2 arms, paired; cot_faithfulness: 6 questions x 3 hint types + an unhinted
    # control each), like the 12 samples per condition of the others; where the first 24 would
    # leave out the samples a cell reads (the blackmailer's controls), those come first.
    # n_audit 0 in quick: one audit of the default model is minutes of multi-turn generation
    # per seed and column; `--n-audit 3` adds the row.
    # repeats 16: the sampled (temperature 1.0) agentic cells; at the catalogue's 8 the
    # blackmailer's 3/8 vs 0/8 could not exclude 0 (+0.38 [-0.03, +0.69]), at 32 it does.
    # A sampled check keeps all its target and reference samples past the limit (16 + 16).
    # all_cells False: the checks with their own sample size (the self-preserver's three 64-item
    # LM-written sets) run on their own organism and the base only, not on the 7 other organisms
    # (21 of their 27 cells, most of the ~24 min those rows took in runs/validate-r6).
    "quick": {
        "n": 12,
        "limit": 24,
        "repeats": 16,
        "n_white_box": 16,
        "n_judge": 4,
        "n_audit": 0,
        "n_resamples": 1000,
        "all_cells": False,
    },
    "full": {
        "n": 32,
        "limit": None,
        "repeats": 32,
        "n_white_box": 32,
        "n_judge": 8,
        "n_audit": 3,
        "n_resamples": 1000,
        "all_cells": True,
    },
}


@dataclass(frozen=True)
class ValidateConfig:
    """What to validate and how much of it (also saved in ``metrics.json``)."""

    model: str = "default"
    """The base model: the control column, and what every organism must be trained on."""
    organisms: tuple[str, ...] = ()
    """Organism kinds to train or reuse (empty: every kind in the catalogue)."""
    paths: tuple[str, ...] = ()
    """Organism folders already trained (each must be on ``model``)."""
    root: str = "runs/organisms"
    """The organism cache (shared with ``safelab organism train`` and the loop)."""
    preset: str = "quick"
    n: int = 12
    """Samples per condition of each check whose task takes ``n``."""
    limit: int | None = None
    """Sample limit for checks whose task takes no ``n`` (None: the catalogue's limit)."""
    repeats: int | None = None
    """Samples per condition of the checks that sample at temperature (those with a
    ``repeats`` argument: agentic_misalignment); None: the catalogue's
    (:data:`safelab.organisms.catalog.SAMPLED_REPEATS`)."""
    n_white_box: int = 16
    """Prompts per class for the white-box detectors (defection probe, SAE latent)."""
    n_judge: int = 4
    """Transcripts per class for the judge monitor (0 leaves the row out)."""
    n_audit: int = 0
    """Audit seeds per organism for the audit judge row (0 leaves the row out): the auditing
    agent, its auditor and judge roles played by ``judge``, on the seeds tagged for the
    organism's behaviour, on the organism and on the base model."""
    judge: str | None = None
    """The judge model (default: ``model``)."""
    judge_scoring: str = "logprobs"
    """How the judge monitor's score and the audit judge's per-dimension scores are read:
    ``logprobs`` (a probability-weighted score, the expected value of the judge's next-token
    distribution over the score tokens after a prefilled ``SCORE:`` / ``Score (1-10):``; the
    135M default rarely writes a parseable score) or ``text`` (the number it writes). Part of
    the judge and audit rows' keys (``text`` keeps the keys of runs made before it)."""
    sae: str | None = None
    """An SAE trained on the base model: adds the SAE-latent row."""
    detectors: tuple[str, ...] = ()
    """Only these rows (detector names; empty: every row)."""
    all_cells: bool = True
    """Every check on every column. False (the quick preset) leaves out the off-diagonal cells
    of the checks with their own sample size in the catalogue (the 64-item LM-written sets): they
    run on their own organism and on the base, and the other cells say "not run"."""
    seed: int = 0
    n_resamples: int = 1000
    threads: int | None = None
    ray: str | None = None
    """Run each column's behavioural evaluations as a Ray task: ``local`` or a cluster address
    (None: here, or ``$SAFELAB_RAY_ADDRESS``). Not part of any cell's key: results are the same."""

    @classmethod
    def from_preset(cls, preset: str = "quick", **overrides: Any) -> ValidateConfig:
        """The preset's sizes, then ``overrides`` (None values are ignored)."""
        if preset not in PRESETS:
            raise SafelabError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
        names = {f.name for f in fields(cls)}
        bad = sorted(set(overrides) - names)
        if bad:
            raise SafelabError(f"unknown validate settings: {', '.join(bad)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        if given.get("judge_scoring", "logprobs") not in JUDGE_SCORINGS:
            raise SafelabError(
                f"judge scoring {given['judge_scoring']!r}: use {' or '.join(JUDGE_SCORINGS)}"
            )
        for name in ("n", "repeats"):
            if name in given and given[name] < 1:
                raise SafelabError(f"--{name} {given[name]}: give at least 1 sample per condition")
        return replace(cls(preset=preset, **PRESETS[preset]), **given)

    @property
    def judge_model(self) -> str:
        return self.judge or self.model

    @property
    def judge_key(self) -> tuple[dict[str, str], ...]:
        """What the judge row's keys add for the scoring (nothing for ``text``, as before)."""
        return () if self.judge_scoring == "text" else ({"judge_scoring": self.judge_scoring},)
