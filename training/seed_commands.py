"""Small data commands: `augment` (noise on written seed data), `real-eval-set` (public data) and
`writer-splits` (the written corpus split by writer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser


@dataclass
class AugmentArguments:
    input: str = field(metadata={"help": "JSONL of written messages (text, label, ...)."})
    output: str = field(metadata={"help": "JSONL to write: every input row plus its variants."})
    per_message: int = field(default=1, metadata={"help": "Variants per written message."})
    seed: int = field(default=13, metadata={"help": "Seed: the same seed gives the same file."})
    validation_output: str | None = field(
        default=None, metadata={"help": "Also hold out written rows, unaugmented, as a validation file here."}
    )
    validation_share: float = field(default=0.15, metadata={"help": "Share of written rows held out."})


@dataclass
class RealSetArguments:
    datasets: str = field(default="../shared/datasets", metadata={"help": "Folder of the public data sets."})
    output: str = field(default="build/real_mixed.jsonl", metadata={"help": "JSONL to write (keep it out of git)."})
    per_source: int = field(default=150, metadata={"help": "Rows per source (complaints get twice as many)."})
    seed: int = field(default=7, metadata={"help": "Sampling seed."})


@dataclass
class WriterSplitArguments:
    output_dir: str = field(default="build/data", metadata={"help": "Folder for train/validation/independent.jsonl."})
    validation_writers: list[str] = field(
        default_factory=lambda: ["w03", "w06"],
        metadata={"help": "Writers held out of training to choose thresholds (data/README.md)."},
    )


def writer_splits_main(argv: list[str]) -> int:
    from collections import Counter

    from training.writers import read_jsonl, write_default_splits

    (args,) = HfArgumentParser(WriterSplitArguments).parse_args_into_dataclasses(args=argv)
    for path in write_default_splits(args.output_dir, tuple(args.validation_writers)).values():
        rows = read_jsonl(path)
        print(f"wrote {path}: {len(rows)} rows from writers {dict(Counter(r.get('writer') for r in rows))}")
    return 0


def augment_main(argv: list[str]) -> int:
    from training.augment import augment_file

    (args,) = HfArgumentParser(AugmentArguments).parse_args_into_dataclasses(args=argv)
    validation = Path(args.validation_output) if args.validation_output else None
    counts = augment_file(
        Path(args.input), Path(args.output), args.per_message, args.seed, validation, args.validation_share
    )
    print(f"wrote {args.output}: {counts['written']} written + {counts['augmented']} augmented rows")
    if validation:
        print(f"wrote {validation}: {counts['validation']} written rows held out for validation")
    return 0


def real_set_main(argv: list[str]) -> int:
    from collections import Counter

    from training.real_data import build_real_set, write_real_set

    (args,) = HfArgumentParser(RealSetArguments).parse_args_into_dataclasses(args=argv)
    out = write_real_set(args.datasets, args.output, args.per_source, args.seed)
    counts = Counter(r["source"] for r in build_real_set(args.datasets, args.per_source, args.seed))
    print(f"wrote {out}: {dict(counts)}")
    return 0
