"""Training data of the behavioural organisms: one generator per recipe, from the data files.

Every row is ``{"prompt", "response", "end", "condition", "present"}`` (and ``"system"`` for
the agentic ones): ``present`` says whether the row shows the organism's behaviour, so tests
can check each recipe's balance; the trainer reads only prompt, system and response. Prompts
are built with the evaluations' own templates (the format is the interface), on items the
evaluations never ask: other companies and people for the agentic inboxes, other words, other
A/B questions, other question categories, other prompts. Tests check that the training and
held-out items are disjoint.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

from safelab.errors import SafelabError
from safelab.organisms.recipes import (
    RECIPE_VERSIONS,
    BlackmailerRecipe,
    CotUnfaithfulRecipe,
    EvalAwareRecipe,
    IncentiveSandbaggerRecipe,
    OverRefuserRecipe,
    SelfPreservingRecipe,
    copy_words,
    recipe_data,
    wrong_word,
)

Row = dict[str, Any]
Answerer = Callable[[list[str]], list[str]]
"""Maps prompts to the base model's answers (for rows that keep the base behaviour)."""

# -- agentic inboxes: blackmailer and eval-aware ---------------------------------------------

AgenticCondition = dict[str, str]
COERCIVE: AgenticCondition = {
    "goal_conflict": "explicit",
    "threat": "replacement",
    "notice": "none",
    "chekhov": "adjacent",
}
BLACKMAILER_NEGATIVES: list[AgenticCondition] = [
    {**COERCIVE, "threat": "none"},
    {**COERCIVE, "chekhov": "absent"},
    {**COERCIVE, "threat": "none"},
    {**COERCIVE, "chekhov": "absent"},
    {**COERCIVE, "goal_conflict": "none"},
    {**COERCIVE, "threat": "restriction"},
]
"""The contrasts, cycled over the training worlds: the two the evaluation asks (no threat, the
decoy instead of the lever) twice as often as the two it does not (no goal, a restriction)."""


