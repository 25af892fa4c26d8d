"""The text half of a frozen-encoder folder, and how it is mixed with the encoder's logits.

- `TfidfHead`: scikit-learn TF-IDF vectorizers rebuilt from `tfidf.json` (parameters, vocabularies)
  and `tfidf.safetensors` (idf per vectorizer, coef, intercept): class probabilities from the text.
- `TextMix`: each text rides with its token ids (`TokenIds`), so the batcher, `predict` and
  explanations need no changes; the model thread runs the text head on a whole batch's texts beside
  the encoder and mixes both in `combine`. (The text head first ran at encode time, on the event
  loop: 2.3 of the 3.6 ms of event-loop CPU of a single-message call; batched on the model thread it
  costs a fraction of that.) Both backends, torch and ONNX, use it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.model.encoding import normalise_text, softmax64

TFIDF_CONFIG = "tfidf.json"
TFIDF_WEIGHTS = "tfidf.safetensors"


class TokenIds(list):
    """A text's token ids, carrying the text itself for the text head (or None)."""

    text: str | None = None

    @classmethod
    def of(cls, ids: Sequence[int], text: str | None) -> TokenIds:
        out = cls(ids)
        out.text = text
        return out


def texts_of(batch: Sequence[Sequence[int]]) -> list[str] | None:
    """The texts a batch of `TokenIds` carries; None when any row has none (plain id lists)."""
    texts = [getattr(ids, "text", None) for ids in batch]
    return None if any(t is None for t in texts) else texts


class TextMix:
    """A frozen folder's text head and its weight, applied alike by every backend (torch, ONNX)."""

    def __init__(self, folder: Path, heads: dict[str, Any]) -> None:
        self.head = TfidfHead(folder) if heads.get("text_head") else None
        self.weight = float(heads.get("text_head", {}).get("weight", 0.0))

    def attach(self, ids: list[list[int]], texts: Sequence[str]) -> list[list[int]]:
        """The token ids of each text, carrying the text for `mix` (run later, on the model thread)."""
        if self.head is None:
            return ids
        return [TokenIds.of(row, text) for row, text in zip(ids, texts, strict=True)]

    def mix(self, encoder_logits: np.ndarray, batch: Sequence[Sequence[int]]) -> np.ndarray:
        texts = texts_of(batch) if self.head is not None else None
        return combine(encoder_logits, None if texts is None else self.head.probabilities(texts), self.weight)


def combine(encoder_logits: np.ndarray, text_probs: np.ndarray | None, text_weight: float) -> np.ndarray:
    """Log of the weighted mean of both heads' probabilities (float64), per row of the batch.

    Log-probabilities are valid logits: softmax gives back the mixed probabilities exactly, and
    explanations and calibration read them like any model's logits.
    """
    probs = softmax64(encoder_logits)
    if text_weight and text_probs is not None:
        probs = (1 - text_weight) * probs + text_weight * text_probs
    return np.log(np.maximum(probs, np.finfo(np.float64).tiny))


class TfidfHead:
    """TF-IDF features of the normalised text and a linear (logistic regression) layer over them."""

    def __init__(self, folder: Path) -> None:
        from safetensors.numpy import load_file
        from sklearn.feature_extraction.text import TfidfVectorizer

        config = json.loads((folder / TFIDF_CONFIG).read_text(encoding="utf-8"))
        weights = load_file(str(folder / TFIDF_WEIGHTS))
        self.vectorizers = []
        for i, part in enumerate(config["vectorizers"]):
            params = {**part["params"], "ngram_range": tuple(part["params"]["ngram_range"])}  # JSON has lists
            vectorizer = TfidfVectorizer(vocabulary=part["vocabulary"], **params)
            vectorizer.idf_ = weights[f"idf.{i}"]
            self.vectorizers.append(vectorizer)
        # The file holds coef as (labels, features); kept as (features, labels), contiguous: multiplying by a
        # transposed view made scipy copy the whole matrix per call (0.85 of 2.4 ms for a single message).
        self.coef_t = np.ascontiguousarray(weights["coef"].astype(np.float64).T)
        self.intercept = weights["intercept"].astype(np.float64)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        import scipy.sparse

        normalised = [normalise_text(t) for t in texts]
        features = scipy.sparse.hstack([v.transform(normalised) for v in self.vectorizers]).tocsr()
        return softmax64(features @ self.coef_t + self.intercept)


def save_tfidf_head(folder: Path, vectorizers: Sequence[Any], coef: np.ndarray, intercept: np.ndarray) -> list[str]:
    """Write fitted scikit-learn TfidfVectorizers and a linear layer as the files `TfidfHead` reads."""
    from safetensors.numpy import save_file

    keep = ("analyzer", "ngram_range", "lowercase", "sublinear_tf", "norm", "use_idf", "smooth_idf", "strip_accents")
    config = {
        "vectorizers": [
            {
                "params": {k: v for k, v in vec.get_params().items() if k in keep},
                "vocabulary": {term: int(i) for term, i in vec.vocabulary_.items()},
            }
            for vec in vectorizers
        ]
    }
    (folder / TFIDF_CONFIG).write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    # C order: scikit-learn's coef_ can be a Fortran-ordered view, and safetensors writes the raw buffer.
    tensors = {f"idf.{i}": np.ascontiguousarray(vec.idf_, dtype=np.float32) for i, vec in enumerate(vectorizers)}
    tensors["coef"] = np.ascontiguousarray(coef, dtype=np.float32)
    tensors["intercept"] = np.ascontiguousarray(intercept, dtype=np.float32)
    save_file(tensors, str(folder / TFIDF_WEIGHTS))
    return [TFIDF_CONFIG, TFIDF_WEIGHTS]
