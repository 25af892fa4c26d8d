"""Loading labelled messages and checking them before any training starts.

Every problem is reported with the file, the row (the line in a CSV/JSONL file) and what is
wrong, all problems at once and one line per kind of problem (with how many rows have it and where
the first few are), so a data engineer fixes a file in one pass.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from training.errors import OWN_LABELS_HINT, UserError

logger = logging.getLogger("training")

MAX_REPORTED = 25  # kinds of problem listed; the rest are counted
PLACES_SHOWN = 5  # rows named per kind of problem
DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}


@dataclass(frozen=True)
class Problem:
    """One bad row (or file). Problems with the same `kind` are reported as one line."""

    where: str  # "train.csv line 4" or "train.csv"
    message: str  # what is wrong, e.g. "unknown label 'chat' (allowed: ...)"
    kind: str = ""  # grouping key; default: file + message

    @property
    def key(self) -> str:
        return self.kind or f"{self.where.split(' line ')[0]}\0{self.message}"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class DataValidationError(UserError, ValueError):
    """The training data is unusable; one line per kind of problem, with counts and first places."""

    def __init__(self, problems: Sequence[Problem | str]) -> None:
        self.problems = [p if isinstance(p, Problem) else Problem(where="", message=p, kind=p) for p in problems]
        groups: dict[str, list[Problem]] = {}
        for problem in self.problems:
            groups.setdefault(problem.key, []).append(problem)
        lines = [_group_line(group) for group in list(groups.values())[:MAX_REPORTED]]
        more = len(groups) - len(lines)
        tail = f"\n  ... and {more} more kinds of problem" if more > 0 else ""
        body = "\n".join(f"  - {line}" for line in lines)
        super().__init__(f"training data failed validation ({len(self.problems)} problems):\n{body}{tail}")


def _group_line(group: list[Problem]) -> str:
    first = str(group[0]) if group[0].where else group[0].message
    if len(group) == 1:
        return first
    places = [p.where.split(" line ")[-1] if " line " in p.where else p.where for p in group[1 : 1 + PLACES_SHOWN]]
    more = ", ..." if len(group) > 1 + PLACES_SHOWN else ""
    return f"{first} [{len(group)} rows like this; also lines {', '.join(places)}{more}]"


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


def parse_label_map(value: str | dict | None) -> dict[str, str]:
    """A label map from a flag (inline JSON object or a file holding one) or a JSON config's object."""
    if not value:
        return {}
    if isinstance(value, dict):  # a JSON config file may hold the object itself
        mapping = value
    else:
        text = value
        # An inline object is never a path (and a long one would overflow the file name limit).
        if not text.lstrip().startswith("{") and Path(text).is_file():
            text = Path(text).read_text(encoding="utf-8")
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"--label_map is neither a JSON object nor a file holding one ({exc.msg})") from None
    if not isinstance(mapping, dict):
        raise UserError("--label_map must be a JSON object of raw label -> model label")
    return {str(k): str(v) for k, v in mapping.items()}


def decode_text(source: str, data: bytes, encoding: str) -> str:
    """The file's text; a wrong encoding is named with the line and byte, and what to pass instead."""
    try:
        return data.decode("utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataValidationError(
            [
                Problem(
                    where=f"{source} line {line}",
                    message=f"not valid {encoding} (byte 0x{data[exc.start]:02x}); the file was probably saved "
                    "by Excel or Windows in another encoding: save it as UTF-8, or name its encoding "
                    "with --encoding (e.g. --encoding cp1252)",
                )
            ]
        ) from None
    except LookupError:
        raise UserError(f"--encoding {encoding!r} is not an encoding Python knows") from None


def sniff_delimiter(source: str, text: str, suffix: str) -> tuple[str, str | None]:
    """The delimiter of a CSV/TSV file, and a note when it is not the one its name promises."""
    named = "\t" if suffix == ".tsv" else ","
    header = text.split("\n", 1)[0]
    if named in header:
        return named, None
    found = [d for d in DELIMITERS if d in header]
    if not found:
        return named, None  # one column: the missing-column check names it
    try:
        delimiter = csv.Sniffer().sniff(text[:65536], delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        delimiter = found[0]
    return delimiter, f"{source}: read as {DELIMITERS[delimiter]}-separated (its header has no {DELIMITERS[named]})"


def read_rows(source: str, encoding: str = "utf-8") -> tuple[list[dict], list[str], str]:
    """Rows, their column names and how to name row i ("line N" for files) from any supported source."""
    path = Path(source)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in (".jsonl", ".json", ".csv", ".tsv"):
            raise DataValidationError([Problem(source, f"unsupported file type {suffix!r} (use .csv, .tsv or .jsonl)")])
        text = decode_text(source, path.read_bytes(), encoding)
        if suffix in (".jsonl", ".json"):
            rows = _jsonl_rows(source, text)
            return rows, sorted(_columns_of(rows)), "line"
        delimiter, note = sniff_delimiter(source, text, suffix)
        if note:
            logger.warning(note)
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
        rows = []
        for row in reader:
            row["__line__"] = reader.line_num
            rows.append(row)
        return rows, list(reader.fieldnames or []), "line"
    # A saved `datasets` folder or a hub dataset id; rows are then numbered from 0.
    import datasets

    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
    else:
        try:
            ds = datasets.load_dataset(source)
        except Exception as exc:  # the hub raises many types; the user needs the sentence
            raise DataValidationError(
                [Problem(source, f"not a file, a saved dataset folder, or a reachable hub dataset ({exc})")]
            ) from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    rows = [dict(r, __line__=i) for i, r in enumerate(ds)]
    return rows, list(ds.column_names), "row"


def _jsonl_rows(source: str, text: str) -> list[dict]:
    rows, problems = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(f"{source} line {lineno}", f"not valid JSON ({exc.msg})", kind=f"{source}\0json"))
            continue
        if not isinstance(row, dict):
            problems.append(Problem(f"{source} line {lineno}", "expected a JSON object", kind=f"{source}\0object"))
            continue
        row["__line__"] = lineno
        rows.append(row)
    if problems:
        raise DataValidationError(problems)
    return rows


