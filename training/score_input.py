"""Reading a backlog for `python -m training score`: CSV, TSV, JSONL or Parquet, streamed row by row.

Nothing is loaded whole: a CSV/JSONL file is read a line at a time and a Parquet file a record batch
at a time, so memory stays flat however long the backlog is. Every row keeps where it came from
(file and line, or row for Parquet) so a bad one can be reported there. A row that cannot be read
(broken JSON, bytes that are not UTF-8) is still a row: it comes out with a problem, never dropped.
"""

from __future__ import annotations

import csv
import glob
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
_PARQUET_BATCH = 4096


class BacklogInputError(ValueError):
    """The inputs cannot be scored at all (no such file, unknown format, a missing column)."""


@dataclass
class InputRow:
    source: str
    line: int  # the line in a CSV/JSONL file (1-based), the row in a Parquet file (1-based)
    text: object  # as read: a string, or None / another type for the scorer to refuse
    id: object = None
    problem: str | None = None  # the row could not be read at all

    @property
    def where(self) -> str:
        unit = "row" if Path(self.source).suffix.lower() == ".parquet" else "line"
        return f"{self.source} {unit} {self.line}"


def expand_inputs(patterns: Sequence[str]) -> list[Path]:
    """Files named or matched by glob patterns, in the order given (each pattern's matches sorted)."""
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise BacklogInputError(f"{pattern}: no file matches this pattern")
        for match in matches:
            path = Path(match)
            if not path.is_file():
                raise BacklogInputError(f"{match}: no such file")
            if path.suffix.lower() not in FORMATS:
                raise BacklogInputError(
                    f"{match}: unsupported file type {path.suffix!r} (use .csv, .tsv, .jsonl or .parquet)"
                )
            if path not in paths:
                paths.append(path)
    return paths


def input_format(path: Path) -> str:
    return FORMATS[path.suffix.lower()]


def check_columns(paths: Sequence[Path], text_column: str, id_column: str | None) -> None:
    """Files with a header (CSV, TSV, Parquet) must have the columns, before anything is scored."""
    wanted = [c for c in (text_column, id_column) if c]
    for path in paths:
        kind = input_format(path)
        if kind == "jsonl":
            continue  # no header: a row without the field is a bad row
        if kind == "parquet":
            import pyarrow.parquet as pq

            columns = pq.ParquetFile(path).schema_arrow.names
        else:
            with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
                columns = next(csv.reader(fh, delimiter="\t" if kind == "tsv" else ","), [])
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise BacklogInputError(
                f"{path}: missing column(s) {missing}; found {columns}. Set --text_column / --id_column."
            )


def count_rows(paths: Sequence[Path]) -> int:
    """Rows in all inputs, for the progress bar: cheap (line counts, Parquet metadata, a CSV parse)."""
    total = 0
    for path in paths:
        kind = input_format(path)
        if kind == "parquet":
            import pyarrow.parquet as pq

            total += pq.ParquetFile(path).metadata.num_rows
        elif kind == "jsonl":
            with path.open("rb") as fh:
                total += sum(1 for line in fh if line.strip())
        else:
            with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
                total += max(0, sum(1 for _ in csv.reader(fh, delimiter="\t" if kind == "tsv" else ",")) - 1)
    return total


def iter_rows(paths: Sequence[Path], text_column: str, id_column: str | None) -> Iterator[InputRow]:
    """Every row of every input, in order."""
    for path in paths:
        kind = input_format(path)
        if kind == "jsonl":
            yield from _jsonl_rows(path, text_column, id_column)
        elif kind == "parquet":
            yield from _parquet_rows(path, text_column, id_column)
        else:
            yield from _csv_rows(path, text_column, id_column, "\t" if kind == "tsv" else ",")


def _jsonl_rows(path: Path, text_column: str, id_column: str | None) -> Iterator[InputRow]:
    source = str(path)
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield InputRow(source, lineno, None, problem="line is not valid UTF-8")
                continue
            except json.JSONDecodeError as exc:
                yield InputRow(source, lineno, None, problem=f"not valid JSON ({exc.msg})")
                continue
            if not isinstance(row, dict):
                yield InputRow(source, lineno, None, problem="expected a JSON object")
                continue
            # A missing field reads as no text, as a null does (and as Arrow reads it for the Ray engine).
            yield InputRow(source, lineno, row.get(text_column), row.get(id_column) if id_column else None)


def _csv_rows(path: Path, text_column: str, id_column: str | None, delimiter: str) -> Iterator[InputRow]:
    # A complaint can be long; csv's default 128 KiB field limit would stop the whole file at one row.
    csv.field_size_limit(2**31 - 1)
    source = str(path)
    # Bytes that are not UTF-8 become lone surrogates: that row is refused as invalid text, not the file.
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        for row in reader:
            yield InputRow(source, reader.line_num, row.get(text_column), row.get(id_column) if id_column else None)


def _parquet_rows(path: Path, text_column: str, id_column: str | None) -> Iterator[InputRow]:
    import pyarrow.parquet as pq

    source = str(path)
    columns = [c for c in (text_column, id_column) if c]
    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_PARQUET_BATCH, columns=columns):
        texts = batch.column(text_column).to_pylist()
        ids = batch.column(id_column).to_pylist() if id_column else [None] * len(texts)
        for text, row_id in zip(texts, ids, strict=True):
            number += 1
            yield InputRow(source, number, text, row_id)
