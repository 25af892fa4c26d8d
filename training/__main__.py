"""Entry point: `python -m training <command> [flags | config.json]`."""

from __future__ import annotations

import sys

COMMANDS = {
    "train": "fine-tune a base model on labelled messages and write a model folder",
    "evaluate": "score a labelled file with a model folder and write metrics.json and plots",
    "augment": "add seeded slang/typo/casing variants to written training messages",
    "real-eval-set": "draw a labelled evaluation set from the public data in ../shared/datasets",
    "export": "write ONNX models (fp32, checked int8) into a model folder for the CPU fast path",
    "export-feedback": "write the desk's verdicts (POST /v1/feedback) as a training file",
    "compare": "score one labelled file with two model folders: figures side by side, decision moves",
    "score": "score a backlog (CSV/TSV/JSONL/Parquet) as /v1/score would: local or Ray Data, resumable",
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
    elif command == "export":
        from training.export import main as run
    elif command == "export-feedback":
        from training.export_feedback import main as run
    elif command == "compare":
        from training.compare import main as run
    elif command == "score":
        from training.score import main as run
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
