"""The model card (README.md) of a model folder, generated from the run's own figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.model.folder import Sidecar
from service.model.scoring import THRESHOLDS


def _baseline_table(metrics: dict[str, Any]) -> str:
    if "baseline" not in metrics:
        return ""
    names = list(metrics["baseline"])
    rows = [
        "\n## Against the TF-IDF + logistic regression baseline",
        "Same training split, same figures (macro-F1 over the labels each set contains).\n",
        "| model | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        "| this model | " + " | ".join(f"{metrics[n]['macro_f1']:.3f}" for n in names) + " |",
        "| TF-IDF + LR | " + " | ".join(f"{metrics['baseline'][n]['macro_f1']:.3f}" for n in names) + " |",
    ]
    return "\n".join(rows) + "\n"


def _figures_table(metrics: dict[str, Any], labels: list[str]) -> str:
    splits = metrics.get("evaluated") or [name for name in ("validation", "test") if name in metrics]
    rows = ["| figure | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    rows.append("| macro-F1 | " + " | ".join(f"{metrics[s]['macro_f1']:.3f}" for s in splits) + " |")
    for label in labels:
        rows.append(
            f"| F1 `{label}` | "
            + " | ".join(
                f"{metrics[s]['per_class'][label]['f1']:.3f}" if metrics[s]["per_class"][label]["support"] else "-"
                for s in splits
            )
            + " |"
        )
    for key, fmt in (
        ("accept_precision", "{:.3f}"),
        ("aduan_rejected_rate", "{:.2%}"),
        ("review_rate", "{:.1%}"),
    ):
        rows.append(f"| {key} | " + " | ".join(fmt.format(metrics[s]["decision_band"][key]) for s in splits) + " |")
    rows.append("| rows | " + " | ".join(str(metrics[s]["n"]) for s in splits) + " |")
    return "\n".join(rows)


def write_model_card(folder: Path, sidecar: Sidecar, metrics: dict[str, Any], training_args: Any) -> None:
    thresholds = "\n".join(
        f"| {name} | {getattr(sidecar, name).value:.4f} | {getattr(sidecar, name).objective} | "
        + ", ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in getattr(sidecar, name).achieved.items()
        )
        + " |"
        for name in THRESHOLDS
    )
    data = sidecar.training_data
    calibration = sidecar.calibration
    calib_text = (
        f"Temperature scaling, T = {sidecar.temperature:.3f}, fitted on validation data and folded into the "
        f"classification head (validation NLL {calibration.get('nll_before', 0):.3f} -> "
        f"{calibration.get('nll_after', 0):.3f}, ECE {calibration.get('ece_before', 0):.3f} -> "
        f"{calibration.get('ece_after', 0):.3f})."
        if calibration.get("method") == "temperature"
        else "No temperature scaling."
    )
    card = f"""---
language: id
library_name: transformers
pipeline_tag: text-classification
tags: [saring, complaint-moderation, indonesian]
base_model: {sidecar.base_model}
---

# {sidecar.name} ({sidecar.version})

A saring message classifier for Indonesian public complaint channels. It sorts each incoming message
into {", ".join(f"`{x}`" for x in sidecar.labels)} and gives two scores:
`validity` = P({" + ".join(sidecar.scores["validity"])}) and `spam` = P({" + ".join(sidecar.scores["spam"])}).

## Intended use
Triage for a complaint desk: `accept` opens a case, `review` goes to a person, `reject` is not a
complaint. Not for deciding on its own that a citizen's report is false: text cannot prove that.

## Training
- Base model: `{sidecar.base_model}`; max length {sidecar.max_length} tokens.
- Data fingerprint `{data.get("fingerprint", "")}`; rows {data.get("rows", {})}.
- Sources: {data.get("sources", {})}.
- Epochs {training_args.num_train_epochs}, learning rate {training_args.learning_rate},
  batch {training_args.per_device_train_batch_size}, seed {training_args.seed},
  class weighting {getattr(training_args, "class_weighting", False)}.

## Figures
{_figures_table(metrics, sidecar.labels)}

`aduan_rejected_rate` is the share of genuine complaints that land in the reject band; "-" marks a
class the set does not contain.
{_baseline_table(metrics)}
## Decision band
| threshold | value | chosen for | validation figures at that value |
|---|---|---|---|
{thresholds}

{calib_text}

## Limits
- Figures above are measured on the validation and test files named here; messages unlike them
  (other channels, registers, topics) will score worse. Re-measure on your own traffic with
  `python -m training evaluate` before trusting the thresholds.
- Text alone cannot prove a report false: a serious-looking false report is scored as `aduan`.

## Use
```python
from transformers import pipeline
clf = pipeline("text-classification", model="models/{sidecar.name}", top_k=None)
clf("jalan di desa kami rusak parah mohon diperbaiki")
```
"""
    (folder / "README.md").write_text(card, encoding="utf-8")
