"""A frozen pretrained encoder with a linear head, plus a TF-IDF head on the text: the default model.

Measured on writers the training never saw (`python -m bench.transfer`): TF-IDF word+char n-grams
with logistic regression transfer better than any model fine-tuned here, and the mean of their
probabilities with a linear head on frozen multilingual-e5-small sentence embeddings beats both.
This module serves that combination behind the ordinary `Backend`:

- `MeanPoolClassifier`: the encoder (a `save_pretrained` BertModel folder), masked mean pooling,
  L2 normalisation (as e5 was trained), then `heads.safetensors` (weight, bias): class logits.
- `TfidfHead`: scikit-learn TF-IDF vectorizers rebuilt from `tfidf.json` (parameters, vocabularies)
  and `tfidf.safetensors` (idf per vectorizer, coef, intercept): class probabilities from the text.

Each text rides with its token ids (`TokenIds`), so the batcher, `predict` and explanations need no
changes; the model thread runs the text head on a whole batch's texts beside the encoder and mixes
both in `combine`. (The text head first ran at encode time, on the event loop: 2.3 of the 3.6 ms of
event-loop CPU of a single-message call; batched on the model thread it costs a fraction of that.)
`transformers.pipeline` alone cannot reproduce this (it would put a random classifier on the encoder):
the model card says so, and bench/naive.py rebuilds it from a feature-extraction pipeline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.model.encoding import normalise_text, softmax64

HEADS_FILE = "heads.safetensors"
TFIDF_CONFIG = "tfidf.json"
TFIDF_WEIGHTS = "tfidf.safetensors"
HEAD_KINDS = ("mean_pool_linear",)


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


def combine(encoder_logits: np.ndarray, text_probs: np.ndarray | None, text_weight: float) -> np.ndarray:
    """Log of the weighted mean of both heads' probabilities (float64), per row of the batch.

    Log-probabilities are valid logits: softmax gives back the mixed probabilities exactly, and
    explanations and calibration read them like any model's logits.
    """
    probs = softmax64(encoder_logits)
    if text_weight and text_probs is not None:
        probs = (1 - text_weight) * probs + text_weight * text_probs
    return np.log(np.maximum(probs, np.finfo(np.float64).tiny))


class MeanPoolClassifier(torch.nn.Module):
    """Encoder -> masked mean of the last hidden states -> L2 normalisation -> linear head (class logits)."""

    def __init__(self, encoder: torch.nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings as e5 was trained to give them (training fits the head on these)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return torch.nn.functional.normalize(pooled.float(), dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> torch.Tensor:
        return self.head(self.embed(input_ids, attention_mask))

    @classmethod
    def from_folder(cls, folder: Path, labels: int | None = None, dtype=torch.float32, device: str = "cpu"):
        """The encoder of `folder` with its head file, or with a zero head of `labels` rows (for training)."""
        from safetensors.torch import load_file
        from transformers import AutoModel

        encoder = AutoModel.from_pretrained(folder, add_pooling_layer=False).to(dtype)
        if labels is None:
            head = load_file(str(folder / HEADS_FILE))
            weight, bias = head["weight"].float(), head["bias"].float()
        else:
            weight, bias = torch.zeros(labels, encoder.config.hidden_size), torch.zeros(labels)
        return cls(encoder, weight, bias).to(device).eval()


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
        self.coef = weights["coef"].astype(np.float64)  # (labels, features)
        # (features, labels), contiguous: multiplying by `coef.T` made scipy copy the whole matrix per call
        # (0.85 of 2.4 ms for a single message).
        self.coef_t = np.ascontiguousarray(self.coef.T)
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
