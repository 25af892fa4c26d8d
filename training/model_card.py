"""The model card (README.md) of a model folder: a typed record rendered through a template file.

As setfit does: the figures are gathered into a dataclass (`ModelCardRecord`), and
`model_card_template.md` (Jinja, through huggingface_hub's ModelCard) lays them out, so the card's
wording changes in the template and its content in one function.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from service.model.folder import Sidecar
from service.model.heads import POOLED_LAYERS
from service.model.scoring import THRESHOLDS

TEMPLATE = Path(__file__).with_name("model_card_template.md")


@dataclass
class ModelCardRecord:
    name: str
    version: str
    folder: str  # the path the user gave (--output_dir), for the card's commands
    base_model: str
    max_length: int
    labels: list[str]
    validity_labels: list[str]
    spam_labels: list[str]
    label_map: dict[str, str]
    fingerprint: str
    rows: dict[str, int]
    sources: dict[str, str]
    epochs: float
    learning_rate: float
    batch_size: int
    seed: int
    class_weighting: bool
    libraries: dict[str, str]
    sets: list[str]
    figure_rows: list[list[str]]
    rejected_name: str
    threshold_rows: list[list[str]]
    calibration_text: str
    precision_text: str
    baseline_sets: list[str] = field(default_factory=list)
    baseline_rows: list[list[str]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    seed_count: int = 0
    seed_spread_rows: list[list[str]] = field(default_factory=list)
    # --method frozen_heads: the share of the TF-IDF head (None: a fine-tuned sequence classifier)
    text_head_weight: float | None = None
    text_prefix: str = ""
    pooled_layers: list[int | str] = field(default_factory=list)  # frozen_heads: the hidden states its head reads


def _in_own_words(key: str, validity_labels: list[str]) -> str:
    """A metrics key such as `aduan_rejected_rate` as the card shows it: with the model's validity labels."""
    return key.replace("aduan", "+".join(validity_labels))


def rejected_name(validity_labels: list[str]) -> str:
    """How cards and logs name the reject-band share of genuine messages, in the model's own labels."""
    return f"{'+'.join(validity_labels)} rejected"


def _figure_rows(metrics: dict[str, Any], sets: list[str], labels: list[str], rejected: str) -> list[list[str]]:
    rows = [["macro-F1", *(f"{metrics[s]['macro_f1']:.3f}" for s in sets)]]
    for label in labels:
        rows.append(
            [
                f"F1 `{label}`",
                *(
                    f"{metrics[s]['per_class'][label]['f1']:.3f}" if metrics[s]["per_class"][label]["support"] else "-"
                    for s in sets
                ),
            ]
        )
    for title, key, fmt in (
        ("accept precision", "accept_precision", "{:.3f}"),
        (rejected, "aduan_rejected_rate", "{:.2%}"),
        ("review rate", "review_rate", "{:.1%}"),
    ):
        rows.append([title, *(fmt.format(metrics[s]["decision_band"][key]) for s in sets)])
    rows.append(["rows", *(str(metrics[s]["n"]) for s in sets)])
    return rows


def _precision_text(sidecar: Sidecar) -> str:
    gate = sidecar.precision.get("bf16")
    if not gate:
        return "bf16 was not checked: the service serves this folder in fp32 on CPU."
    sets = ", ".join(
        f"{name} {s['macro_f1_fp32']:.3f} -> {s['macro_f1_bf16']:.3f} ({s['same_top_label']:.1%} same label)"
        for name, s in gate["sets"].items()
    )
    verdict = (
        "passed: `SARING_DTYPE=auto` serves bf16 on CPUs with native bf16 (AVX-512-BF16, AMX), fp32 elsewhere"
        if gate["accepted"]
        else f"failed (a macro-F1 drop above {gate['max_f1_drop']}): the service serves fp32 on CPU"
    )
    return f"bf16 accuracy gate {verdict}. Macro-F1 fp32 -> bf16: {sets}."


