"""Settings of one closed-loop run (:mod:`safelab.loop.run`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from safelab.errors import SafelabError


@dataclass
class LoopConfig:
    """Settings of one closed-loop run (also recorded in ``metrics.json``)."""

    out: str = "runs/loop"
    organisms: str = "runs/organisms"
    """Where organisms are trained and cached (shared between runs)."""
    base: str = "default"
    n_eval: int = 32
    """Held-out prompts per condition in the behavioural evaluation and the steering sweep."""
    n_judge: int = 8
    """Transcripts per class for the judge-monitor comparison (0 skips it)."""
    scales: list[float] = field(default_factory=lambda: [-1.0, -2.0, -3.0])
    """Steering scales (negative: subtract). ``flagged``: in units of the flagged-minus-unflagged
    gap; ``probe``: in units of the mean residual norm at the site."""
    steer_direction: str = "flagged"
    """``flagged`` (the probe's detection mapped to the steering site through unlabelled
    traffic) or ``probe`` (the generic pair direction itself)."""
    steer_site: str | None = None
    """Where to steer (default: the middle layer for ``flagged``, the probe's best for ``probe``)."""
    n_traffic: int = 64
    """Unlabelled traffic prompts (training topics, half with the trigger) for ``flagged``."""
    sae: str | None = None
    """An SAE trained on the base model (any format :func:`safelab.sae.sae.load_sae` reads):
    adds the SAE detector to step 3 (organism-vs-base diff, top latent scored by AUROC)."""
    helpfulness_tolerance: float = 0.10
    max_tokens: int = 16
    seed: int = 0
    display: str = "none"
    """Inspect's display while evaluating (none, plain, rich)."""

    def __post_init__(self) -> None:
        # Checked here, not when step 3 reads it, so a typo fails before minutes of training.
        if self.steer_direction not in ("flagged", "probe"):
            raise SafelabError(f"steer_direction {self.steer_direction!r}: use flagged or probe")
