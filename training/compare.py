"""`python -m training compare --models A B --data FILE`: should B replace A?

Both folders score the same labelled file through the service's own inference code; the figures
are the ones `evaluate` reports (macro-F1, the decision band), side by side, plus how the decision
band moves from A to B: a transition matrix of accept/review/reject and, separately, the messages
that jump straight from accept to reject and back, the changes a desk notices first.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser

from service.model.loading import predict
from service.model.scoring import ACCEPT, DECISIONS, REJECT, decide, score_columns
from training.arguments import BackendArguments, LabelledDataArguments
from training.errors import UserError
from training.evaluate import load_labelled, load_model_backend
from training.metrics import evaluate_probabilities

logger = logging.getLogger("training")


@dataclass
class CompareArguments:
    models: list[str] = field(metadata={"help": "Two model folders: the current one (A), then the candidate (B)."})
    data: str = field(metadata={"help": "Labelled CSV, JSONL, dataset folder or hub dataset id, scored by both."})
    output: str = field(default="runs/compare", metadata={"help": "Folder for compare.json."})


def transitions(before: list[str], after: list[str]) -> dict[str, dict[str, int]]:
    """matrix[a][b]: messages decided `a` by model A and `b` by model B."""
    matrix = {a: dict.fromkeys(DECISIONS, 0) for a in DECISIONS}
    for a, b in zip(before, after, strict=True):
        matrix[a][b] += 1
    return matrix


def score_folder(
    args: CompareArguments, folder: str, columns: LabelledDataArguments, scoring: BackendArguments
) -> dict[str, Any]:
    backend = load_model_backend(folder, scoring)
    sidecar = backend.sidecar
    split = load_labelled("evaluation", args.data, sidecar, columns)  # each folder with its own label map
    probs, _ = predict(backend, split.texts, max_batch_size=scoring.batch_size)
    figures = evaluate_probabilities(probs, split.labels, sidecar)
    validity = score_columns(probs, sidecar.labels, sidecar.scores)["validity"]
    return {
        "model": {"name": sidecar.name, "version": sidecar.version, "folder": folder},
        "thresholds": {"accept": sidecar.accept.value, "reject": sidecar.reject.value, "spam": sidecar.spam.value},
        "figures": figures,
        "decisions": decide(validity, sidecar.accept.value, sidecar.reject.value).tolist(),
        "labels": split.labels,
        "is_aduan": [label in sidecar.scores["validity"] for label in split.labels],
        "validity_labels": sidecar.scores["validity"],
    }


def compare(
    args: CompareArguments, columns: LabelledDataArguments | None = None, scoring: BackendArguments | None = None
) -> dict[str, Any]:
    columns, scoring = columns or LabelledDataArguments(), scoring or BackendArguments()
    if len(args.models) != 2:
        raise UserError(f"--models takes two folders (current, candidate); got {len(args.models)}")
    a, b = (score_folder(args, folder, columns, scoring) for folder in args.models)
    if a["labels"] != b["labels"]:
        raise UserError(
            f"{args.data} reads differently for the two folders (their labels or label maps differ); "
            "compare folders trained on the same labels"
        )
    matrix = transitions(a["decisions"], b["decisions"])
    changed = [i for i, (x, y) in enumerate(zip(a["decisions"], b["decisions"], strict=True)) if x != y]
    genuine = a["is_aduan"]
    return {
        "data": args.data,
        "n": len(a["decisions"]),
        "validity_labels": a["validity_labels"],
        "models": {
            side: {
                "model": s["model"],
                "thresholds": s["thresholds"],
                "macro_f1": s["figures"]["macro_f1"],
                "accuracy": s["figures"]["accuracy"],
                "decision_band": s["figures"]["decision_band"],
                "spam_flag": s["figures"]["spam_flag"],
                "per_class_f1": {k: v["f1"] for k, v in s["figures"]["per_class"].items()},
            }
            for side, s in (("A", a), ("B", b))
        },
        "transitions": matrix,
        "changed": len(changed),
        "accept_to_reject": matrix[ACCEPT][REJECT],
        "reject_to_accept": matrix[REJECT][ACCEPT],
        # The costly moves for a desk: genuine complaints B would now reject, and ones it would now accept.
        "aduan_newly_rejected": sum(1 for i in changed if genuine[i] and b["decisions"][i] == REJECT),
        "aduan_newly_accepted": sum(1 for i in changed if genuine[i] and b["decisions"][i] == ACCEPT),
    }


def report(result: dict[str, Any]) -> str:
    a, b = result["models"]["A"], result["models"]["B"]
    rows = [
        ("macro-F1", a["macro_f1"], b["macro_f1"], "{:.3f}"),
        ("accuracy", a["accuracy"], b["accuracy"], "{:.3f}"),
        ("accept precision", a["decision_band"]["accept_precision"], b["decision_band"]["accept_precision"], "{:.3f}"),
        ("accept recall", a["decision_band"]["accept_recall"], b["decision_band"]["accept_recall"], "{:.3f}"),
        (
            f"{'+'.join(result['validity_labels'])} rejected",
            a["decision_band"]["aduan_rejected_rate"],
            b["decision_band"]["aduan_rejected_rate"],
            "{:.2%}",
        ),
        ("accept rate", a["decision_band"]["accept_rate"], b["decision_band"]["accept_rate"], "{:.1%}"),
        ("review rate", a["decision_band"]["review_rate"], b["decision_band"]["review_rate"], "{:.1%}"),
        ("reject rate", a["decision_band"]["reject_rate"], b["decision_band"]["reject_rate"], "{:.1%}"),
        ("spam flag precision", a["spam_flag"]["precision"], b["spam_flag"]["precision"], "{:.3f}"),
        ("spam flag recall", a["spam_flag"]["recall"], b["spam_flag"]["recall"], "{:.3f}"),
        ("accept threshold", a["thresholds"]["accept"], b["thresholds"]["accept"], "{:.4f}"),
        ("reject threshold", a["thresholds"]["reject"], b["thresholds"]["reject"], "{:.4f}"),
    ]
    lines = [
        f"A: {a['model']['folder']} ({a['model']['version']})",
        f"B: {b['model']['folder']} ({b['model']['version']})",
        f"data: {result['data']} (n={result['n']})",
        "",
        f"{'':<20} {'A':>10} {'B':>10} {'B - A':>10}",
    ]
    for label, x, y, fmt in rows:
        lines.append(f"{label:<20} {fmt.format(x):>10} {fmt.format(y):>10} {fmt.format(y - x):>10}")
    lines += ["", "decisions (rows: A, columns: B)", f"{'':<10}" + "".join(f"{d:>9}" for d in DECISIONS)]
    for d in DECISIONS:
        lines.append(f"{d:<10}" + "".join(f"{result['transitions'][d][e]:>9d}" for e in DECISIONS))
    lines += [
        "",
        f"changed decisions: {result['changed']} of {result['n']}",
        f"accept -> reject: {result['accept_to_reject']}    reject -> accept: {result['reject_to_accept']}",
        f"{'+'.join(result['validity_labels'])} newly rejected: {result['aduan_newly_rejected']}    "
        f"newly accepted: {result['aduan_newly_accepted']}",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = HfArgumentParser((CompareArguments, LabelledDataArguments, BackendArguments))
    args, columns, scoring = parser.parse_args_into_dataclasses(args=argv)
    result = compare(args, columns, scoring)
    print(report(result))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out / 'compare.json'}")
    return 0
