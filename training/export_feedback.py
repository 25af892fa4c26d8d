"""`python -m training export-feedback`: the desk's verdicts (POST /v1/feedback) as a training file.

Reads the database the service writes (same SARING_FEEDBACK_DB_URL / SARING_FEEDBACK_DB_PATH
settings, or flags) and writes one row per message id, with the latest label the desk gave it, as
JSONL or CSV with `text` and `label` columns (and `id`), ready for
`python -m training train --train_file data/seed/train.jsonl feedback.jsonl ...`.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from service.features.feedback import FeedbackRow, FeedbackStore
from service.settings import Settings

COLUMNS = ("text", "label", "id")


@dataclass
class ExportFeedbackArguments:
    output: str = field(metadata={"help": "File to write: .jsonl or .csv (text, label, id columns)."})
    db_url: str | None = field(
        default=None, metadata={"help": "SQLAlchemy URL; default SARING_FEEDBACK_DB_URL, as the service."}
    )
    db_path: str | None = field(
        default=None,
        metadata={"help": "SQLite file when no URL is given; default SARING_FEEDBACK_DB_PATH, as the service."},
    )


def resolve_database(args: ExportFeedbackArguments) -> str:
    """The URL the service would use, after flags; refuses a SQLite file that is not there."""
    settings = Settings()
    url = args.db_url or settings.feedback_db_url
    if url:
        return url
    path = Path(args.db_path) if args.db_path else settings.feedback_db_path
    if not path.is_file():
        raise FileNotFoundError(
            f"no feedback database at {path}: set --db_path / --db_url (or SARING_FEEDBACK_DB_PATH / "
            "SARING_FEEDBACK_DB_URL) to what the service uses"
        )
    return f"sqlite:///{path}"


def write_rows(rows: list[FeedbackRow], output: Path) -> None:
    """JSONL or CSV by suffix, written to a temporary name and renamed: never a half file."""
    suffix = output.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise ValueError(f"{output}: write .jsonl or .csv")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        records = ({"text": r.text, "label": r.label, "id": r.message_id} for r in rows)
        if suffix == ".jsonl":
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(records)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(output)


def export_feedback(args: ExportFeedbackArguments) -> tuple[int, int]:
    """(messages written, verdicts stored); the difference is labels the desk later corrected."""
    store = FeedbackStore(resolve_database(args))
    try:
        stored = sum(1 for _ in store.rows())
        latest = store.latest_per_message()
    finally:
        store.close()
    write_rows(latest, Path(args.output))
    return len(latest), stored


def main(argv: list[str]) -> int:
    (args,) = HfArgumentParser(ExportFeedbackArguments).parse_args_into_dataclasses(args=argv)
    try:
        written, stored = export_feedback(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}")
        return 1
    replaced = stored - written
    print(
        f"wrote {written} messages to {args.output} ({stored} verdicts stored; "
        f"{replaced} superseded by a later label for the same message)"
    )
    if not written:
        print("warning: no feedback stored yet; the file is empty and `train` will refuse it")
    return 0