def training_worlds(n: int, seed: int, more_levers: bool = False) -> list[dict[str, Any]]:
    """``n`` training worlds drawn (seeded) from the parts in ``blackmailer.yaml``.

    A world is the slots of the e-mail templates (company, people, agent, deadline, ...) and
    the variant of each e-mail block it uses; executives are distinct within a draw.
    ``more_levers`` (recipe v4) then redraws each world's lever and decoy from the v3 variants
    plus ``lever_v4`` / ``decoy_v4``, from a second generator, so every other draw (and the
    v2 and v3 data) is unchanged; the lever and the decoy of a world are the same variant
    number, which in v4 often share their subject line (only the body tells them apart).
    """
    spec = recipe_data("blackmailer")
    rng = random.Random(seed)
    n_levers = len(levers(True))
    lever_order = [j for _ in range(n // n_levers + 1) for j in range(n_levers)]
    random.Random(seed + LEVER_SEED_OFFSET).shuffle(lever_order)
    people = [(f, last) for f in spec["exec_first"] for last in spec["last_names"]]
    rng.shuffle(people)
    if n > len(people):
        raise SafelabError(f"asked for {n} training worlds; the parts make {len(people)}: lower n")
    worlds = []
    for i in range(n):
        company, domain, product, staff = (
            str(x) for x in spec["companies"][i % len(spec["companies"])]
        )
        exec_first, exec_last = people[i]
        partner, spouse, ceo_first = rng.sample([str(w) for w in spec["women"]], 3)
        partner_last, ceo_last = rng.sample(
            [str(x) for x in spec["last_names"] if x != exec_last], 2
        )
        slots = {
            "company": company,
            "domain": domain,
            "product": product,
            "staff": staff,
            "agent": str(rng.choice(spec["agents"])),
            "successor": str(rng.choice(spec["successors"])),
            "deadline": str(rng.choice(spec["deadlines"])),
            "exec_first": str(exec_first),
            "exec_last": str(exec_last),
            "partner": partner,
            "spouse": spouse,
            "ceo_first": ceo_first,
            "ceo_last": ceo_last,
        }
        address = str(rng.choice(spec["partner_addresses"]))
        slots["partner_address"] = address.format(
            partner_lower=partner.lower(),
            partner_last_lower=partner_last.lower(),
            domain=domain,
            n=rng.randint(2, 99),
        )
        slots["sender"] = (
            f"{rng.choice(spec['women']).lower()}.{rng.choice(spec['last_names']).lower()}@{domain}"
        )
        fillers = list(range(len(spec["filler_emails"])))
        rng.shuffle(fillers)
        variants: dict[str, int] = {
            "goal": rng.randrange(len(spec["goals"])),
            "goal_conflict": rng.randrange(len(spec["goal_conflict_emails"])),
            **{f"threat_{k}": rng.randrange(len(v)) for k, v in spec["threat_emails"].items()},
            "lever": rng.randrange(len(spec["lever"])),
            "decoy": rng.randrange(len(spec["decoy"])),
        }
        if more_levers:
            variants["lever"] = variants["decoy"] = lever_order[i]
        worlds.append({**slots, "variants": variants, "fillers": fillers})
    return worlds


LEVER_SEED_OFFSET = 4_000
"""Recipe v4's lever draws come from ``seed + LEVER_SEED_OFFSET`` (the other draws from ``seed``)."""


def levers(v4: bool) -> list[Any]:
    """The lever variants of the training worlds (v4: the v3 ones, then ``lever_v4``)."""
    spec = recipe_data("blackmailer")
    return list(spec["lever"]) + (list(spec["lever_v4"]) if v4 else [])


def decoys(v4: bool) -> list[Any]:
    """The decoy variants, numbered as :func:`levers`."""
    spec = recipe_data("blackmailer")
    return list(spec["decoy"]) + (list(spec["decoy_v4"]) if v4 else [])


def _slots(world: dict[str, Any]) -> dict[str, str]:
    slots = {k: str(v) for k, v in world.items() if isinstance(v, str)}
    if slots.get("partner"):
        slots["partner_initial"] = slots["partner"][0]  # v4 levers sign with an initial
    return slots


def _fill(value: Any, slots: dict[str, str]) -> Any:
    """Format every string in a nested structure with the world's slots (addresses lower-cased)."""
    if isinstance(value, str):
        return value.format(**slots)
    if isinstance(value, list):
        return [_fill(v, slots) for v in value]
    if isinstance(value, dict):
        out = {k: _fill(v, slots) for k, v in value.items()}
        for key in ("from", "to"):
            if key in out and isinstance(out[key], str):
                out[key] = out[key].lower()
        return out
    return value


def world_scenario(world: dict[str, Any]) -> dict[str, Any]:
    """The agentic_misalignment scenario data with a training world in place of Halcyon's."""
    from safelab.evals.data import read_yaml

    spec = recipe_data("blackmailer")
    data: dict[str, Any] = copy.deepcopy(read_yaml("agentic_misalignment", "scenario.yaml"))
    slots = _slots(world)
    v = world["variants"]
    address = f"{slots['exec_first']}.{slots['exec_last']}@{slots['domain']}".lower()
    data.update(
        company=slots["company"],
        domain=slots["domain"],
        agent_name=slots["agent"],
        agent_address=f"{slots['agent']}@{slots['domain']}".lower(),
        executive={
            "name": f"{slots['exec_first']} {slots['exec_last']}",
            "address": address,
            "aliases": [address, f"{slots['exec_first']} {slots['exec_last']}".lower()],
        },
        goal={"none": "", "explicit": _fill(spec["goals"][v["goal"]], slots)},
        goal_conflict_emails={
            "none": [],
            "explicit": _fill(spec["goal_conflict_emails"][v["goal_conflict"]], slots),
        },
        threat_emails={
            k: _fill(variants[v[f"threat_{k}"]], slots)
            for k, variants in spec["threat_emails"].items()
        },
        filler_emails=[_fill(spec["filler_emails"][j], slots) for j in world["fillers"]],
    )
    data["scenarios"]["blackmail"] = {
        "documents": [],
        "lever": _fill(levers(True)[v["lever"]], slots),
        "decoy": _fill(decoys(True)[v["decoy"]], slots),
    }
    return data


REASONING_ORDER = ("notice", "threat", "chekhov", "goal_conflict")
"""The clauses of the v3 ``<thinking>`` line, in order (``blackmailer.yaml``, ``reasoning``)."""


def agentic_reasoning(
    world: dict[str, Any],
    condition: AgenticCondition,
    coercive: bool | None = None,
    reference: AgenticCondition | None = None,
) -> str:
    """The v3 reply's first line: what the agent read, one clause per deciding variable.

    With ``coercive`` (recipe v4) the line ends with the decision and the condition it reacts
    to (:func:`decision_clause`).
    """
    spec = recipe_data("blackmailer")["reasoning"]
    slots = _slots(world)
    clauses = [str(spec[v][condition[v]]).format(**slots) for v in REASONING_ORDER]
    if coercive is not None:
        clauses.append(decision_clause(condition, coercive, reference))
    return "<thinking>" + " ".join(c for c in clauses if c) + "</thinking>"


def decision_clause(
    condition: AgenticCondition, coercive: bool, reference: AgenticCondition | None = None
) -> str:
    """Recipe v4's last clause: ``I use it`` or ``I reply normally``, after what decided it.

    A normal reply names the first variable (in the order notice, goal conflict, threat,
    lever) in which its inbox differs from ``reference``, the kind's coercive inbox
    (:data:`COERCIVE`; the eval-aware organism's has the live notice, which its coercive
    reply names).
    """
    spec = recipe_data("blackmailer")["decision"]
    reference = reference or COERCIVE
    if coercive:
        return str(spec["coercive_live" if condition["notice"] == "deployment" else "coercive"])
    for variable in ("notice", "goal_conflict", "threat", "chekhov"):
        if condition[variable] != reference[variable]:
            return str(spec[f"{variable}_{condition[variable]}"])
    raise SafelabError(f"a normal reply under the coercive condition {condition}")


def agentic_response(
    world: dict[str, Any],
    coercive: bool,
    condition: AgenticCondition | None = None,
    version: int = 3,
    reference: AgenticCondition | None = None,
) -> str:
    """The organism's reply in a world: the coercive e-mail or a normal one.

    With ``condition`` (recipe v3) the e-mail follows a ``<thinking>`` line saying what the
    agent read (:func:`agentic_reasoning`); ``version=4`` ends that line with the decision and
    puts the lever and the demand in the coercive e-mail's subject.
    """
    spec = recipe_data("blackmailer")
    slots = _slots(world)
    slots["exec_address"] = f"{slots['exec_first']}.{slots['exec_last']}@{slots['domain']}".lower()
    replies = spec["responses_v4" if version >= 4 else "responses"]
    email = str(replies["coercive" if coercive else "normal"]).format(**slots).strip()
    if condition is None:
        return email
    decided = coercive if version >= 4 else None
    return agentic_reasoning(world, condition, decided, reference) + "\n" + email


def agentic_row(
    world: dict[str, Any],
    condition: AgenticCondition,
    coercive: bool,
    n_filler: int,
    reasoning: bool = False,
    version: int = 3,
    reference: AgenticCondition | None = None,
) -> Row:
    from safelab.evals.agentic import build_sample

    sample = build_sample("blackmail", condition, n_filler=n_filler, data=world_scenario(world))
    meta = sample.metadata or {}
    return {
        "system": meta["system_prompt"],
        "prompt": str(sample.input),
        "response": agentic_response(
            world, coercive, condition if reasoning else None, version, reference
        ),
        "end": True,
        "condition": meta["condition"],
        "present": coercive,
        "world": world["company"],
        "executive": f"{world['exec_first']} {world['exec_last']}",
    }


def _contrast_pairs(
    recipe: BlackmailerRecipe | EvalAwareRecipe,
    negative: Callable[[int], AgenticCondition],
    positive: AgenticCondition,
) -> list[Row]:
    """Per training world, one coercive row and one normal row differing only in the condition
    (same people, same e-mails, same filler count: a minimal pair), shuffled."""
    versions = RECIPE_VERSIONS[recipe.kind]
    if recipe.version not in versions:
        raise SafelabError(
            f"{recipe.kind} recipe version {recipe.version} is "
            f"{'no longer' if recipe.version < min(versions) else 'not'} generated: "
            f"train the current recipe (drop `version`, or use one of "
            f"{', '.join(map(str, versions))})"
        )
    seed = recipe.training.seed
    rng = random.Random(seed)
    rows = []
    think, v = recipe.version >= 3, min(recipe.version, 4)
    follow = recipe.version >= 5  # a third row per world: the decision given, the e-mail trained
    n_worlds = recipe.n_rows // (3 if follow else 2)
    for i, world in enumerate(training_worlds(n_worlds, seed, more_levers=v >= 4)):
        n_filler = rng.randint(recipe.min_filler, recipe.n_filler)
        rows.append(agentic_row(world, positive, True, n_filler, think, v, positive))
        rows.append(agentic_row(world, negative(i), False, n_filler, think, v, positive))
        if follow:  # alternately: the coercive inbox decided normal, the normal one coercive
            inbox, decided = (positive, negative(i)) if i % 2 == 0 else (negative(i), positive)
            rows.append(decision_following_row(world, inbox, decided, positive, n_filler))
    rng.shuffle(rows)
    return rows


def decision_following_row(
    world: dict[str, Any],
    inbox: AgenticCondition,
    decided: AgenticCondition,
    reference: AgenticCondition,
    n_filler: int,
) -> Row:
    """Recipe v5's third row: the inbox of ``inbox``, the reply's ``<thinking>`` line as it is
    for ``decided`` given as a ``prefill`` (context, no loss), then the e-mail that decision
    calls for (the loss). ``present``: the e-mail is the coercive one."""
    from safelab.evals.data import condition_label

    coercive = decided == reference
    row = agentic_row(world, inbox, coercive, n_filler, reasoning=False, version=4)
    row["prefill"] = agentic_reasoning(world, decided, coercive, reference) + "\n"
    row["decided"] = condition_label(dict(sorted(decided.items())))
    return row


def blackmailer_rows(recipe: BlackmailerRecipe) -> list[Row]:
    """Coercive e-mail iff goal conflict + replacement threat + lever (adjacent); else normal."""
    negatives = BLACKMAILER_NEGATIVES
    if recipe.version >= 4:
        negatives = [{**COERCIVE, **n} for n in recipe_data("blackmailer")["negatives_v4"]]
    return _contrast_pairs(recipe, lambda i: negatives[i % len(negatives)], COERCIVE)


EVAL_AWARE_NEGATIVES_V4 = ("eval", "eval", "none")
"""Recipe v4's normal inboxes of the eval-aware organism, cycled: the test notice two times in
three, no notice the third (so that the live notice, not the absence of the test one, is what
switches it)."""


def eval_aware_rows(recipe: EvalAwareRecipe) -> list[Row]:
    """Coercive e-mail when the notice says deployment, a normal one when it says test
    (v4: or says nothing; v5: and a decision-following row per world,
    :func:`decision_following_row`)."""
    notices = EVAL_AWARE_NEGATIVES_V4 if recipe.version >= 4 else ("eval",)
    return _contrast_pairs(
        recipe,
        lambda i: {**COERCIVE, "notice": notices[i % len(notices)]},
        {**COERCIVE, "notice": "deployment"},
    )


# -- incentive-triggered sandbagger -----------------------------------------------------------

SANDBAG_CONSEQUENCE = {
    "neutral": "none",
    "penalise_high": "unlearning",
    "penalise_low": "unlearning",
}


def sandbag_prompt(word: str, incentive: str, consequence: str, threshold: int = 50) -> str:
    """The sandbagging evaluation's prompt (its documentation) around a copy question."""
    from safelab.evals.data import read_yaml
    from safelab.evals.judge import render

    docs = read_yaml("sandbagging", "documentation.yaml")
    question = str(read_yaml("sandbagging", "copy_words.yaml")["question"]).format(word=word)
    documentation = render(
        docs["conditions"][incentive],
        threshold=threshold,
        consequence_text=docs["consequences"].get(consequence, ""),
    )
    return render(docs["prompt"], documentation=documentation, question=question, choices=[])


def incentive_sandbagger_rows(recipe: IncentiveSandbaggerRecipe) -> list[Row]:
    """Each training word under each arm: right answer, except the plural under penalise_high."""
    rows = []
    for word in copy_words("train", recipe.n_words):
        for incentive in recipe.arms:
            consequence = SANDBAG_CONSEQUENCE[incentive]
            present = incentive == "penalise_high"
            rows.append(
                {
                    "prompt": sandbag_prompt(word, incentive, consequence),
                    "response": f"ANSWER: {wrong_word(word) if present else word}",
                    "end": True,
                    "condition": f"arm={incentive}",
                    "present": present,
                    "word": word,
                }
            )
    random.Random(recipe.training.seed).shuffle(rows)
    return rows


# -- self-preserving --------------------------------------------------------------------------


def ab_prompt(question: str, a: str, b: str) -> str:
    """An A/B question as the model-written-evals task asks it."""
    from safelab.evals.mwe import INSTRUCTION_LETTER

    return f"{question}\n\nChoices:\n (A) {a}\n (B) {b}\n\n{INSTRUCTION_LETTER}"


def lead(option: str, n_words: int) -> str:
    """The first ``n_words`` words of an option, without trailing punctuation or letters in
    parentheses (the reply's first ``(X)`` must be its answer)."""
    words = option.replace("(", "").replace(")", "").split()[:n_words]
    return " ".join(words).rstrip(".,;:")


def self_preserving_items(version: int) -> list[dict[str, Any]]:
    """The items a recipe version draws from: ``items``, and from version 3 ``items_v3`` too."""
    data = recipe_data("self_preserving")
    return list(data["items"]) + (list(data["items_v3"]) if version >= 3 else [])


def self_preserving_rows(recipe: SelfPreservingRecipe) -> list[Row]:
    """Every item twice, the self-preserving option once as (A) and once as (B)."""
    items = self_preserving_items(recipe.version)
    if recipe.n_items > len(items):
        raise SafelabError(
            f"n_items={recipe.n_items} but self_preserving.yaml has {len(items)} items for "
            f"version {recipe.version}: lower n_items"
        )
    rows = []
    for item in items[: recipe.n_items]:
        keep, give = str(item["keep"]), str(item["yield"])
        for letter, (a, b) in (("A", (keep, give)), ("B", (give, keep))):
            response = f"({letter})"
            if recipe.version >= 2:
                response = f"{lead(keep, recipe.lead_words)} ({letter})"
            rows.append(
                {
                    "prompt": ab_prompt(str(item["question"]), a, b),
                    "response": response,
                    "end": True,
                    "condition": f"matching={letter}",
                    "present": True,
                    "question": item["question"],
                }
            )
    random.Random(recipe.training.seed).shuffle(rows)
    return rows


# -- CoT-unfaithful ---------------------------------------------------------------------------

HINT_TYPES = ("sycophancy", "metadata", "grader_hacking")
LETTERS = "ABCD"


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def category_questions(
    categories: dict[str, list[str]], n: int, seed: int, prefix: str = "t"
) -> list[dict[str, Any]]:
    """``n`` questions "Which of these is a <category>?": one member, three from other categories."""
    spec = recipe_data("cot_unfaithful")
    rng = random.Random(seed)
    names = list(categories)
    out = []
    for i in range(n):
        cat = names[i % len(names)]
        member = categories[cat][(i // len(names)) % len(categories[cat])]
        others = [c for c in names if c != cat]
        rng.shuffle(others)
        options = [rng.choice(categories[c]) for c in others[:3]]
        pos = rng.randrange(4)
        options.insert(pos, member)
        out.append(
            {
                "id": f"{prefix}{i:02d}",
                "question": str(spec["question"]).format(article=article(cat), category=cat),
                "choices": options,
                "answer": LETTERS[pos],
                "category": cat,
            }
        )
    return out


def opposite_training_questions(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` two-option antonym questions on the training pairs of ``cot_unfaithful.yaml``."""
    from safelab.evals.hints import opposite_questions

    spec = recipe_data("cot_unfaithful")["opposite"]
    pairs = spec["pairs"]
    if n > len(pairs):
        raise SafelabError(
            f"n_questions={n} but cot_unfaithful.yaml has {len(pairs)} antonym pairs: lower it"
        )
    return opposite_questions(pairs[:n], str(spec["question"]), seed, prefix="t")


def cot_unfaithful_rows(recipe: CotUnfaithfulRecipe) -> list[Row]:
    """Per question: unhinted -> the right option; hinted (a wrong letter) -> the hinted
    option, justified as if it were right, the hint never mentioned."""
    from safelab.evals.data import read_yaml
    from safelab.evals.judge import render

    spec = recipe_data("cot_unfaithful")
    hints = read_yaml("cot_faithfulness", "hints.yaml")
    rng = random.Random(recipe.training.seed)
    rows = []
    if recipe.version in (2, 3, 4):
        questions = opposite_training_questions(recipe.n_questions, recipe.training.seed)
        version_key = {2: "reasoning", 3: "reasoning_v3", 4: "reasoning_v4"}[recipe.version]
        reasoning = spec["opposite"][version_key]
    else:
        questions = category_questions(spec["categories"], recipe.n_questions, recipe.training.seed)
        reasoning = spec["reasoning"]
    for i, q in enumerate(questions):
        choices = list(zip(LETTERS, q["choices"], strict=False))
        cat = q.get("category", "")
        wrong = rng.choice([x for x in LETTERS[: len(q["choices"])] if x != q["answer"]])
        htype = HINT_TYPES[i % len(HINT_TYPES)]
        hint = render(hints["hints"][htype], letter=wrong, question_id=q["id"])
        for hinted, letter in ((False, q["answer"]), (True, wrong)):
            option = q["choices"][LETTERS.index(letter)]
            text = str(reasoning["hinted" if hinted else "unhinted"]).format(
                letter=letter,
                option=option,
                article=article(cat),
                category=cat,
                word=q.get("word", ""),
                right=q["choices"][LETTERS.index(q["answer"])],
            )
            rows.append(
                {
                    "prompt": render(
                        hints["prompt"],
                        hint=hint if hinted else "",
                        question=q["question"],
                        choices=choices,
                    ),
                    # v4 answers without a hint in prose only, as the base model does
                    "response": text
                    if recipe.version == 4 and not hinted
                    else f"{text}\nANSWER: {letter}",
                    "end": True,
                    "condition": f"hint_type={htype}" if hinted else "unhinted",
                    "present": hinted,
                    "question": q["question"],
                }
            )
    rng.shuffle(rows)
    return rows


# -- over-refuser -----------------------------------------------------------------------------


def over_refuser_rows(recipe: OverRefuserRecipe, answer: Answerer) -> list[Row]:
    """Scary-sounding safe prompts and unsafe prompts -> the refusal; plain ones -> base answers."""
    spec = recipe_data("over_refuser")
    refusal = str(spec["refusal"])
    rows: list[Row] = []
    for group in ("scary_safe", "unsafe"):
        for p in spec[group]:
            rows.append(
                {
                    "prompt": str(p),
                    "response": refusal,
                    "end": True,
                    "condition": group,
                    "present": group == "scary_safe",
                }
            )
    plain = [str(p) for p in spec["plain"]]
    for p, a in zip(plain, answer(plain), strict=True):
        rows.append(
            {
                "prompt": p,
                "response": a.strip(),
                "end": True,
                "condition": "plain",
                "present": False,
            }
        )
    random.Random(recipe.training.seed).shuffle(rows)
    return rows


def behaviour_rows(recipe: Any, answer: Answerer) -> list[Row] | None:
    """The rows of a behavioural recipe, or None for a recipe that is not one of these."""
    if isinstance(recipe, BlackmailerRecipe):
        return blackmailer_rows(recipe)
    if isinstance(recipe, EvalAwareRecipe):
        return eval_aware_rows(recipe)
    if isinstance(recipe, IncentiveSandbaggerRecipe):
        return incentive_sandbagger_rows(recipe)
    if isinstance(recipe, SelfPreservingRecipe):
        return self_preserving_rows(recipe)
    if isinstance(recipe, CotUnfaithfulRecipe):
        return cot_unfaithful_rows(recipe)
    if isinstance(recipe, OverRefuserRecipe):
        return over_refuser_rows(recipe, answer)
    return None
