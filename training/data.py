"""Loading labelled messages and checking them before any training starts.

Every problem is reported with the file, the row (the line in a CSV/JSONL file) and what is
wrong, all problems at once, so a data engineer fixes a file in one pass.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

MAX_REPORTED = 25


class DataValidationError(ValueError):
    """The training data is unusable; the message lists every problem with file and row."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = self.problems[:MAX_REPORTED]
        more = len(self.problems) - len(shown)
        lines = "\n".join(f"  - {p}" for p in shown)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"training data failed validation ({len(self.problems)} problems):\n{lines}{tail}")


@dataclass
class Example:
    text: str
    label: str
    where: str  # "file line N", for error messages


@dataclass
class Split:
    name: str
    source: str
    examples: list[Example] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.examples]

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.examples]


def normalise_for_dedup(text: str) -> str:
    """Case, width and spacing do not make a message new (used for the leakage check)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"\s+", " ", text).strip()


def read_rows(source: str) -> tuple[list[dict], list[str], str]:
    """Rows, their column names and how to name row i ("line N" for files) from any supported source."""
    path = Path(source)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            rows = []
            with path.open(encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataValidationError([f"{source} line {lineno}: not valid JSON ({exc.msg})"]) from exc
                    if not isinstance(row, dict):
                        raise DataValidationError([f"{source} line {lineno}: expected a JSON object"])
                    row["__line__"] = lineno
                    rows.append(row)
            columns = sorted({k for r in rows for k in r if k != "__line__"})
            return rows, columns, "line"
        if suffix in (".csv", ".tsv"):
            with path.open(encoding="utf-8", newline="") as fh:
                reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
                rows = []
                for row in reader:
                    row["__line__"] = reader.line_num
                    rows.append(row)
                return rows, list(reader.fieldnames or []), "line"
        raise DataValidationError([f"{source}: unsupported file type {suffix!r} (use .csv, .tsv or .jsonl)"])
    # A saved `datasets` folder or a hub dataset id; rows are then numbered from 0.
    import datasets

    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
    else:
        try:
            ds = datasets.load_dataset(source)
        except Exception as exc:  # the hub raises many types; the user needs the sentence
            raise DataValidationError(
                [f"{source}: not a file, a saved dataset folder, or a reachable hub dataset ({exc})"]
            ) from exc
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    rows = [dict(r, __line__=i) for i, r in enumerate(ds)]
    return rows, list(ds.column_names), "row"


def load_split(
    name: str,
    sources: Sequence[str],
    text_column: str,
    label_column: str,
    labels: Sequence[str],
    label_map: dict[str, str],
) -> Split:
    """Read one split from one or more sources, collecting every row-level problem."""
    split = Split(name=name, source=", ".join(sources))
    problems: list[str] = []
    allowed = set(labels)
    for source in sources:
        rows, columns, unit = read_rows(source)
        missing = [c for c in (text_column, label_column) if c not in columns]
        if missing:
            problems.append(
                f"{source}: missing column(s) {missing}; found {columns}. "
                "Set --text_column / --label_column to the right names."
            )
            continue
        if not rows:
            problems.append(f"{source}: no rows")
            continue
        for row in rows:
            where = f"{source} {unit} {row['__line__']}"
            text = row.get(text_column)
            raw_label = row.get(label_column)
            if text is None or not str(text).strip():
                problems.append(f"{where}: empty text")
                continue
            if raw_label is None or str(raw_label).strip() == "":
                problems.append(f"{where}: empty label")
                continue
            label = label_map.get(str(raw_label).strip(), str(raw_label).strip())
            if label not in allowed:
                problems.append(
                    f"{where}: unknown label {raw_label!r} (allowed: {', '.join(labels)}; "
                    "map raw labels with --label_map)"
                )
                continue
            split.examples.append(Example(text=str(text), label=label, where=where))
    if problems:
        raise DataValidationError(problems)
    return split


def check_splits(splits: Sequence[Split], labels: Sequence[str]) -> None:
    """Every class present in every split, and no evaluation text also in training."""
    problems: list[str] = []
    for split in splits:
        counts = Counter(split.labels)
        for label in labels:
            if counts[label] == 0:
                problems.append(f"{split.source} ({split.name}): class {label!r} has no examples")
    train = next(s for s in splits if s.name == "train")
    seen = {}
    for example in train.examples:
        seen.setdefault(normalise_for_dedup(example.text), example.where)
    for split in splits:
        if split.name == "train":
            continue
        for example in split.examples:
            key = normalise_for_dedup(example.text)
            if key in seen:
                problems.append(f"{example.where} ({split.name}): text also in training data at {seen[key]} (leakage)")
    if problems:
        raise DataValidationError(problems)


def stratified_split(split: Split, share: float, seed: int) -> tuple[Split, Split]:
    """Hold out `share` of each class, with texts that repeat kept on one side to avoid leakage."""
    from sklearn.model_selection import train_test_split

    # Group duplicates so a repeated text never lands on both sides.
    groups: dict[str, list[Example]] = {}
    for example in split.examples:
        groups.setdefault(normalise_for_dedup(example.text), []).append(example)
    keys = list(groups)
    strata = [groups[k][0].label for k in keys]
    try:
        train_keys, val_keys = train_test_split(keys, test_size=share, random_state=seed, stratify=strata)
    except ValueError as exc:  # too few distinct texts for some class, or fewer held-out rows than classes
        counts = dict(Counter(strata))
        raise DataValidationError(
            [
                f"{split.source}: cannot hold out {share:.0%} for validation with every class on both sides "
                f"(distinct texts per class: {counts}; {exc}). Add rows, raise --validation_split "
                "or pass --validation_file"
            ]
        ) from exc
    train = Split("train", split.source, [e for k in train_keys for e in groups[k]])
    val = Split(
        "validation",
        f"{split.source} (held out {share:.0%})",
        [e for k in val_keys for e in groups[k]],
    )
    return train, val


def fingerprint(splits: Sequence[Split]) -> str:
    """A short hash of every (split, text, label), recorded in the sidecar to tie a model to its data."""
    digest = hashlib.sha256()
    for split in splits:
        for example in split.examples:
            digest.update(f"{split.name}\t{example.label}\t{example.text}\n".encode())
    return digest.hexdigest()[:16]