def _columns_of(rows: list[dict]) -> set[str]:
    return {k for r in rows for k in r if k != "__line__"}


def raw_labels(sources: Sequence[str], label_column: str, encoding: str = "utf-8") -> Counter:
    """How often each raw label occurs in the sources (used to choose the labels of a mapped model)."""
    counts: Counter = Counter()
    for source in sources:
        rows, _, _ = read_rows(source, encoding)
        values = (r.get(label_column) for r in rows)
        counts.update(str(v).strip() for v in values if v is not None and str(v).strip())
    return counts


def load_split(
    name: str,
    sources: Sequence[str],
    text_column: str,
    label_column: str,
    labels: Sequence[str],
    label_map: dict[str, str],
    encoding: str = "utf-8",
) -> Split:
    """Read one split from one or more sources, collecting every row-level problem."""
    split = Split(name=name, source=", ".join(sources))
    problems: list[Problem] = []
    allowed = set(labels)
    for source in sources:
        rows, columns, unit = read_rows(source, encoding)
        missing = [c for c in (text_column, label_column) if c not in columns]
        if missing:
            problems.append(
                Problem(
                    source,
                    f"missing column(s) {missing}; found {columns}. "
                    "Set --text_column / --label_column to the right names.",
                )
            )
            continue
        if not rows:
            problems.append(Problem(source, "no rows"))
            continue
        for row in rows:
            where = f"{source} {unit} {row['__line__']}"
            text = row.get(text_column)
            raw_label = row.get(label_column)
            if text is None or not str(text).strip():
                problems.append(Problem(where, "empty text"))
                continue
            if raw_label is None or str(raw_label).strip() == "":
                problems.append(Problem(where, "empty label"))
                continue
            label = label_map.get(str(raw_label).strip(), str(raw_label).strip())
            if label not in allowed:
                mapped = f" (mapped to {label!r})" if label != str(raw_label).strip() else ""
                problems.append(
                    Problem(
                        where,
                        f"unknown label {raw_label!r}{mapped} (the model's labels: {', '.join(labels)}; map raw "
                        f"labels with --label_map or name your own with --labels: {OWN_LABELS_HINT})",
                    )
                )
                continue
            split.examples.append(Example(text=str(text), label=label, where=where))
    if problems:
        raise DataValidationError(problems)
    return split


def check_splits(splits: Sequence[Split], labels: Sequence[str]) -> None:
    """Every class present in every split, and no evaluation text also in training."""
    problems: list[Problem] = []
    for split in splits:
        counts = Counter(split.labels)
        for label in labels:
            if counts[label] == 0:
                problems.append(
                    Problem(
                        f"{split.source} ({split.name})",
                        f"class {label!r} has no examples (the model's labels are {', '.join(labels)}; if your "
                        f"data has other classes, name them with --labels: {OWN_LABELS_HINT})",
                    )
                )
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
                problems.append(
                    Problem(
                        f"{example.where} ({split.name})",
                        f"text also in training data at {seen[key]} (leakage)",
                        kind=f"{split.source}\0leakage",
                    )
                )
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
        rare = sorted(label for label, n in counts.items() if n < 2)
        # Advice that can work: a class with one distinct text cannot be on both sides at any share.
        if rare:
            advice = f"classes {rare} need at least 2 distinct texts each: add rows of them or pass --validation_file"
        else:
            advice = f"raise --validation_split to hold out at least {len(counts)} texts, or pass --validation_file"
        raise DataValidationError(
            [
                Problem(
                    split.source,
                    f"cannot hold out {share:.0%} for validation with every class on both sides "
                    f"(distinct texts per class: {counts}; {exc}). {advice}",
                )
            ]
        ) from None
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
