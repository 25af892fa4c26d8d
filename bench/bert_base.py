"""A BERT-base-sized model folder with random weights (IndoBERT's shape), to measure production cost."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from service.model.folder import CATEGORIES, Sidecar, Threshold, sha256_file, write_sidecar


def build_bert_base_folder(
    out: Path, texts: list[str], vocab_size: int = 50_000, layers: int = 12, hidden: int = 768
) -> Path:
    """Random-init BertForSequenceClassification (12 layers, hidden 768, vocab 50k) + tokenizer + sidecar.

    `layers` and `hidden` give smaller shapes of the same family (6 x 384 is MiniLM-sized)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from training.scratch import train_wordpiece

    if (out / "saring.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tokenizer = train_wordpiece(texts, vocab_size, max_length=128)
    labels = list(CATEGORIES)
    config = BertConfig(
        vocab_size=vocab_size,  # IndoBERT's vocabulary size, whatever the trained tokenizer reached
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        intermediate_size=4 * hidden,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    threshold = Threshold(value=0.5, objective="benchmark only", target=0.0)
    write_sidecar(
        out,
        Sidecar(
            name="bert-base-random",
            version="bench",
            base_model="random init (IndoBERT shape)",
            max_length=128,
            labels=labels,
            scores={"validity": ["aduan"], "spam": ["spam", "iseng"]},
            temperature=1.0,
            accept=Threshold(value=0.9, objective="benchmark only", target=0.0),
            reject=Threshold(value=0.1, objective="benchmark only", target=0.0),
            spam=threshold,
            weights_sha256=sha256_file(out / "model.safetensors"),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        ),
    )
    return out
