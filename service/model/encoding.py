"""Text normalisation, tokenisation and softmax: one encoding path for training and every backend.

A backend differs only in what runs the network; how a text becomes token ids (normalisation,
truncation to the model's max length, which texts were cut) and how a padded batch is laid out are
defined here once. Training tokenises through `fit_max_length` and `add_text_normaliser` too, so a
model sees at serving time exactly the ids it was trained on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Regex, Tokenizer, normalizers
from transformers import AutoTokenizer

logger = logging.getLogger("saring")

# Letters from other scripts that look Latin, used to slip spam past filters ("ЅLОТ GАСОR"). NFKC
# already folds fullwidth and mathematical styled letters (𝐒𝐋𝐎𝐓, ＳＬＯＴ); these it leaves alone.
LOOKALIKES = {
    "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j", "ԁ": "d", "ɡ": "g", "ո": "n", "ս": "u",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J", "Ү": "Y",
    "α": "a", "ο": "o", "ρ": "p", "ν": "v", "ι": "i", "κ": "k", "τ": "t", "υ": "u",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
}  # fmt: skip
# Zero-width and direction marks split words without showing ("s\u200blot"); they carry no meaning.
INVISIBLE = "[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\u00ad]"


@dataclass
class Encoded:
    """Token ids per text (already truncated to the model's max length) and which were cut."""

    ids: list[list[int]]
    truncated: list[bool]


def saring_normaliser() -> normalizers.Normalizer:
    """NFKC, look-alike letters folded to Latin, invisible characters dropped."""
    steps = [normalizers.NFKC(), normalizers.Replace(Regex(INVISIBLE), "")]
    steps += [normalizers.Replace(source, target) for source, target in LOOKALIKES.items()]
    return normalizers.Sequence(steps)


_NORMALISER = saring_normaliser()


def normalise_text(text: str) -> str:
    """The same normalisation, for parts that read the text itself rather than token ids (the TF-IDF head)."""
    return _NORMALISER.normalize_str(text)


def _has_saring_normaliser(tokenizer) -> bool:
    first = json.loads(tokenizer.backend_tokenizer.to_str()).get("normalizer") or {}
    steps = first.get("normalizers") or []
    return len(steps) > 2 and steps[0].get("type") == "NFKC" and steps[1].get("pattern", {}).get("Regex") == INVISIBLE


def add_text_normaliser(tokenizer) -> None:
    """Put saring's normalisation in front of the tokenizer's own, once.

    It lives inside the fast tokenizer, so it is saved in tokenizer.json with the model folder and
    `transformers.pipeline` applies it too: styled spam scores like plain spam everywhere.
    """
    if _has_saring_normaliser(tokenizer):
        return
    backend = tokenizer.backend_tokenizer
    own = backend.normalizer
    backend.normalizer = normalizers.Sequence([saring_normaliser(), own]) if own else saring_normaliser()


def fit_max_length(max_length: int, tokenizer) -> int:
    """The length training and serving both truncate at: the asked one, clamped to the tokenizer's limit."""
    limit = tokenizer.model_max_length
    if max_length > limit:
        logger.warning("max_length %d is above the tokenizer's limit %d; using %d", max_length, limit, limit)
        return limit
    return max_length


def load_tokenizer(model_dir: str | Path):
    """A model folder's fast tokenizer with saring's normalisation (added for folders trained without it)."""
    tokenizer = AutoTokenizer.from_pretrained(Path(model_dir))
    add_text_normaliser(tokenizer)
    return tokenizer


class TextEncoder:
    """A model folder's tokenizer, truncating to `fit_max_length(sidecar max_length)`.

    Encodes and pads with the `tokenizers` engine and numpy directly: the `transformers` wrapper
    around the same engine cost 0.26 ms per single-message call on the event loop (bench/http_cost.py)
    and its `pad` runs on the model thread. Ids and truncation flags equal the wrapper's
    (`truncation=True, max_length=...`), which training uses (tests/test_encoding.py).
    """

    def __init__(self, model_dir: str | Path, max_length: int, prefix: str = "") -> None:
        self.tokenizer = load_tokenizer(model_dir)
        self.max_length = fit_max_length(max_length, self.tokenizer)
        # e5 reads "query: " before a text it embeds for classification; the sidecar says which prefix.
        self.prefix = prefix
        # A copy, so the wrapper's own per-call truncation settings never meet ours.
        self._engine = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
        self._engine.no_padding()
        self._engine.enable_truncation(self.max_length)
        self._pad_id = self.tokenizer.pad_token_id or 0
        self._with_token_types = "token_type_ids" in self.tokenizer.model_input_names
        self._pad_left = self.tokenizer.padding_side == "left"

    def encode(self, texts: Sequence[str]) -> Encoded:
        rows = self._engine.encode_batch([self.prefix + t for t in texts] if self.prefix else list(texts))
        # A truncated text keeps its cut-off tail in `overflowing`.
        return Encoded(ids=[row.ids for row in rows], truncated=[bool(row.overflowing) for row in rows])

    def pad(self, batch: Sequence[Sequence[int]], return_tensors: str) -> dict[str, Any]:
        """input_ids, attention_mask (and token_type_ids where the model takes them), right-padded."""
        width = max(len(ids) for ids in batch)
        input_ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            span = slice(width - len(ids), width) if self._pad_left else slice(0, len(ids))
            input_ids[row, span] = ids
            attention_mask[row, span] = 1
        arrays = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._with_token_types:
            arrays["token_type_ids"] = np.zeros_like(input_ids)
        if return_tensors == "pt":
            import torch

            return {name: torch.from_numpy(array) for name, array in arrays.items()}
        return arrays


def softmax64(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (probabilities near 0 or 1 keep their precision)."""
    logits = np.asarray(logits, dtype=np.float64)
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)
