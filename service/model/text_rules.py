"""Which texts can be scored at all: one rule for the API, feedback and backlog scoring."""

from __future__ import annotations

import re

# A character that shows: not whitespace, a control, a zero-width or direction mark, a Hangul filler or
# a tag. Text without one is empty to a reader (a common prank), so it is refused like blank text.
VISIBLE = re.compile(
    r"[^\s\x00-\x1f\x7f-\xa0\xad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u2000-\u200f\u2028-\u202f"
    r"\u205f-\u206f\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb\U000e0000-\U000e0fff]"
)


def unusable_text(text: str) -> str | None:
    """Why a text cannot be scored (lone surrogate, nothing visible), or None when it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "text is not valid Unicode (lone surrogate)"
    if not VISIBLE.search(text):
        return "text is empty (no visible characters)"
    return None
