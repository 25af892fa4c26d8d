"""`python -m training train`: fine-tune, calibrate, evaluate and write a model folder.

Flow (after transformers' run_classification.py): parse argument dataclasses, seed, load and
validate data, build the base model, train with Trainer (DDP under torchrun), then on the main
process: fold the fitted temperature into the head, choose thresholds on validation data and
write the folder atomically, scoring validation and test through the service's own backend.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    HfArgumentParser,
    Trainer,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from service.model.encoding import fit_max_length, load_tokenizer
from service.model.folder import SIDECAR_NAME, Sidecar, Threshold, sha256_file, write_sidecar
from service.model.loading import predict
from service.model.scoring import THRESHOLDS, score_columns
from training.arguments import (
    CalibrationArguments,
    DataArguments,
    ModelArguments,
    SaringTrainingArguments,
)
from training.atomic import atomic_folder
from training.baseline import baseline_figures, train_baseline
from training.calibration import (
    fit_temperature,
    fold_temperature,
    precision_threshold,
    reject_threshold,
)
from training.data import Split, check_splits, fingerprint, load_split, read_rows, stratified_split
from training.metrics import (
    classification_figures,
    evaluate_probabilities,
    save_plots,
    summary_line,
)
from training.model_card import write_model_card

logger = logging.getLogger("training")

OFFLINE_HINT = (
    "Use a local model folder (--model_name_or_path path/to/folder) or a fresh offline model "
    "(--model_name_or_path scratch:small), or set HF_HUB_OFFLINE=1 once the model is in the cache."
)


def parse_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, CalibrationArguments, SaringTrainingArguments]:
    """Flags, or a JSON config file first and flags after it that override its values."""
    parser = HfArgumentParser((ModelArguments, DataArguments, CalibrationArguments, SaringTrainingArguments))
    if argv and argv[0].endswith(".json"):
        argv = json_to_flags(json.loads(Path(argv[0]).read_text(encoding="utf-8"))) + argv[1:]
    return parser.parse_args_into_dataclasses(args=argv)


def json_to_flags(config: dict) -> list[str]:
    flags: list[str] = []
    for key, value in config.items():
        values = value if isinstance(value, list) else [value]
        flags += [f"--{key}", *(_flag_value(v) for v in values)]
    return flags


def _flag_value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):  # e.g. label_map, which the flag takes as JSON
        return json.dumps(value)
    return str(value)


def load_splits(data_args: DataArguments, seed: int) -> dict[str, Split]:
    """Read, map and validate every split; hold out validation data when none is given."""
    common = dict(
        text_column=data_args.text_column,
        label_column=data_args.label_column,
        labels=data_args.labels,
        label_map=data_args.parsed_label_map(),
    )
    train = load_split("train", data_args.train_file, **common)
    if data_args.max_train_samples:
        train.examples = train.examples[: data_args.max_train_samples]
    if data_args.validation_file:
        validation = load_split("validation", [data_args.validation_file], **common)
    else:
        train, validation = stratified_split(train, data_args.validation_split, seed)
    splits = {"train": train, "validation": validation}
    if data_args.test_file:
        splits["test"] = load_split("test", [data_args.test_file], **common)
    check_splits(list(splits.values()), data_args.labels)
    return splits


def load_base(
    model_args: ModelArguments,
    data_args: DataArguments,
    train_texts: list[str],
    work_dir: Path,
    training_args: SaringTrainingArguments,
):
    """Tokenizer and a sequence classifier with our labels, from the hub, a folder or scratch."""
    labels = data_args.labels
    label_kwargs = dict(
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    source = model_args.model_name_or_path
    if model_args.is_scratch:
        from training.scratch import build_scratch_base

        source = str(work_dir / "base")
        if model_args.mlm_pretrain_epochs and training_args.world_size > 1 and not Path(source).exists():
            raise ValueError("MLM pre-training runs on one process: build the base first without torchrun")
        with training_args.main_process_first(desc="build scratch base"):
            if not (Path(source) / "tokenizer.json").exists():  # a resumed run reuses its vocabulary
                mlm_texts = list(train_texts) + _extra_texts(model_args.mlm_text_files, data_args.text_column)
                build_scratch_base(
                    model_args.scratch_preset,
                    mlm_texts,
                    data_args.max_length,
                    Path(source),
                    mlm_epochs=model_args.mlm_pretrain_epochs,
                    seed=training_args.seed,
                    use_cpu=training_args.use_cpu,
                )
    try:
        tokenizer = load_tokenizer(source)
        # Truncate where serving will: a --max_length above the tokenizer's limit is clamped (and recorded).
        data_args.max_length = fit_max_length(data_args.max_length, tokenizer)
        config = AutoConfig.from_pretrained(source, **label_kwargs)
        set_seed(training_args.seed)  # the same head init whatever ran before
        has_weights = not model_args.is_scratch or (Path(source) / "model.safetensors").exists()
        if has_weights:
            model = AutoModelForSequenceClassification.from_pretrained(
                source, config=config, ignore_mismatched_sizes=True
            )
        else:
            model = AutoModelForSequenceClassification.from_config(config)
    except OSError as exc:
        raise SystemExit(f"could not load base model {source!r}: {exc}\n{OFFLINE_HINT}") from exc
    return tokenizer, model


def _extra_texts(files: list[str], text_column: str) -> list[str]:
    texts: list[str] = []
    for name in files:
        if name.endswith(".txt"):
            texts += [line.strip() for line in Path(name).read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            rows, _, _ = read_rows(name)
            texts += [str(r[text_column]) for r in rows if r.get(text_column)]
    return texts


def to_dataset(split: Split, tokenizer, labels: list[str], max_length: int):
    import datasets

    label_ids = {label: i for i, label in enumerate(labels)}
    ds = datasets.Dataset.from_dict({"text": split.texts, "labels": [label_ids[y] for y in split.labels]})
    return ds.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
        batched=True,
        remove_columns=["text"],
        desc=f"tokenising {split.name}",
    )


def weighted_loss(train_labels: list[str], labels: list[str]):
    """Cross-entropy weighted by inverse class frequency, so rare classes (iseng) still count."""
    counts = Counter(train_labels)
    weights = torch.tensor([len(train_labels) / (len(labels) * counts[label]) for label in labels])

    def compute_loss(outputs, targets, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        loss = torch.nn.functional.cross_entropy(
            logits.float(), targets, weight=weights.to(logits.device), reduction="sum"
        )
        if num_items_in_batch is not None:
            # Trainer's contract for a compute_loss_func: divide by the items of the whole step (all
            # processes, all accumulation steps); it then multiplies by the process count and skips its
            # own gradient-accumulation division. The weights average 1 over the data, so this is the
            # weighted mean; a per-batch mean here would scale loss and gradients by world size.
            return loss / num_items_in_batch
        # Normalise by the weights of the batch's targets (the mean a weighted CE takes).
        return loss / weights.to(logits.device)[targets].sum()

    return compute_loss


def compute_metrics(eval_pred) -> dict[str, float]:
    logits, label_ids = eval_pred
    preds = np.asarray(logits).argmax(axis=1)
    n = int(np.asarray(logits).shape[1])
    figures = classification_figures(np.asarray(label_ids), preds, [str(i) for i in range(n)])
    return {"macro_f1": figures["macro_f1"], "accuracy": figures["accuracy"]}


def run(
    model_args: ModelArguments,
    data_args: DataArguments,
    calib_args: CalibrationArguments,
    training_args: SaringTrainingArguments,
) -> Path | None:
    """Train and write the model folder; returns its path on the main process, else None."""
    final_dir = Path(training_args.output_dir).resolve()
    work_dir = final_dir.parent / f".{final_dir.name}.work"
    training_args.output_dir = str(work_dir / "checkpoints")
    set_seed(training_args.seed)

    splits = load_splits(data_args, training_args.seed)
    for split in splits.values():
        logger.info("%s: %d rows %s", split.name, len(split.examples), dict(Counter(split.labels)))
    # Extra evaluation sets are scored after training but read now, so a bad file fails before
    # any training as every other input does. They may lack classes, so check_splits skips them.
    extra = [
        load_split(
            name, [path], data_args.text_column, data_args.label_column, data_args.labels, data_args.parsed_label_map()
        )
        for name, path in data_args.extra_eval_sets()
    ]

    if training_args.should_save and not training_args.resume:
        if work_dir.exists():
            shutil.rmtree(work_dir)  # a fresh run never mixes with an old run's checkpoints
        for stale in final_dir.parent.glob(f".{final_dir.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed run; never loadable
    tokenizer, model = load_base(model_args, data_args, splits["train"].texts, work_dir, training_args)
    labels = data_args.labels
    train_ds = to_dataset(splits["train"], tokenizer, labels, data_args.max_length)
    eval_ds = to_dataset(splits["validation"], tokenizer, labels, data_args.max_length)

    callbacks = []
    if training_args.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=training_args.early_stopping_patience))
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        compute_loss_func=weighted_loss(splits["train"].labels, labels) if training_args.class_weighting else None,
        callbacks=callbacks,
    )
    checkpoint = None
    if training_args.resume:
        checkpoint = get_last_checkpoint(training_args.output_dir) if Path(training_args.output_dir).is_dir() else None
        logger.info("resuming from %s", checkpoint or "nothing: no checkpoint found, starting fresh")
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    if not trainer.is_world_process_zero():
        return None

    folder = finalise(
        trainer,
        tokenizer,
        splits,
        extra,
        train_result.metrics,
        model_args,
        data_args,
        calib_args,
        training_args,
        final_dir,
    )
    shutil.rmtree(work_dir, ignore_errors=True)
    return folder


def finalise(
    trainer: Trainer,
    tokenizer,
    splits: dict[str, Split],
    extra: list[Split],
    train_metrics: dict[str, float],
    model_args: ModelArguments,
    data_args: DataArguments,
    calib_args: CalibrationArguments,
    training_args: SaringTrainingArguments,
    final_dir: Path,
) -> Path:
    from service.model.torch_backend import TorchBackend

    labels = data_args.labels
    device = "cpu" if training_args.use_cpu or not torch.cuda.is_available() else "cuda"
    validation, test = splits["validation"], splits.get("test")
    label_index = {label: i for i, label in enumerate(labels)}
    with atomic_folder(final_dir) as staging:
        trainer.save_model(str(staging))
        tokenizer.save_pretrained(staging)
        placeholder = Threshold(value=0.5, objective="placeholder", target=0.0)
        # Until the last write the sidecar's checksum is a sentinel that matches no weights, so a run
        # killed inside this block leaves a staging folder that read_sidecar (and the service) refuses.
        unfinished = "unfinished: training was interrupted before this folder was complete"
        sidecar = Sidecar(
            name=model_args.model_name or final_dir.name,
            version="",
            base_model=model_args.model_name_or_path,
            max_length=data_args.max_length,
            labels=list(labels),
            scores={
                "validity": list(data_args.validity_labels),
                "spam": list(data_args.spam_labels),
            },
            temperature=1.0,
            accept=placeholder,
            reject=placeholder,
            spam=placeholder,
            weights_sha256=unfinished,
        )
        write_sidecar(staging, sidecar)

        # 1. Calibrate: fit T on validation logits from the service's backend, fold it into the head.
        backend = TorchBackend(staging, device=device, verify_weights=False)
        val_y = np.array([label_index[y] for y in validation.labels])
        logits, _ = predict(backend, validation.texts, forward=backend.logits)
        calibration = {"method": "none", "temperature": 1.0}
        if calib_args.calibrate_temperature:
            calibration = {
                "method": "temperature",
                **fit_temperature(logits, val_y),
                "folded_into_head": True,
            }
            # Fold into a float32 copy: on GPUs the backend holds bf16/fp16 weights, and saving those would
            # round every weight of the model to half precision.
            model = AutoModelForSequenceClassification.from_pretrained(staging, dtype=torch.float32)
            fold_temperature(model, calibration["temperature"])
            model.save_pretrained(staging)
            del model
            backend = TorchBackend(staging, device=device, verify_weights=False)
        logger.info("calibration: %s", json.dumps(calibration))

        # 2. Thresholds on calibrated validation probabilities.
        val_probs, _ = predict(backend, validation.texts)
        columns = score_columns(val_probs, sidecar.labels, sidecar.scores)
        validity, spam = columns["validity"], columns["spam"]
        is_aduan = np.isin(val_y, [label_index[x] for x in data_args.validity_labels])
        is_spam = np.isin(val_y, [label_index[x] for x in data_args.spam_labels])
        accept = precision_threshold(
            validity, is_aduan, calib_args.accept_precision, "accept (aduan)", floor=calib_args.min_threshold
        )
        reject = reject_threshold(
            validity, is_aduan, calib_args.reject_max_aduan_rate, cap=min(accept.value, calib_args.max_reject_threshold)
        )
        spam_threshold = precision_threshold(
            spam, is_spam, calib_args.spam_precision, "is_spam", floor=calib_args.min_threshold
        )

        weights_sha = sha256_file(staging / "model.safetensors")
        now = datetime.now(UTC)
        sidecar.version = f"{now:%Y%m%d}-{weights_sha[:8]}"
        sidecar.temperature = float(calibration["temperature"])
        sidecar.calibration = calibration
        sidecar.accept, sidecar.reject, sidecar.spam = accept, reject, spam_threshold
        sidecar.training_data = {
            "fingerprint": fingerprint(list(splits.values())),
            "rows": {name: len(s.examples) for name, s in splits.items()},
            "sources": {name: s.source for name, s in splits.items()},
            "label_counts": {name: dict(Counter(s.labels)) for name, s in splits.items()},
        }
        sidecar.created_at = now.isoformat(timespec="seconds")
        write_sidecar(staging, sidecar)

        # 3. Figures for the folder, scored through the finished folder exactly as the service will
        # (weights unverified: the sidecar still holds the sentinel checksum).
        backend = TorchBackend(staging, device=device, verify_weights=False)
        metrics = {"model": {"name": sidecar.name, "version": sidecar.version}, "train": train_metrics}
        for split in [s for s in (validation, test) if s is not None]:
            probs, _ = predict(backend, split.texts)
            metrics[split.name] = evaluate_probabilities(probs, split.labels, backend.sidecar)
            logger.info(summary_line(split.name, metrics[split.name]))
        for split in extra:
            probs, _ = predict(backend, split.texts)
            metrics[split.name] = evaluate_probabilities(probs, split.labels, backend.sidecar)
            logger.info(summary_line(split.name, metrics[split.name]))
        metrics["evaluated"] = [s.name for s in (validation, test, *extra) if s is not None]
        if data_args.compare_baseline:
            baseline = train_baseline(splits["train"].texts, splits["train"].labels, labels, training_args.seed)
            metrics["baseline"] = {
                s.name: baseline_figures(baseline, s.texts, s.labels, labels)
                for s in (validation, test, *extra)
                if s is not None
            }
            for name, figures in metrics["baseline"].items():
                logger.info("baseline %-12s macro-F1=%.3f", name, figures["macro_f1"])
        shown = test or validation
        probs, _ = predict(backend, shown.texts)
        save_plots(probs, shown.labels, backend.sidecar, staging, title=f"({shown.name})")
        metrics["calibration"] = calibration
        metrics["thresholds"] = {k: asdict(getattr(sidecar, k)) for k in THRESHOLDS}
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        write_model_card(staging, sidecar, metrics, training_args)
        # The sidecar gets its real checksum last of all files so a staging folder is never valid early.
        sidecar.weights_sha256 = weights_sha
        write_sidecar(staging, sidecar)
    logger.info("model folder written: %s (%s)", final_dir, SIDECAR_NAME)
    return final_dir


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    run(*args)
    return 0
