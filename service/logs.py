"""JSON log lines, and masking of personal numbers when message texts are logged at all."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

# NIK (Indonesian ID number): 16 digits, sometimes grouped with spaces, dots or dashes.
NIK = re.compile(r"(?<!\d)(?:\d[ .\-]?){15}\d(?!\d)")
# Phone numbers: +62 / 62 / 0 followed by 8-13 more digits, with optional separators; also when glued
# to a word ("wa081234567890", "telp.0812..."), only not inside a longer run of digits.
PHONE = re.compile(r"(?<![\d+])(?:\+62|62|0)[\s.\-]?8(?:[\s.\-]?\d){7,11}(?!\d)")


def mask_pii(text: str) -> str:
    """Replace NIK-like numbers and phone numbers; used only when text logging is switched on."""
    return PHONE.sub("[PHONE]", NIK.sub("[NIK]", text))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if extra:
            line.update(extra)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("saring")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
