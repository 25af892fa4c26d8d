"""`python -m training evaluate`: score a labelled file with a model folder, as the service would."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser

from service.model.folder import ModelFolderError, Sidecar
from service.model.loading import load_backend, predict
from training.arguments import BackendArguments, LabelledDataArguments
from training.data import Split, load_split
from training.errors import UserError
from training.metrics import evaluate_probabilities, save_plots, summary_line

logger = logging.getLogger("training")


@dataclass
class EvaluateArguments:
    model: str = field(metadata={"help": "Model folder to evaluate."})
    data: str = field(metadata={"help": "Labelled CSV, TSV, JSONL, dataset folder or hub dataset id."})
    output: str = field(default="runs/evaluate", metadata={"help": "Folder for metrics.json and the plots."})


def load_labelled(name: str, path: str, sidecar: Sidecar, columns: LabelledDataArguments) -> Split:
    """A labelled file in the folder's labels: its recorded label map first, then --label_map on top."""
    mapping = {**sidecar.label_map, **columns.parsed_label_map()}
    return load_split(
        name, [path], columns.text_column, columns.label_column, sidecar.labels, mapping, columns.encoding
    )


def evaluate_folder(
    args: EvaluateArguments, columns: LabelledDataArguments | None = None, scoring: BackendArguments | None = None
) -> dict[str, Any]:
    columns, scoring = columns or LabelledDataArguments(), scoring or BackendArguments()
    backend = load_model_backend(args.model, scoring)
    split = load_labelled("evaluation", args.data, backend.sidecar, columns)
    probs, truncated = predict(backend, split.texts, max_batch_size=scoring.batch_size, progress=True)
    figures = evaluate_probabilities(probs, split.labels, backend.sidecar)
    figures["model"] = {
        "name": backend.sidecar.name,
        "version": backend.sidecar.version,
        "folder": args.model,
    }
    figures["data"] = args.data
    figures["scores"] = backend.sidecar.scores
    figures["truncated"] = int(sum(truncated))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    save_plots(probs, split.labels, backend.sidecar, out, title=f"({Path(args.data).name})")
    return figures


def load_model_backend(folder: str, scoring: BackendArguments):
    """The service's backend for a folder; a folder the service would refuse is the user's error."""
    try:
        return load_backend(folder, kind=scoring.backend, device=scoring.device)
    except ModelFolderError as exc:
        raise UserError(str(exc)) from None


def report(figures: dict[str, Any], validity_labels: list[str]) -> str:
    lines = [
        summary_line("evaluation", figures, validity_labels),
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
    parser = HfArgumentParser((EvaluateArguments, LabelledDataArguments, BackendArguments))
    args, columns, scoring = parser.parse_args_into_dataclasses(args=argv)
    figures = evaluate_folder(args, columns, scoring)
    print(report(figures, figures["scores"]["validity"]))
    print(f"\nwrote {Path(args.output) / 'metrics.json'}")
    return 0
