"""A frozen pretrained encoder with a linear head: the encoder half of the default model.

Measured on writers the training never saw (`python -m bench.transfer`): TF-IDF word+char n-grams
with logistic regression transfer better than any model fine-tuned here, and the mean of their
probabilities with a linear head on frozen multilingual-e5-small sentence embeddings beats both.
`MeanPoolClassifier` is that encoder half: the encoder (a `save_pretrained` BertModel folder),
masked mean pooling, L2 normalisation (as e5 was trained), then `heads.safetensors` (weight, bias):
class logits. The TF-IDF half and the mixing live in `service/model/text_head.py`, without torch,
so the ONNX backend (which serves the exported encoder half) mixes them the same way.
`transformers.pipeline` alone cannot reproduce the folder (it would put a random classifier on the
encoder): the model card says so, and bench/naive.py rebuilds it from a feature-extraction pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

HEADS_FILE = "heads.safetensors"
HEAD_KINDS = ("mean_pool_linear",)


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
