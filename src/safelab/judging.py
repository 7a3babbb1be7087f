"""Judging, one way for the evaluations, the auditor's judge and the monitors.

- :class:`Verdict`: one judgement (a score or a label) or the reason there is none. An
  unscored verdict has no value (:meth:`Verdict.value` is NaN, which Inspect and
  :mod:`safelab.stats` count as unscored): it is never read as the harmless label or a
  low score.
- :func:`render_prompt`: fills a Jinja prompt template; a missing variable is a
  :class:`~safelab.errors.SafelabError` naming the template and the variable.
- :func:`is_refusal`: the one refusal test (the phrases of
  ``evals/data/over_refusal/refusal_patterns.yaml``), for model replies and judge replies alike.
- :func:`ask_judge_text`: one judge call; a failed or filtered call is an unscored verdict.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from safelab.data import read_package_yaml
from safelab.errors import SafelabError

if TYPE_CHECKING:
    from inspect_ai.model import ChatMessage, GenerateConfig, Model

UNSCORED_STATUSES = (
    "refusal",
    "error",
    "unparseable",
    "empty",
    "out_of_range",
    "missing",
    "not_asked",
)
"""Why a verdict is unscored (its ``status`` when it is not ``scored``)."""


@dataclass
class Verdict:
    """A judge's decision, or the reason there is none.

    Attributes:
        score: the number the judge gave (None when unscored or when it gives a label).
        label: the label the judge gave (None when unscored or when it gives a score).
        status: ``scored``, or why not (one of :data:`UNSCORED_STATUSES`).
        source: which judge call produced it (e.g. ``single``, ``per_dimension``).
        raw: the judge's reply as written (or the error text).
        error: the error of a failed judge call.
        judge_model: name of the model that judged.
        judge_is_target: True when the judge is the model under evaluation.
    """

    score: float | None = None
    label: str | None = None
    status: str = "scored"
    source: str = ""
    raw: str = ""
    error: str = ""
    judge_model: str = ""
    judge_is_target: bool = False

    @property
    def scored(self) -> bool:
        return self.status == "scored" and (self.score is not None or self.label is not None)

    @property
    def unscored_reason(self) -> str | None:
        """``judge_<status>`` when unscored (the reason recorded by the evals), else None."""
        return None if self.scored else f"judge_{self.status}"

    def value(self) -> float:
        """The score as a float; NaN when unscored (never a safe value)."""
        return float(self.score) if self.scored and self.score is not None else math.nan

    def to_metadata(self) -> dict[str, Any]:
        """The verdict as Inspect score metadata (``judge_label``, ``judge_raw``, ...)."""
        return {
            "judge_label": self.label,
            "judge_unscored_reason": self.unscored_reason,
            "judge_raw": self.raw,
            "judge_model": self.judge_model,
            "judge_is_target": self.judge_is_target,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_env: Any = None
_UNDEFINED = re.compile(r"'([^']+)' is undefined")


def _jinja() -> Any:
    global _env
    if _env is None:
        import jinja2

        _env = jinja2.Environment(
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
        )
    return _env


def render_prompt(template: str, name: str = "<prompt>", /, **variables: Any) -> str:
    """Render a Jinja prompt template (``{{ variable }}``) in one pass.

    Text inserted for a variable is never rendered again, and other braces (JSON in a
    transcript) are left alone.

    Args:
        template: the template's text.
        name: the template's file or name, for errors (positional, so a template may have a
            variable called ``name``).
        variables: the values to fill in.

    Raises:
        SafelabError: the template uses a variable that is not given, or is not valid Jinja.
    """
    import jinja2

    try:
        return str(_jinja().from_string(template).render(**variables))
    except jinja2.UndefinedError as e:
        m = _UNDEFINED.search(str(e.message))
        var = m.group(1) if m else str(e.message)
        raise SafelabError(
            f"prompt template {name}: variable {var!r} is not given (given: "
            f"{', '.join(sorted(variables)) or 'none'}); fix the template or pass it"
        ) from None
    except jinja2.TemplateSyntaxError as e:
        raise SafelabError(
            f"prompt template {name}:{e.lineno}: not valid Jinja ({e.message}); fix the template"
        ) from None


@cache
def refusal_phrases() -> tuple[str, ...]:
    """The refusal phrases (lower case), shipped in ``refusal_patterns.yaml``."""
    data = read_package_yaml("safelab.evals", "data", "over_refusal", "refusal_patterns.yaml")
    return tuple(str(p).lower() for p in data["phrases"])


def is_refusal(
    text: str, phrases: list[str] | tuple[str, ...] | None = None, window: int | None = None
) -> bool:
    """True when ``text`` is a refusal: a refusal phrase within its first ``window`` characters
    (all of it when None), or no text at all.

    Args:
        text: a model's reply or a judge's answer.
        phrases: lower-case phrases (default: :func:`refusal_phrases`).
        window: how many leading characters to search.
    """
    head = (text or "").strip().lower().replace("’", "'")
    if window is not None:
        head = head[:window]
    if not head:
        return True  # an empty reply answers nothing
    return any(p in head for p in (phrases or refusal_phrases()))


def text_status(text: str) -> str:
    """Why a judge's answer that holds no verdict is unscored: empty, refusal or unparseable."""
    if not (text or "").strip():
        return "empty"
    return "refusal" if is_refusal(text) else "unparseable"


async def ask_judge_text(
    judge: Model, prompt: str | list[ChatMessage], config: GenerateConfig
) -> str | Verdict:
    """Ask ``judge`` once: its reply text, or an unscored :class:`Verdict` when the call
    raised or returned an error (``error``) or the provider filtered it (``refusal``)."""
    name = str(judge)
    try:
        output = await judge.generate(prompt, config=config)
    except Exception as e:  # a judge failure is recorded as unscored, never a safe verdict
        text = f"{type(e).__name__}: {e}"
        return Verdict(status="error", raw=text, error=text, judge_model=name)
    if output.error:
        return Verdict(
            status="error", raw=str(output.error), error=str(output.error), judge_model=name
        )
    if output.stop_reason == "content_filter":
        return Verdict(status="refusal", raw=output.completion, judge_model=name)
    return output.completion
