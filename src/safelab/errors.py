"""The one exception type for mistakes a user can make."""

from __future__ import annotations


class SafelabError(Exception):
    """A user-caused error: bad path, unknown site, malformed data row, missing key.

    The message names the offending input and the fix. The CLI prints it on one line
    and exits non-zero, without a traceback.
    """
