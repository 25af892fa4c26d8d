"""After training, on the main process: build the model folder in named steps, atomically.

    stage_weights -> calibrate_head -> choose_thresholds -> stamp -> evaluate_sets -> check_sanity
    -> (seed spread) -> add_baseline -> write_reports -> seal

Every step works in the staging folder of `atomic_folder`; until `seal` writes the real checksum
the sidecar's checksum is a sentinel that matches no weights, so a run killed anywhere in here
leaves a staging folder the service refuses, and a failed step leaves the previous folder as it was.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, Trainer

from service.model.folder import SIDECAR_NAME, Sidecar, Threshold, sha256_file, write_sidecar
from service.model.loading import predict
from service.model.scoring import THRESHOLDS, score_columns
from training.arguments import CalibrationArguments, DataArguments, ModelArguments, SaringTrainingArguments
from training.atomic import atomic_folder
from training.baseline import baseline_figures, train_baseline
from training.calibration import calibrate, fold_temperature, precision_threshold, reject_threshold
from training.data import Split, fingerprint
from training.errors import UserError
from training.metrics import evaluate_probabilities, save_plots, summary_line
from training.model_card import card_record, write_model_card

logger = logging.getLogger("training")

UNFINISHED = "unfinished: training was interrupted before this folder was complete"
# Recorded in the sidecar and the card: what a rerun needs to reproduce the figures.
LIBRARIES = ("torch", "transformers", "tokenizers", "accelerate", "datasets", "scikit-learn", "numpy", "saring")
# A run is useless when its validation macro-F1 is within this of chance (1 / number of labels).
NEAR_CHANCE_MARGIN = 0.1


class WeakModelError(UserError):
    """The trained model is no better than chance on validation data; nothing was written."""


@dataclass
class Run:
    """What the steps share: the finished trainer, the data, the arguments and where the folder goes."""

    trainer: Trainer
    tokenizer: Any
    splits: dict[str, Split]
    extra: list[Split]
    train_metrics: dict[str, float]
    model_args: ModelArguments
    data_args: DataArguments
    calib_args: CalibrationArguments
    training_args: SaringTrainingArguments
    final_dir: Path
    shown_dir: str  # --output_dir as the user wrote it (the card's commands use it)
    # --seed_spread: given this run's metrics, trains the same command from more seeds and returns
    # {"seeds": [...], "macro_f1": {set: [...]}}, this run first.
    measure_seed_spread: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # --method frozen_heads: the fitted heads (training/frozen.py) take the place of the trainer's weights.
    frozen: Any = None
    # Probabilities per set from the staged folder once its weights are final (after calibrate_head):
    # thresholds, figures and plots read the same scores, computed once.
    scored: dict[str, np.ndarray] = field(default_factory=dict)
    scorer: Any = None  # the staged folder's backend that computed them

    @property
    def labels(self) -> list[str]:
        return list(self.data_args.labels)

    @property
    def device(self) -> str:
        return "cpu" if self.training_args.use_cpu or not torch.cuda.is_available() else "cuda"

    def label_ids(self, split: Split) -> np.ndarray:
        index = {label: i for i, label in enumerate(self.labels)}
        return np.array([index[y] for y in split.labels])


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def backend_of(run: Run, staging: Path):
    from service.model.torch_backend import TorchBackend

    # Weights unverified: the sidecar holds the sentinel checksum until `seal`.
    return TorchBackend(staging, device=run.device, verify_weights=False, dtype="fp32")


def probabilities(run: Run, staging: Path, split: Split) -> np.ndarray:
    """The staged folder's probabilities for a set, scored once through the service's backend."""
    if split.name not in run.scored:
        run.scorer = run.scorer or backend_of(run, staging)
        run.scored[split.name], _ = predict(run.scorer, split.texts)
    return run.scored[split.name]


def stage_weights(run: Run, staging: Path) -> Sidecar:
    """The trained weights, tokenizer and a sidecar that no reader accepts yet."""
    heads: dict[str, Any] = {}
    if run.frozen is not None:
        from training.frozen import stage_heads

        heads = stage_heads(run.frozen, staging, run.labels)
    else:
        run.trainer.save_model(str(staging))
        run.tokenizer.save_pretrained(staging)
    placeholder = Threshold(value=0.5, objective="placeholder", target=0.0)
    sidecar = Sidecar(
        name=run.model_args.model_name or run.final_dir.name,
        version="",
        base_model=run.model_args.model_name_or_path,
        max_length=run.data_args.max_length,
        labels=run.labels,
        scores={"validity": list(run.data_args.validity_labels), "spam": list(run.data_args.spam_labels)},
        temperature=1.0,
        accept=placeholder,
        reject=placeholder,
        spam=placeholder,
        weights_sha256=UNFINISHED,
        label_map=run.data_args.parsed_label_map(),
        libraries=library_versions(),
        heads=heads,
        text_prefix=run.model_args.text_prefix,
    )
    write_sidecar(staging, sidecar)
    return sidecar


def calibrate_head(run: Run, staging: Path, sidecar: Sidecar) -> dict[str, Any]:
    """Fit a temperature on validation logits; fold it into the head only when it helps held-out rows."""
    if not run.calib_args.calibrate_temperature:
        return {"method": "none", "temperature": 1.0}
    if run.frozen is not None:  # logistic-regression heads: the mixed probabilities have no single head to fold into
        return {"method": "none", "temperature": 1.0, "reason": "frozen_heads: logistic-regression heads"}
    backend = backend_of(run, staging)
    logits, _ = predict(backend, run.splits["validation"].texts, forward=backend.logits)
    calibration = calibrate(logits, run.label_ids(run.splits["validation"]))
    if calibration["folded_into_head"]:
        # Fold into a float32 copy: on GPUs the backend holds bf16/fp16 weights, and saving those would
        # round every weight of the model to half precision.
        model = AutoModelForSequenceClassification.from_pretrained(staging, dtype=torch.float32)
        fold_temperature(model, calibration["temperature"])
        model.save_pretrained(staging)
    sidecar.temperature = float(calibration["temperature"]) if calibration["folded_into_head"] else 1.0
    logger.info("calibration: %s", json.dumps(calibration))
    return calibration


def choose_thresholds(run: Run, staging: Path, sidecar: Sidecar) -> None:
    """accept, reject and spam on calibrated validation probabilities (docs/design.md section 3)."""
    validation, calib = run.splits["validation"], run.calib_args
    probs = probabilities(run, staging, validation)
    columns = score_columns(probs, sidecar.labels, sidecar.scores)
    truth = np.array(validation.labels)
    is_valid = np.isin(truth, sidecar.scores["validity"])
    is_spam = np.isin(truth, sidecar.scores["spam"])
    valid_name = "+".join(sidecar.scores["validity"])
    sidecar.accept = precision_threshold(
        columns["validity"], is_valid, calib.accept_precision, f"accept ({valid_name})", floor=calib.min_threshold
    )
    sidecar.reject = reject_threshold(
        columns["validity"],
        is_valid,
        calib.reject_max_aduan_rate,
        cap=min(sidecar.accept.value, calib.max_reject_threshold),
        positive=valid_name,
    )
    sidecar.spam = precision_threshold(
        columns["spam"], is_spam, calib.spam_precision, "is_spam", floor=calib.min_threshold
    )


def version_digest(weights_sha: str, heads: dict[str, Any]) -> str:
    """What a model version names: the weights, and for a frozen encoder its head files too.

    Every frozen-heads model of one base shares the encoder's bytes, so its checksum alone would give
    two different default models the same version in answers, logs and feedback.
    """
    files = heads.get("files", {}) if heads else {}
    if not files:
        return weights_sha
    parts = [weights_sha, *(f"{name}:{digest}" for name, digest in sorted(files.items()))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def stamp(run: Run, staging: Path, sidecar: Sidecar, calibration: dict[str, Any]) -> str:
    """Version, data record and creation time; returns the weights' checksum (written by `seal`)."""
    weights_sha = sha256_file(staging / "model.safetensors")
    now = datetime.now(UTC)
    sidecar.version = f"{now:%Y%m%d}-{version_digest(weights_sha, sidecar.heads)[:8]}"
    sidecar.calibration = calibration
    splits = run.splits
    sidecar.training_data = {
        "fingerprint": fingerprint(list(splits.values())),
        "rows": {name: len(s.examples) for name, s in splits.items()},
        "sources": {name: s.source for name, s in splits.items()},
        "label_counts": {name: dict(Counter(s.labels)) for name, s in splits.items()},
    }
    sidecar.created_at = now.isoformat(timespec="seconds")
    write_sidecar(staging, sidecar)
    return weights_sha


