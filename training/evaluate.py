"""`python -m training evaluate`: score a labelled file with a model folder, as the service would."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser

from service.model.loading import load_backend, predict
from training.data import load_split
from training.metrics import evaluate_probabilities, save_plots, summary_line

logger = logging.getLogger("training")


@dataclass
class EvaluateArguments:
    model: str = field(metadata={"help": "Model folder to evaluate."})
    data: str = field(metadata={"help": "Labelled CSV, JSONL, dataset folder or hub dataset id."})
    output: str = field(default="runs/evaluate", metadata={"help": "Folder for metrics.json and the plots."})
    text_column: str = field(default="text", metadata={"help": "Column holding the message text."})
    label_column: str = field(default="label", metadata={"help": "Column holding the label."})
    label_map: str | None = field(default=None, metadata={"help": "JSON raw label -> model label (inline or file)."})
    backend: str = field(default="torch", metadata={"help": "torch or onnx: the service's backends."})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda."})
    batch_size: int = field(default=32, metadata={"help": "Messages per forward."})


def evaluate_folder(args: EvaluateArguments) -> dict[str, Any]:
    from training.arguments import DataArguments

    backend = load_backend(args.model, kind=args.backend, device=args.device)
    mapping = DataArguments(train_file=["-"], label_map=args.label_map).parsed_label_map()
    split = load_split(
        "evaluation",
        [args.data],
        args.text_column,
        args.label_column,
        backend.sidecar.labels,
        mapping,
    )
    probs, truncated = predict(backend, split.texts, max_batch_size=args.batch_size, progress=True)
    figures = evaluate_probabilities(probs, split.labels, backend.sidecar)
    figures["model"] = {
        "name": backend.sidecar.name,
        "version": backend.sidecar.version,
        "folder": args.model,
    }
    figures["data"] = args.data
    figures["truncated"] = int(sum(truncated))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    save_plots(probs, split.labels, backend.sidecar, out, title=f"({Path(args.data).name})")
    return figures


def report(figures: dict[str, Any]) -> str:
    lines = [
        summary_line("evaluation", figures),
        "",
        f"{'label':<12} {'prec':>6} {'recall':>6} {'f1':>6} {'n':>6}",
    ]
    for label, row in figures["per_class"].items():
        lines.append(f"{label:<12} {row['precision']:6.3f} {row['recall']:6.3f} {row['f1']:6.3f} {row['support']:6d}")
    cm = figures["confusion_matrix"]
    lines += ["", "confusion (rows true, columns predicted): " + " ".join(cm["labels"])]
    lines += [
        f"{label:<12} " + " ".join(f"{c:6d}" for c in row)
        for label, row in zip(cm["labels"], cm["matrix"], strict=True)
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    (args,) = HfArgumentParser(EvaluateArguments).parse_args_into_dataclasses(args=argv)
    figures = evaluate_folder(args)
    print(report(figures))
    print(f"\nwrote {Path(args.output) / 'metrics.json'}")
    return 0