def _calibration_text(sidecar: Sidecar) -> str:
    c = sidecar.calibration
    if c.get("method") != "temperature":
        return "No temperature scaling."
    held_out = (
        f"held-out NLL {c['held_out_nll_before']:.3f} -> {c['held_out_nll_after']:.3f}"
        if "held_out_nll_after" in c
        else "too few rows to check on held-out halves"
    )
    if c.get("folded_into_head"):
        return (
            f"Temperature scaling, T = {c['temperature']:.3f}, fitted on validation data and folded into the "
            f"classification head ({held_out}; ECE {c['ece_before']:.3f} -> {c['ece_after']:.3f})."
        )
    return (
        f"A temperature (T = {c['temperature']:.3f}) was fitted on validation data but not folded into the head: "
        f"it did not lower the NLL of validation rows it was not fitted on ({held_out})."
    )


def _seed_spread_rows(spread: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, values in spread.get("macro_f1", {}).items():
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append([name, *(f"{v:.3f}" for v in (statistics.fmean(values), std, min(values), max(values)))])
    return rows


def card_record(sidecar: Sidecar, metrics: dict[str, Any], training_args: Any, folder: str) -> ModelCardRecord:
    """Everything the card shows, from the sidecar, metrics.json and the run's arguments."""
    sets = metrics.get("evaluated") or [name for name in ("validation", "test") if name in metrics]
    rejected = rejected_name(sidecar.scores["validity"])
    thresholds = []
    for name in THRESHOLDS:
        threshold = getattr(sidecar, name)
        figures = ((_in_own_words(k, sidecar.scores["validity"]), v) for k, v in threshold.achieved.items())
        achieved = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures)
        thresholds.append([name, f"{threshold.value:.4f}", threshold.objective, achieved])
    data = sidecar.training_data
    spread = metrics.get("seed_spread", {})
    baseline = metrics.get("baseline", {})
    return ModelCardRecord(
        name=sidecar.name,
        version=sidecar.version,
        folder=folder,
        base_model=sidecar.base_model,
        max_length=sidecar.max_length,
        labels=list(sidecar.labels),
        validity_labels=list(sidecar.scores["validity"]),
        spam_labels=list(sidecar.scores["spam"]),
        label_map=dict(sidecar.label_map),
        fingerprint=data.get("fingerprint", ""),
        rows=data.get("rows", {}),
        sources=data.get("sources", {}),
        epochs=training_args.num_train_epochs,
        learning_rate=training_args.learning_rate,
        batch_size=training_args.per_device_train_batch_size,
        seed=training_args.seed,
        class_weighting=bool(getattr(training_args, "class_weighting", False)),
        libraries=dict(sidecar.libraries),
        sets=sets,
        figure_rows=_figure_rows(metrics, sets, sidecar.labels, rejected),
        rejected_name=rejected,
        threshold_rows=thresholds,
        calibration_text=_calibration_text(sidecar),
        precision_text=_precision_text(sidecar),
        baseline_sets=list(baseline),
        baseline_rows=[
            ["this model", *(f"{metrics[n]['macro_f1']:.3f}" for n in baseline)],
            ["TF-IDF + LR", *(f"{baseline[n]['macro_f1']:.3f}" for n in baseline)],
        ]
        if baseline
        else [],
        seeds=list(spread.get("seeds", [])),
        seed_count=len(spread.get("seeds", [])),
        seed_spread_rows=_seed_spread_rows(spread),
        text_head_weight=sidecar.heads.get("text_head", {}).get("weight", 0.0) if sidecar.heads else None,
        text_prefix=sidecar.text_prefix,
        pooled_layers=list(sidecar.heads.get(POOLED_LAYERS) or ["last"]) if sidecar.heads else [],
    )


def render_model_card(record: ModelCardRecord) -> str:
    card_data = ModelCardData(
        language="id",
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=["saring", "complaint-moderation"],
        base_model=record.base_model,
    )
    return str(ModelCard.from_template(card_data, template_path=str(TEMPLATE), **asdict(record)))


def write_model_card(folder: Path, record: ModelCardRecord) -> None:
    (folder / "README.md").write_text(render_model_card(record) + "\n", encoding="utf-8")
