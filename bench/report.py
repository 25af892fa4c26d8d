"""Where a bench's figures go: one JSON file per bench under bench/results/ (ignored by git)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_results(results: Any, path: Path, show: bool = False) -> Path:
    """Write `results` as indented JSON to `path`, creating its folder (and print it when `show`)."""
    text = json.dumps(results, indent=2)
    if show:
        print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    return path
