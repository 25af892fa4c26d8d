"""Tokenisation and softmax shared by every backend, so torch and ONNX Runtime see the same ids.

A backend differs only in what runs the network; how a text becomes token ids (truncation to the
model's max length, which texts were cut) and how a padded batch is laid out are defined here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoTokenizer

from service.backend import Encoded


class TextEncoder:
    """A model folder's tokenizer, truncating to min(sidecar max_length, tokenizer limit)."""

    def __init__(self, model_dir: str | Path, max_length: int) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(Path(model_dir))
        self.max_length = min(max_length, self.tokenizer.model_max_length)

    def encode(self, texts: Sequence[str]) -> Encoded:
        enc = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            return_overflowing_tokens=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        ids: list[list[int]] = []
        truncated: list[bool] = []
        # Overflow rows repeat a sample index; the first row per sample is the truncated text.
        for row, sample in enumerate(enc["overflow_to_sample_mapping"]):
            if sample == len(ids):
                ids.append(enc["input_ids"][row])
                truncated.append(False)
            else:
                truncated[sample] = True
        return Encoded(ids=ids, truncated=truncated)

    def pad(self, batch: Sequence[Sequence[int]], return_tensors: str) -> dict[str, Any]:
        """input_ids, attention_mask (and token_type_ids where the tokenizer has them), padded."""
        return dict(self.tokenizer.pad({"input_ids": [list(ids) for ids in batch]}, return_tensors=return_tensors))


def softmax64(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (probabilities near 0 or 1 keep their precision)."""
    logits = np.asarray(logits, dtype=np.float64)
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)