def evaluate_sets(run: Run, staging: Path, sidecar: Sidecar) -> dict[str, Any]:
    """Figures of every set, scored through the staged folder exactly as the service will."""
    sets = [s for s in (run.splits["validation"], run.splits.get("test"), *run.extra) if s is not None]
    metrics: dict[str, Any] = {"model": {"name": sidecar.name, "version": sidecar.version}, "train": run.train_metrics}
    for split in sets:
        # The sidecar passed in holds the chosen thresholds (the scorer was built before them).
        metrics[split.name] = evaluate_probabilities(probabilities(run, staging, split), split.labels, sidecar)
        logger.info(summary_line(split.name, metrics[split.name], sidecar.scores["validity"]))
    metrics["evaluated"] = [s.name for s in sets]
    return metrics


def check_bf16_gate(run: Run, staging: Path, sidecar: Sidecar, metrics: dict[str, Any]) -> None:
    """Every evaluated set again in bf16: recorded in the sidecar (SARING_DTYPE=auto reads it) and metrics."""
    from training.precision import check_bf16

    sets = [s for s in (run.splits["validation"], run.splits.get("test"), *run.extra) if s is not None]
    record = check_bf16(
        staging,
        [(s.name, s.texts, run.label_ids(s)) for s in sets],
        {s.name: probabilities(run, staging, s) for s in sets},
        run.labels,
        device=run.device,
    )
    sidecar.precision = {"bf16": record}
    metrics["precision"] = sidecar.precision
    worst = min(s["macro_f1_bf16"] - s["macro_f1_fp32"] for s in record["sets"].values())
    logger.info("bf16 gate: %s (worst macro-F1 change %+.4f)", "passed" if record["accepted"] else "failed", worst)


