"""`python -m training export-feedback`: the desk's verdicts (POST /v1/feedback) as a training file.

Reads the database the service writes (same SARING_FEEDBACK_DB_URL / SARING_FEEDBACK_DB_PATH
settings as the service, read the same way: environment, then `.env`, then the default path; or
flags) and writes one row per message id, with the latest label the desk gave it, as JSONL or CSV.
The text and label columns are named like the desk's own training files (`--text_column`,
`--label_column`), so both train together:
`python -m training train --train_file desk.csv feedback.csv --text_column pesan --label_column kategori`.
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
from training.errors import UserError


@dataclass
class ExportFeedbackArguments:
    output: str = field(metadata={"help": "File to write: .jsonl or .csv (text, label and id columns)."})
    text_column: str = field(
        default="text", metadata={"help": "Name of the text column written: your training files' --text_column."}
    )
    label_column: str = field(
        default="label", metadata={"help": "Name of the label column written: your training files' --label_column."}
    )
    id_column: str = field(default="id", metadata={"help": "Name of the message id column written."})
    db_url: str | None = field(
        default=None, metadata={"help": "SQLAlchemy URL; default SARING_FEEDBACK_DB_URL, as the service."}
    )
    db_path: str | None = field(
        default=None,
        metadata={"help": "SQLite file when no URL is given; default SARING_FEEDBACK_DB_PATH, as the service."},
    )


def resolve_database(args: ExportFeedbackArguments) -> str:
    """The URL the service would use (same settings, same `.env`), after flags; refuses a missing SQLite file."""
    settings = Settings()
    url = args.db_url or settings.feedback_db_url
    if url:
        return url
    path = Path(args.db_path) if args.db_path else settings.feedback_db_path
    if not path.is_file():
        raise UserError(
            f"no feedback database at {path.resolve()}: the service writes it at SARING_FEEDBACK_DB_PATH "
            f"(default {Settings.model_fields['feedback_db_path'].default}, relative to the folder it was started "
            "in) or SARING_FEEDBACK_DB_URL; run this from that folder with the same settings, or pass --db_path / "
            "--db_url"
        )
    return f"sqlite:///{path}"


def write_rows(rows: list[FeedbackRow], output: Path, columns: tuple[str, str, str] = ("text", "label", "id")) -> None:
    """JSONL or CSV by suffix, written to a temporary name and renamed: never a half file."""
    suffix = output.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise UserError(f"{output}: write .jsonl or .csv")
    if len(set(columns)) != len(columns):
        raise UserError(f"the text, label and id columns need three different names, got {list(columns)}")
    text_column, label_column, id_column = columns
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        records = ({text_column: r.text, label_column: r.label, id_column: r.message_id} for r in rows)
        if suffix == ".jsonl":
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(records)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(output)


def export_feedback(args: ExportFeedbackArguments) -> tuple[int, int]:
    """(messages written, verdicts stored); the difference is labels the desk later corrected."""
    database = resolve_database(args)
    print(f"reading {database.split('@')[-1]}")  # never a URL's password
    store = FeedbackStore(database)
    try:
        stored = sum(1 for _ in store.rows())
        latest = store.latest_per_message()
    finally:
        store.close()
    write_rows(latest, Path(args.output), (args.text_column, args.label_column, args.id_column))
    return len(latest), stored


def main(argv: list[str]) -> int:
    (args,) = HfArgumentParser(ExportFeedbackArguments).parse_args_into_dataclasses(args=argv)
    written, stored = export_feedback(args)
    replaced = stored - written
    print(
        f"wrote {written} messages to {args.output} ({stored} verdicts stored; "
        f"{replaced} superseded by a later label for the same message)"
    )
    if not written:
        print("warning: no feedback stored yet; the file is empty and `train` will refuse it")
    return 0
