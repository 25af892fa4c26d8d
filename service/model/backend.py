"""The backend seam: what the batcher and the offline tools need from a model, whatever runs it.

Like text-embeddings-inference's `Backend` trait, the batcher, the explainer and training only see
this protocol; the torch and ONNX Runtime implementations live in their own modules and are built by
`service.model.loading.load_backend`, lazily, so importing the web layer never imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from service.model.folder import Sidecar

if TYPE_CHECKING:  # encoding imports transformers; the web layer must not
    from service.model.encoding import Encoded


class Backend(Protocol):
    sidecar: Sidecar
    device: str
    kind: str  # torch or onnx: what runs the network
    precision: str  # what the forward computes in: fp32, bf16, fp16 (torch); fp32, int8 (ONNX)

    def encode(self, texts: Sequence[str]) -> Encoded:
        """Normalise and tokenise texts, truncating each to the model's max length."""
        ...

    def logits(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """Raw class scores (n, labels) as float64 for a batch of token id lists."""
        ...

    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """Class probabilities (n, labels) as float64 for a batch of token id lists."""
        ...
