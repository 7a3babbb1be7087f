"""The one exception type for mistakes a user can make, and its one-line form under Inspect."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class SafelabError(Exception):
    """A user-caused error: bad path, unknown site, malformed data row, missing key.

    The message names the offending input and the fix. The CLI prints it on one line
    and exits non-zero, without a traceback.
    """


_INSPECT_ERROR: type[SafelabError] | None = None


def inspect_error(error: SafelabError) -> SafelabError:
    """``error`` as a subclass of Inspect's ``PrerequisiteError`` too.

    Inspect's command line prints a ``PrerequisiteError`` as its message alone (no traceback) and
    exits non-zero; the result is still a :class:`SafelabError` for safelab's own callers. Built
    on first use, so that importing :mod:`safelab.errors` never imports Inspect.
    """
    global _INSPECT_ERROR
    if _INSPECT_ERROR is None:
        from inspect_ai._util.error import PrerequisiteError

        class InspectSafelabError(SafelabError, PrerequisiteError):
            """A :class:`SafelabError` that Inspect shows as one line."""

        _INSPECT_ERROR = InspectSafelabError
    if isinstance(error, _INSPECT_ERROR):
        return error
    from rich.markup import escape

    message = f"safelab: error: {error}"
    out = _INSPECT_ERROR(message)
    # Inspect prints the message as rich markup: escape it so "[...]" stays text.
    out.message = escape(message)  # type: ignore[attr-defined]
    return out


def inspect_errors(fn: F) -> F:
    """Raise the :class:`SafelabError`\\ s of ``fn`` as :func:`inspect_error` (for Inspect entry
    points: the provider's constructor, task factories)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SafelabError as e:
            raise inspect_error(e) from None

    return wrapper  # type: ignore[return-value]


def one_line(error: BaseException) -> str | None:
    """The one line to print for a user error (safelab's or an Inspect prerequisite), else None."""
    if isinstance(error, SafelabError):
        return str(error).removeprefix("safelab: error: ")
    module = sys.modules.get("inspect_ai._util.error")
    if module is not None and isinstance(error, module.PrerequisiteError):
        return " ".join(str(error.message).split()).removeprefix("safelab: error: ")
    return None
