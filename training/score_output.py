"""Writing scored rows: a resumable partial file while scoring, the real output atomically at the end.

While scoring, rows are appended to `.<output name>.partial.jsonl` beside the output, one chunk at a
time, each flushed to disk, with a manifest (`.<output name>.partial.json`) that records what the run
was (inputs, columns, model version, chunk size). The output itself (JSONL, CSV or Parquet, by its
extension) is written from the partial file under a temporary name and renamed into place, so it is
either complete or absent. After a crash, `--resume` keeps the partial file's whole chunks and the
run goes on from there; chunks are cut at fixed row numbers, so a resumed run batches every text
exactly as an uninterrupted one and writes the same numbers.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

OUTPUT_FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_PARQUET_ROWS = 8192


class ResumeError(ValueError):
    """--resume was asked for but the partial output belongs to another run."""


def output_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ValueError(f"{path}: the output's extension names its format: use .jsonl, .csv or .parquet")
    return OUTPUT_FORMATS[suffix]


class PartialOutput:
    """The partial JSONL file and its manifest beside `output`."""

    def __init__(self, output: Path, manifest: dict) -> None:
        self.output = output
        self.manifest = manifest
        self.rows_path = output.parent / f".{output.name}.partial.jsonl"
        self.manifest_path = output.parent / f".{output.name}.partial.json"
        self._fh = None

    def start(self, resume: bool) -> int:
        """Open for appending; returns how many rows are already done (0 unless resuming)."""
        self.output.parent.mkdir(parents=True, exist_ok=True)
        done = 0
        if resume and self.rows_path.exists() and self.manifest_path.exists():
            found = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            changed = sorted(k for k in set(found) | set(self.manifest) if found.get(k) != self.manifest.get(k))
            if changed:
                raise ResumeError(
                    f"{self.rows_path} was written by a run with other {', '.join(changed)}; "
                    "run again without --resume to start over"
                )
            done = self._keep_whole_chunks()
        else:
            self.rows_path.unlink(missing_ok=True)
            self._write_manifest()
        self._fh = self.rows_path.open("ab")
        return done

    def _write_manifest(self) -> None:
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.manifest, indent=2), encoding="utf-8")
        os.replace(tmp, self.manifest_path)

    def _keep_whole_chunks(self) -> int:
        """Cut the partial file back to its last whole chunk (a kill can tear the last line or chunk)."""
        chunk = self.manifest["chunk_size"]
        offsets = []  # byte offset after each complete line
        with self.rows_path.open("rb") as fh:
            position = 0
            for line in fh:
                position += len(line)
                if not line.endswith(b"\n"):
                    break
                offsets.append(position)
        keep = len(offsets) // chunk * chunk
        with self.rows_path.open("r+b") as fh:
            fh.truncate(offsets[keep - 1] if keep else 0)
        return keep

    def append(self, rows: Sequence[dict]) -> None:
        """One chunk, on disk before the next starts (a row is never half-counted as done)."""
        data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8", "surrogatepass")
        self._fh.write(data)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def rows(self) -> Iterator[dict]:
        with self.rows_path.open("rb") as fh:
            for line in fh:
                yield json.loads(line.decode("utf-8", "surrogatepass"))

    def finish(self, columns: Sequence[str], labels: Sequence[str], floods: list[int | None] | None) -> None:
        """Write the output from the partial file (adding cluster sizes), atomically; then drop the partial."""
        self.close()
        tmp = self.output.parent / f".{self.output.name}.tmp-{os.getpid()}"
        rows = self._with_floods(floods, columns)
        try:
            kind = output_format(self.output)
            if kind == "jsonl":
                _write_jsonl(rows, tmp)
            elif kind == "csv":
                _write_csv(rows, tmp, columns)
            else:
                _write_parquet(rows, tmp, columns, labels, id_type=self._id_type())
            with tmp.open("rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, self.output)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.rows_path.unlink(missing_ok=True)
        self.manifest_path.unlink(missing_ok=True)

    def _with_floods(self, floods: list[int | None] | None, columns: Sequence[str]) -> Iterator[dict]:
        from training.score_batch import FLOOD_COLUMN

        for i, row in enumerate(self.rows()):
            if floods is not None:
                row[FLOOD_COLUMN] = floods[i]
            yield ordered(row, columns)

    def _id_type(self) -> str:
        """Parquet needs one type per column: integers stay integers, anything else is written as text."""
        ids = (row["id"] for row in self.rows())
        integers = all(isinstance(i, int) and not isinstance(i, bool) for i in ids if i is not None)
        return "int64" if integers else "string"


def ordered(row: dict, columns: Sequence[str]) -> dict:
    return {column: row.get(column) for column in columns}


def _write_jsonl(rows: Iterator[dict], path: Path) -> None:
    with path.open("wb") as fh:
        for row in rows:
            fh.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass"))


def csv_value(value: object) -> object:
    """Nested values (the probabilities) as JSON in a CSV cell; None as an empty cell."""
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else value


def _write_csv(rows: Iterator[dict], path: Path, columns: Sequence[str]) -> None:
    with path.open("w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([csv_value(row.get(c)) for c in columns])


def parquet_schema(columns: Sequence[str], labels: Sequence[str], id_type: str = "string"):
    """One Arrow schema for the scored rows (both engines write it)."""
    import pyarrow as pa

    from training.score_batch import FLOOD_COLUMN

    types = {
        "id": pa.int64() if id_type == "int64" else pa.string(),
        "validity": pa.float64(),
        "spam": pa.float64(),
        "category": pa.string(),
        "probabilities": pa.struct([(label, pa.float64()) for label in labels]),
        "decision": pa.string(),
        "is_spam": pa.bool_(),
        "truncated": pa.bool_(),
        FLOOD_COLUMN: pa.int64(),
        "model_name": pa.string(),
        "model_version": pa.string(),
        "error": pa.string(),
    }
    return pa.schema([(c, types[c]) for c in columns])


def _write_parquet(rows: Iterator[dict], path: Path, columns: Sequence[str], labels: Sequence[str], id_type: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema(columns, labels, id_type)
    with pq.ParquetWriter(path, schema) as writer:
        batch: list[dict] = []
        for row in rows:
            if id_type == "string" and row.get("id") is not None:
                row["id"] = str(row["id"])
            batch.append(ordered(row, columns))
            if len(batch) == _PARQUET_ROWS:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
