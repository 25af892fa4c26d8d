"""Argument dataclasses for `python -m training train`, parsed by HfArgumentParser.

Every field is a flag (`--text_column` or `--text-column`) and a key of the JSON config file that
can be passed instead of flags (`python -m training train config.json`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainingArguments

from service.model.folder import CATEGORIES

DEFAULT_BASE_MODEL = "indobenchmark/indobert-base-p1"
SCRATCH_PREFIX = "scratch:"
# Keys of metrics.json that an extra evaluation set must not overwrite.
RESERVED_SET_NAMES = {"train", "validation", "test", "model", "evaluated", "baseline", "calibration", "thresholds"}


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default=DEFAULT_BASE_MODEL,
        metadata={
            "help": "Base encoder: a hub id, a local folder, or 'scratch:<preset>' (tiny, small, base) "
            "to build a fresh BERT with a WordPiece tokenizer trained on the training texts, "
            "with no hub access."
        },
    )
    mlm_pretrain_epochs: float = field(
        default=0.0,
        metadata={
            "help": "Scratch models only: epochs of masked-language-model pre-training on the "
            "training texts (plus --mlm_text_files) before fine-tuning. 0 turns it off."
        },
    )
    mlm_text_files: list[str] = field(
        default_factory=list,
        metadata={"help": "Extra plain-text or CSV/JSONL files (text column) for MLM pre-training."},
    )
    model_name: str | None = field(
        default=None,
        metadata={"help": "Name recorded in the sidecar; default: the output folder's name."},
    )

    def __post_init__(self) -> None:
        if self.is_scratch:
            from training.scratch import PRESETS

            if self.scratch_preset not in PRESETS:
                raise ValueError(f"unknown scratch preset {self.scratch_preset!r}: choose one of {sorted(PRESETS)}")
        elif self.mlm_pretrain_epochs:
            raise ValueError("--mlm_pretrain_epochs applies only to scratch:<preset> base models")

    @property
    def is_scratch(self) -> bool:
        return self.model_name_or_path.startswith(SCRATCH_PREFIX)

    @property
    def scratch_preset(self) -> str:
        return self.model_name_or_path.removeprefix(SCRATCH_PREFIX)


@dataclass
class DataArguments:
    train_file: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Training data: one or more CSV or JSONL files, local `datasets` folders or hub "
            "dataset ids (rows of all are concatenated, e.g. seed data plus exported feedback)."
        },
    )
    validation_file: str | None = field(
        default=None,
        metadata={"help": "Validation data; without it a stratified share of the training data is held out."},
    )
    test_file: str | None = field(default=None, metadata={"help": "Optional held-out test data."})
    text_column: str = field(default="text", metadata={"help": "Column holding the message text."})
    label_column: str = field(default="label", metadata={"help": "Column holding the label."})
    label_map: str | None = field(
        default=None,
        metadata={
            "help": "JSON object (inline or a file path) mapping raw labels to model labels, e.g. "
            '\'{"0": "bukan_aduan", "1": "spam", "2": "spam"}\'. Unmapped labels pass through.'
        },
    )
    labels: list[str] = field(
        default_factory=lambda: list(CATEGORIES),
        metadata={"help": "The model's labels, in id order."},
    )
    validity_labels: list[str] = field(
        default_factory=lambda: ["aduan"],
        metadata={"help": "Labels whose probabilities make `validity`."},
    )
    spam_labels: list[str] = field(
        default_factory=lambda: ["spam", "iseng"],
        metadata={"help": "Labels whose probabilities make `spam`."},
    )
    validation_split: float = field(
        default=0.15,
        metadata={"help": "Share held out for validation when no validation file is given."},
    )
    max_length: int = field(default=128, metadata={"help": "Tokens per message; longer ones are truncated."})
    extra_eval_file: list[str] = field(
        default_factory=list,
        metadata={
            "help": "More labelled sets to score into metrics.json and the model card, as NAME=PATH "
            "(e.g. real=build/real_mixed.jsonl). They may lack classes (real data has no pranks)."
        },
    )
    compare_baseline: bool = field(
        default=False,
        metadata={"help": "Also train TF-IDF + logistic regression on the same split and report it beside."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training rows (smoke tests)."}
    )

    def __post_init__(self) -> None:
        if isinstance(self.train_file, str):  # a JSON config may give one file as a plain string
            self.train_file = [self.train_file]
        if not self.train_file:
            raise ValueError("--train_file is required (one or more files)")
        if not 0.0 < self.validation_split < 0.5:
            raise ValueError(f"--validation_split must be between 0 and 0.5, got {self.validation_split}")
        for name in ("validity_labels", "spam_labels"):
            unknown = sorted(set(getattr(self, name)) - set(self.labels))
            if unknown:
                raise ValueError(f"--{name} names labels {unknown} that are not in --labels {self.labels}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"--labels has duplicates: {self.labels}")
        names = [name for name, _ in self.extra_eval_sets()]
        clash = sorted(set(names) & RESERVED_SET_NAMES) or sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise ValueError(f"--extra_eval_file names {clash} clash with other sets; name them NAME=PATH")

    def extra_eval_sets(self) -> list[tuple[str, str]]:
        """(name, path) of each --extra_eval_file; a bare path is named after its file."""
        return [tuple(spec.split("=", 1)) if "=" in spec else (Path(spec).stem, spec) for spec in self.extra_eval_file]

    def parsed_label_map(self) -> dict[str, str]:
        if not self.label_map:
            return {}
        if isinstance(self.label_map, dict):  # a JSON config file may hold the object itself
            mapping = self.label_map
        else:
            text = self.label_map
            # An inline object is never a path (and a long one would overflow the file name limit).
            if not text.lstrip().startswith("{") and Path(text).is_file():
                text = Path(text).read_text(encoding="utf-8")
            mapping = json.loads(text)
        if not isinstance(mapping, dict):
            raise ValueError("--label_map must be a JSON object of raw label -> model label")
        return {str(k): str(v) for k, v in mapping.items()}


@dataclass
class CalibrationArguments:
    reject_max_aduan_rate: float = field(
        default=0.01,
        metadata={"help": "Reject threshold: at most this share of genuine complaints may be rejected."},
    )
    accept_precision: float = field(
        default=0.95,
        metadata={"help": "Accept threshold: precision of `accept` on validation data."},
    )
    spam_precision: float = field(
        default=0.95,
        metadata={"help": "Spam threshold: precision of `is_spam` on validation data."},
    )
    min_threshold: float = field(
        default=0.5,
        metadata={
            "help": "Floor for the accept and spam thresholds: a message is never accepted (or flagged) "
            "on a score the model itself calls unlikely, however well validation data separates."
        },
    )
    max_reject_threshold: float = field(
        default=0.05,
        metadata={
            "help": "Ceiling for the reject threshold: only messages the model gives under this chance of "
            "being a complaint are rejected. Validation data written like the training data separates so "
            "well that the 1 %% objective alone allowed rejecting at validity 0.56, which rejected 18 %% of "
            "real complaints; the review band catches what lies between."
        },
    )
    calibrate_temperature: bool = field(
        default=True,
        metadata={"help": "Fit a temperature on validation logits and fold it into the head."},
    )


@dataclass
class SaringTrainingArguments(TrainingArguments):
    """TrainingArguments with defaults that suit this task; `output_dir` is the final model folder."""

    output_dir: str = field(default="models/custom", metadata={"help": "The model folder to write."})
    num_train_epochs: float = field(default=5.0, metadata={"help": "Training epochs."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate (AdamW)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per device."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Eval batch size per device."})
    warmup_steps: float = field(default=0.06, metadata={"help": "LR warm-up: a share of all steps if < 1, else steps."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate (no, steps, epoch)."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to checkpoint (no, steps, epoch)."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept for --resume."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Keep the best epoch's weights."})
    metric_for_best_model: str | None = field(default="macro_f1", metadata={"help": "Model selection metric."})
    greater_is_better: bool | None = field(default=True, metadata={"help": "Higher metric is better."})
    logging_steps: float = field(default=20, metadata={"help": "Log every N steps."})
    seed: int = field(default=42, metadata={"help": "Seed for data splits, init and shuffling."})
    # saring's own knobs
    resume: bool = field(default=False, metadata={"help": "Resume from the last checkpoint of an interrupted run."})
    class_weighting: bool = field(
        default=True, metadata={"help": "Weight the loss by inverse class frequency (balanced)."}
    )
    early_stopping_patience: int = field(
        default=2,
        metadata={"help": "Stop after N evaluations without validation macro-F1 gains; 0 = off."},
    )
    mixed_precision: str = field(
        default="auto",
        metadata={"help": "auto (bf16 on GPUs that support it, else fp16; none on CPU), bf16, fp16 or no."},
    )

    def __post_init__(self) -> None:
        if self.mixed_precision not in ("auto", "bf16", "fp16", "no"):
            raise ValueError(f"--mixed_precision must be auto, bf16, fp16 or no, not {self.mixed_precision!r}")
        if not (self.bf16 or self.fp16) and not self.use_cpu and torch.cuda.is_available():
            if self.mixed_precision == "auto":
                self.bf16 = torch.cuda.is_bf16_supported()
                self.fp16 = not self.bf16
            else:
                self.bf16 = self.mixed_precision == "bf16"
                self.fp16 = self.mixed_precision == "fp16"
        if self.early_stopping_patience and self.eval_strategy == "no":
            raise ValueError("--early_stopping_patience needs --eval_strategy epoch or steps")
        super().__post_init__()
