"""Argument dataclasses for `python -m training train`, parsed by HfArgumentParser.

Every field is a flag (`--text_column` or `--text-column`) and a key of the JSON config file that
can be passed instead of flags (`python -m training train config.json`).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainingArguments

from service.model.folder import CATEGORIES
from training.data import parse_label_map
from training.errors import OWN_LABELS_HINT, ArgumentsError

DEFAULT_BASE_MODEL = "indobenchmark/indobert-base-p1"
SCRATCH_PREFIX = "scratch:"
VALIDITY_DEFAULT = ("aduan",)
SPAM_DEFAULT = ("spam", "iseng")
# A fresh (scratch) encoder needs a far larger step than a pre-trained one: at 5e-5 a scratch:small
# run stayed at chance (loss flat at ln 3). Per preset, measured on the seed data (scratch:small at
# 5e-4 is the default model's setting); used when --learning_rate is not given.
SCRATCH_LEARNING_RATES = {"tiny": 5e-3, "small": 5e-4, "base": 1e-4}
PRETRAINED_LEARNING_RATE = 5e-5
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
    method: str = field(
        default="finetune",
        metadata={
            "help": "finetune: train the whole encoder with Trainer. frozen_heads: keep a pre-trained encoder "
            "frozen, fit a linear head on its mean-pooled sentence embeddings and mix it with a TF-IDF head "
            "(training/frozen.py; the default model's method: it transferred best to unseen writers and real data)."
        },
    )
    text_prefix: str = field(
        default="",
        metadata={"help": "Put before every text, in training and serving (e5 encoders read 'query: ')."},
    )
    text_head_weight: float = field(
        default=0.5,
        metadata={"help": "frozen_heads: share of the TF-IDF head in the mixed probabilities (0 turns it off)."},
    )
    pooled_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "frozen_heads: the encoder's hidden states the head reads (0 = embeddings), each mean-pooled "
            "and normalised, then concatenated; default: the last one. The default model reads 6 9 12."
        },
    )

    def __post_init__(self) -> None:
        if self.is_scratch:
            from training.scratch import PRESETS

            if self.scratch_preset not in PRESETS:
                raise ArgumentsError(f"unknown scratch preset {self.scratch_preset!r}: choose one of {sorted(PRESETS)}")
        elif self.mlm_pretrain_epochs:
            raise ArgumentsError("--mlm_pretrain_epochs applies only to scratch:<preset> base models")
        if self.method not in ("finetune", "frozen_heads"):
            raise ArgumentsError(f"--method {self.method!r}: use finetune or frozen_heads")
        if self.method == "frozen_heads" and self.is_scratch:
            raise ArgumentsError("--method frozen_heads needs a pre-trained encoder, not a scratch:<preset> base")
        if self.text_prefix and self.method != "frozen_heads":
            raise ArgumentsError("--text_prefix is supported with --method frozen_heads only")
        if not 0.0 <= self.text_head_weight < 1.0:
            raise ArgumentsError(f"--text_head_weight {self.text_head_weight}: use a share in [0, 1)")
        if self.pooled_layers is not None and self.method != "frozen_heads":
            raise ArgumentsError("--pooled_layers is supported with --method frozen_heads only")
        if self.pooled_layers is not None and (not self.pooled_layers or min(self.pooled_layers) < 0):
            raise ArgumentsError(f"--pooled_layers {self.pooled_layers}: give hidden-state indices, 0 or more")

    @property
    def is_scratch(self) -> bool:
        return self.model_name_or_path.startswith(SCRATCH_PREFIX)

    @property
    def scratch_preset(self) -> str:
        return self.model_name_or_path.removeprefix(SCRATCH_PREFIX)


@dataclass
class LabelledDataArguments:
    """How to read a labelled file: shared by train, evaluate, compare, export and score."""

    text_column: str = field(default="text", metadata={"help": "Column holding the message text."})
    label_column: str = field(default="label", metadata={"help": "Column holding the label."})
    label_map: str | None = field(
        default=None,
        metadata={
            "help": "JSON object (inline or a file path) mapping raw labels to model labels, e.g. "
            '\'{"valid": "aduan", "junk": "spam", "chat": "bukan_aduan"}\'. Unmapped labels pass through. '
            "A trained model folder records its map: evaluate, compare, export and the service reuse it, "
            "and this flag adds to it."
        },
    )
    encoding: str = field(
        default="utf-8",
        metadata={"help": "Text encoding of CSV/TSV/JSONL files (e.g. cp1252 for files saved by Excel on Windows)."},
    )

    def parsed_label_map(self) -> dict[str, str]:
        return parse_label_map(self.label_map)


@dataclass
class BackendArguments:
    """Which of the service's backends scores the messages, and where."""

    backend: str = field(default="torch", metadata={"help": "torch or onnx: the service's backends."})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda."})
    batch_size: int = field(default=32, metadata={"help": "Messages per forward."})