def sanity_problems(metrics: dict[str, Any], sidecar: Sidecar) -> list[str]:
    """Why a model is useless, if it is: near-chance validation macro-F1, or no usable decision rule."""
    problems = []
    chance = 1.0 / len(sidecar.labels)
    macro_f1 = metrics["validation"]["macro_f1"]
    if macro_f1 < chance + NEAR_CHANCE_MARGIN:
        problems.append(
            f"validation macro-F1 {macro_f1:.3f} is near chance ({chance:.3f} for {len(sidecar.labels)} labels)"
        )
    disabled = [name for name in ("accept", "spam") if "rule disabled" in getattr(sidecar, name).objective]
    if len(disabled) == 2:
        problems.append("neither the accept nor the spam rule reaches its precision on validation data")
    return problems


def check_sanity(run: Run, metrics: dict[str, Any], sidecar: Sidecar) -> None:
    """Refuse to write a useless model unless --allow_weak_model; say what to try."""
    problems = sanity_problems(metrics, sidecar)
    metrics["sanity"] = {"passed": not problems, "problems": problems}
    if not problems:
        return
    args = run.training_args
    train = run.splits["train"]
    advice = (
        f"the trained model looks useless: {'; '.join(problems)}. Try a larger --learning_rate (this run: "
        f"{args.learning_rate:g}; fresh scratch:<preset> bases need about 1e-4 to 5e-3, pre-trained ones 2e-5 to "
        f"5e-5), more --num_train_epochs (this run: {args.num_train_epochs:g}), or more or cleaner data "
        f"({len(train.examples)} training rows: {dict(Counter(train.labels))})."
    )
    if args.allow_weak_model:
        logger.warning("%s Written anyway (--allow_weak_model true).", advice)
        return
    raise WeakModelError(f"{advice} Nothing was written; --allow_weak_model true writes it anyway.")


def add_baseline(run: Run, metrics: dict[str, Any]) -> None:
    if not run.data_args.compare_baseline:
        return
    train = run.splits["train"]
    baseline = train_baseline(train.texts, train.labels, run.labels, run.training_args.seed)
    sets = [run.splits["validation"], run.splits.get("test"), *run.extra]
    metrics["baseline"] = {
        s.name: baseline_figures(baseline, s.texts, s.labels, run.labels) for s in sets if s is not None
    }
    for name, figures in metrics["baseline"].items():
        logger.info("baseline %-12s macro-F1=%.3f", name, figures["macro_f1"])


def write_reports(run: Run, staging: Path, sidecar: Sidecar, metrics: dict[str, Any]) -> None:
    """Plots of the test set (else validation), metrics.json and the model card."""
    shown = run.splits.get("test") or run.splits["validation"]
    probs = probabilities(run, staging, shown)
    save_plots(probs, shown.labels, sidecar, staging, title=f"({shown.name})")
    metrics["calibration"] = sidecar.calibration
    metrics["thresholds"] = {k: asdict(getattr(sidecar, k)) for k in THRESHOLDS}
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    write_model_card(staging, card_record(sidecar, metrics, run.training_args, run.shown_dir))


def seal(staging: Path, sidecar: Sidecar, weights_sha: str) -> None:
    """The real checksum, last of all files: only now is the staging folder a valid model folder."""
    sidecar.weights_sha256 = weights_sha
    write_sidecar(staging, sidecar)


def finalise(run: Run) -> Path:
    with atomic_folder(run.final_dir) as staging:
        sidecar = stage_weights(run, staging)
        calibration = calibrate_head(run, staging, sidecar)
        choose_thresholds(run, staging, sidecar)
        weights_sha = stamp(run, staging, sidecar, calibration)
        metrics = evaluate_sets(run, staging, sidecar)
        check_sanity(run, metrics, sidecar)
        check_bf16_gate(run, staging, sidecar, metrics)
        if run.measure_seed_spread is not None:  # after the gate: no point in re-training a useless run
            metrics["seed_spread"] = run.measure_seed_spread(metrics)
        add_baseline(run, metrics)
        write_reports(run, staging, sidecar, metrics)
        seal(staging, sidecar, weights_sha)
    logger.info("model folder written: %s (%s)", run.final_dir, SIDECAR_NAME)
    return run.final_dir
