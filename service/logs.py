"""JSON log lines, and masking of personal numbers when message texts are logged at all."""

from __future__ import annotations

import codecs
import json
import logging
import re
import sys
import unicodedata
from datetime import UTC, datetime

# NIK (Indonesian ID number): 16 digits, sometimes grouped with spaces, dots or dashes (" - " too), or
# with a lone underscore or slash ("3273/0125/..."; " / " between two numbers separates them).
NIK = re.compile(r"(?<!\d)(?:\d(?:\s?[.\-\u2010-\u2015]?\s?|[_/])){15}\d(?!\d)")
# Phone numbers: +62 / 62 / 0 followed by 8-13 more digits, with optional separators; also when glued
# to a word ("wa081234567890", "telp.0812..."), only not inside a longer run of digits. Separators as
# people type them: spaces, dots, dashes of any kind, parentheses ("(0812) 3456-7890", "(+62) 812 ..."),
# and a lone underscore or slash used to slip a number past filters ("0812_3456_7890").
_SEP = r"(?:[\s.\-\u2010-\u2015\u2212()]{0,3}|[_/])"
PHONE = re.compile(rf"(?<![\d+])\(?(?:\+62|62|0){_SEP}8(?:{_SEP}\d){{7,11}}(?!\d)")
# Invisible format characters (zero-width space/joiners, word joiner, soft hyphen, direction marks, BOM,
# tags): "0812\u200b3456\u200b7890" shows as a plain number but splits it for a pattern.
_INVISIBLE = re.compile(
    "[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\U000e0000-\U000e007f]"
)


def mask_pii(text: str) -> str:
    """Replace NIK-like numbers and phone numbers; used only when text logging is switched on.

    The text is normalised first (NFKC: fullwidth and styled digits become 0-9; invisible characters
    dropped), so the logged text is the normalised one and a styled number is masked like a plain one.
    """
    text = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
    return PHONE.sub("[PHONE]", NIK.sub("[NIK]", text))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, and never a lost line.

    A value UTF-8 cannot carry (a lone surrogate: a path with undecodable bytes, text a client sent)
    would make the stream's write fail and logging drop the whole line; such a line is written with
    ASCII escapes instead. Values JSON does not know are written as str().
    """

    def __init__(self, ensure_ascii: bool = False) -> None:
        super().__init__()
        self.ensure_ascii = ensure_ascii  # for a stream that cannot encode all of Unicode

    def format(self, record: logging.LogRecord) -> str:
        try:
            msg = record.getMessage()
        except Exception:  # a bad %-format in a log call must not cost the line
            msg = f"{record.msg} {record.args!r}"
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": msg,
        }
        extra = getattr(record, "fields", None)
        if extra:
            line.update(extra)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        text = json.dumps(line, ensure_ascii=self.ensure_ascii, default=str)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(line, ensure_ascii=True, default=str)
        return text


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stdout)
    # Under a non-UTF-8 locale stdout cannot write every character: escape them all, or lines are lost.
    utf8 = codecs.lookup(getattr(sys.stdout, "encoding", None) or "ascii").name == "utf-8"
    handler.setFormatter(JsonFormatter(ensure_ascii=not utf8))
    root = logging.getLogger("saring")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