@dataclass
class DataArguments(LabelledDataArguments):
    train_file: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Training data: one or more CSV, TSV or JSONL files, local `datasets` folders or hub "
            "dataset ids (rows of all are concatenated, e.g. seed data plus exported feedback)."
        },
    )
    validation_file: str | None = field(
        default=None,
        metadata={"help": "Validation data; without it a stratified share of the training data is held out."},
    )
    test_file: str | None = field(default=None, metadata={"help": "Optional held-out test data."})
    labels: list[str] | None = field(
        default=None,
        metadata={
            "help": "The model's labels, in id order. Default: saring's categories (aduan bukan_aduan iseng "
            "spam), or with --label_map those it maps onto. Your own labels need --validity_labels and "
            "--spam_labels too (README: Your own labels)."
        },
    )
    validity_labels: list[str] | None = field(
        default=None,
        metadata={"help": "Labels whose probabilities make `validity` (default: aduan)."},
    )
    spam_labels: list[str] | None = field(
        default=None,
        metadata={"help": "Labels whose probabilities make `spam` (default: spam and iseng, those among --labels)."},
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
            raise ArgumentsError("--train_file is required (one or more files)")
        if not 0.0 < self.validation_split < 0.5:
            raise ArgumentsError(f"--validation_split must be between 0 and 0.5, got {self.validation_split}")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ArgumentsError(f"--labels has duplicates: {self.labels}")
        names = [name for name, _ in self.extra_eval_sets()]
        clash = sorted(set(names) & RESERVED_SET_NAMES) or sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise ArgumentsError(f"--extra_eval_file names {clash} clash with other sets; name them NAME=PATH")
        if self.labels is not None or not self.label_map:
            self.resolve_labels()  # a mapped model's labels wait for the training data (load_splits)

    def resolve_labels(self, raw_train_labels: Collection[str] = ()) -> None:
        """Choose the model's labels and the labels of each score, or say what to pass.

        Without --labels: saring's categories, or with --label_map the categories the training data
        maps onto (a desk with three labels gets a three-label model). The scores default to aduan
        (validity) and spam + iseng (spam), those among the labels; own labels must name them.
        """
        if self.labels is None:
            if not self.label_map:
                self.labels = list(CATEGORIES)
            else:
                mapping = self.parsed_label_map()
                mapped = {mapping.get(raw, raw) for raw in raw_train_labels}
                self.labels = [c for c in CATEGORIES if c in mapped]
                if len(self.labels) < 2:
                    raise ArgumentsError(
                        f"--label_map maps the training labels onto {sorted(mapped)}; fewer than two of them are "
                        f"saring's categories ({', '.join(CATEGORIES)}). Map onto those, or keep your own labels "
                        f"with --labels, --validity_labels and --spam_labels ({OWN_LABELS_HINT})"
                    )
        for role, default in (("validity_labels", VALIDITY_DEFAULT), ("spam_labels", SPAM_DEFAULT)):
            if getattr(self, role) is None:
                chosen = [label for label in default if label in self.labels]
                if not chosen:
                    raise ArgumentsError(
                        f"--labels {' '.join(self.labels)}: say which of your labels make the two scores, e.g. "
                        f"--validity_labels {self.labels[0]} --spam_labels {self.labels[-1]} ({OWN_LABELS_HINT})"
                    )
                setattr(self, role, chosen)
            unknown = sorted(set(getattr(self, role)) - set(self.labels))
            if unknown:
                raise ArgumentsError(
                    f"--{role} names {unknown}, which are not among the model's labels {self.labels}; "
                    f"name labels from --labels ({OWN_LABELS_HINT})"
                )
        both = sorted(set(self.validity_labels) & set(self.spam_labels))
        if both:
            raise ArgumentsError(f"{both} count for both validity and spam; a label belongs to one score at most")

    def extra_eval_sets(self) -> list[tuple[str, str]]:
        """(name, path) of each --extra_eval_file; a bare path is named after its file."""
        return [tuple(spec.split("=", 1)) if "=" in spec else (Path(spec).stem, spec) for spec in self.extra_eval_file]


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
    learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate (AdamW). Default: 5e-5 for a pre-trained base; for scratch:<preset> "
            "5e-3 (tiny), 5e-4 (small), 1e-4 (base), since a fresh encoder stays at chance at 5e-5."
        },
    )
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
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Discard the checkpoints of an earlier, unfinished run (kept in .<name>.work/ beside the "
            "output folder). Without it a run refuses to start over them; --resume true continues them."
        },
    )
    allow_weak_model: bool = field(
        default=False,
        metadata={
            "help": "Write the folder even when the sanity gate fails (validation macro-F1 near chance, or "
            "no accept or spam rule reachable). Off: such a run fails and writes nothing."
        },
    )
    seed_spread: int = field(
        default=0,
        metadata={
            "help": "Train the same command from this many seeds (this run's and the next N-1) and report the "
            "spread of validation/test macro-F1 in metrics.json and the card. Costs N-1 more training runs; "
            "0 turns it off."
        },
    )
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
            raise ArgumentsError(f"--mixed_precision must be auto, bf16, fp16 or no, not {self.mixed_precision!r}")
        if not (self.bf16 or self.fp16) and not self.use_cpu and torch.cuda.is_available():
            if self.mixed_precision == "auto":
                self.bf16 = torch.cuda.is_bf16_supported()
                self.fp16 = not self.bf16
            else:
                self.bf16 = self.mixed_precision == "bf16"
                self.fp16 = self.mixed_precision == "fp16"
        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if self.ddp_backend is None and distributed and (self.use_cpu or not torch.cuda.is_available()):
            # torchrun without CUDA: NCCL cannot work, and with no backend named every process trained
            # alone on all the data (Trainer's "parallel_mode != DISTRIBUTED"), then each wrote the folder.
            self.ddp_backend = "gloo"
        if self.early_stopping_patience and self.eval_strategy == "no":
            raise ArgumentsError("--early_stopping_patience needs --eval_strategy epoch or steps")
        if self.seed_spread < 0 or self.seed_spread == 1:
            raise ArgumentsError(f"--seed_spread must be 0 (off) or at least 2 seeds, got {self.seed_spread}")
        super().__post_init__()

    def resolve_learning_rate(self, model_args: ModelArguments) -> None:
        """The given --learning_rate, else one that works for the base (scratch needs a larger one)."""
        if self.learning_rate is None:
            if model_args.is_scratch:
                self.learning_rate = SCRATCH_LEARNING_RATES[model_args.scratch_preset]
            else:
                self.learning_rate = PRETRAINED_LEARNING_RATE
