"""A frozen pretrained encoder with a linear head: the encoder half of the default model.

Measured on writers the training never saw (`python -m bench.transfer`): TF-IDF word+char n-grams
with logistic regression transfer better than any model fine-tuned here, and the mean of their
probabilities with a linear head on frozen multilingual-e5-small sentence embeddings beats both.
`MeanPoolClassifier` is that encoder half: the encoder (a `save_pretrained` BertModel folder),
masked mean pooling, L2 normalisation (as e5 was trained), then `heads.safetensors` (weight, bias):
class logits. It may pool several layers (the sidecar's `heads.pooled_layers`), each pooled and
normalised alone, then concatenated: a head on several layers transferred better to unseen writers
than on the last alone, at every TF-IDF weight measured (README "The default model"). The TF-IDF
half and the mixing live in `service/model/text_head.py`, without torch,
so the ONNX backend (which serves the exported encoder half) mixes them the same way.
`transformers.pipeline` alone cannot reproduce the folder (it would put a random classifier on the
encoder): the model card says so, and bench/naive.py rebuilds it from the folder's files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from service.model.folder import ModelFolderError

HEADS_FILE = "heads.safetensors"
HEAD_KINDS = ("mean_pool_linear",)


POOLED_LAYERS = "pooled_layers"  # key of the sidecar's heads record: the hidden states the head reads


def pooled_layers(layers: Sequence[int] | None, num_hidden_layers: int) -> list[int]:
    """The hidden states a head reads (0 = the embeddings): the given ones, else the last (older folders)."""
    return list(layers or [num_hidden_layers])


class MeanPoolClassifier(torch.nn.Module):
    """Encoder -> masked mean of each pooled layer's states -> L2 normalisation each -> concatenated -> linear head."""

    def __init__(
        self, encoder: torch.nn.Module, weight: torch.Tensor, bias: torch.Tensor, layers: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        self.encoder = encoder
        depth = encoder.config.num_hidden_layers
        self.layers = pooled_layers(layers, depth)
        if any(type(layer) is not int or not 0 <= layer <= depth for layer in self.layers):
            raise ModelFolderError(f"pooled layers {self.layers}: the encoder has hidden states 0..{depth}")
        width = encoder.config.hidden_size * len(self.layers)
        if weight.shape[1] != width:
            raise ModelFolderError(
                f"the head reads {weight.shape[1]} features, but pooling layers {self.layers} gives {width}"
            )
        self.head = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings as e5 was trained to give them (training fits the head on these)."""
        last_only = self.layers == [self.encoder.config.num_hidden_layers]
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=not last_only)
        states = [out.last_hidden_state] if last_only else [out.hidden_states[layer] for layer in self.layers]
        mask = attention_mask.unsqueeze(-1).to(states[0].dtype)
        count = mask.sum(dim=1).clamp(min=1)
        pooled = [torch.nn.functional.normalize(((h * mask).sum(dim=1) / count).float(), dim=-1) for h in states]
        return pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> torch.Tensor:
        return self.head(self.embed(input_ids, attention_mask))

    @classmethod
    def from_folder(
        cls,
        folder: Path,
        labels: int | None = None,
        dtype=torch.float32,
        device: str = "cpu",
        layers: Sequence[int] | None = None,
    ):
        """The encoder of `folder` with its head file, or with a zero head of `labels` rows (for training).

        `layers`: the hidden states to pool (the sidecar's heads record, POOLED_LAYERS); None: the last one.
        """
        from safetensors.torch import load_file
        from transformers import AutoModel

        encoder = AutoModel.from_pretrained(folder, add_pooling_layer=False).to(dtype)
        if labels is None:
            head = load_file(str(folder / HEADS_FILE))
            weight, bias = head["weight"].float(), head["bias"].float()
        else:
            width = encoder.config.hidden_size * len(pooled_layers(layers, encoder.config.num_hidden_layers))
            weight, bias = torch.zeros(labels, width), torch.zeros(labels)
        return cls(encoder, weight, bias, layers).to(device).eval()
