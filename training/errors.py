"""Errors that are the user's to fix (bad data, bad flags, a used folder): one clear message, no traceback.

`python -m training` prints them as `error: ...` lines and exits 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

OWN_LABELS_HINT = 'see README section "Your own labels"'


class UserError(Exception):
    """Something the user can fix; the message says what and how."""


class ArgumentsError(UserError, ValueError):
    """Flags that do not fit together (raised while parsing, before anything is read or written)."""
