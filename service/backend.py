"""The backend seam: what the batcher needs from a model, whatever runs it.

Like text-embeddings-inference's `Backend` trait, handlers and the batcher only see this
protocol; the torch and ONNX Runtime implementations live in their own modules and are imported
lazily, so importing the web layer never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from service.model_folder import Sidecar


@dataclass
class Encoded:
    """Token ids per text (already truncated to the model's max length) and which were cut."""

    ids: list[list[int]]
    truncated: list[bool]


class Backend(Protocol):
    sidecar: Sidecar
    device: str

    def encode(self, texts: Sequence[str]) -> Encoded:
        """Tokenise texts, truncating each to the model's max length."""
        ...

    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """Class probabilities (n, labels) as float64 for a batch of token id lists."""
        ...


def padded_tokens(lengths: Sequence[int]) -> int:
    """What a batch costs the model: every row is padded to the longest one."""
    return max(lengths, default=0) * len(lengths)


def length_sorted_batches(lengths: Sequence[int], max_batch_size: int, max_batch_tokens: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length, bounded by count and padded tokens."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batch: list[int] = []
    for i in order:
        candidate = [*batch, i]
        too_big = padded_tokens([lengths[j] for j in candidate]) > max_batch_tokens
        if batch and (len(candidate) > max_batch_size or too_big):
            yield batch
            batch = [i]
        else:
            batch = candidate
    if batch:
        yield batch


def predict(
    backend: Backend,
    texts: Sequence[str],
    max_batch_size: int = 32,
    max_batch_tokens: int = 8192,
    forward: Callable[[Sequence[Sequence[int]]], np.ndarray] | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, list[bool]]:
    """Probabilities (or what `forward` returns, e.g. logits) for many texts, in input order.

    Goes through the same encode/forward the server uses, in length-sorted batches.
    """
    encoded = backend.encode(texts)
    forward = forward or backend.forward
    out = np.zeros((len(texts), len(backend.sidecar.labels)), dtype=np.float64)
    lengths = [len(ids) for ids in encoded.ids]
    batches = list(length_sorted_batches(lengths, max_batch_size, max_batch_tokens))
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="scoring", unit="batch")
    for batch in batches:
        out[batch] = forward([encoded.ids[i] for i in batch])
    return out, encoded.truncated


def load_backend(
    model_dir: str | Path,
    kind: str = "torch",
    device: str = "auto",
    num_threads: int | None = None,
    verify_weights: bool = True,
    onnx_variant: str = "auto",
    dtype: str = "auto",
) -> Backend:
    """Build the backend named by `kind` ("torch" or "onnx") for a model folder.

    onnx_variant (onnx only): "auto", "fp32" or "int8"; see service/onnx_backend.py.
    """
    if kind == "torch":
        from service.torch_backend import TorchBackend

        return TorchBackend(
            model_dir, device=device, num_threads=num_threads, verify_weights=verify_weights, dtype=dtype
        )
    if kind == "onnx":
        from service.onnx_backend import OnnxBackend

        return OnnxBackend(model_dir, num_threads=num_threads, verify_weights=verify_weights, variant=onnx_variant)
    raise ValueError(f"unknown backend {kind!r}: use 'torch' or 'onnx'")
