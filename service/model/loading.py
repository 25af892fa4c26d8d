"""Build a backend for a model folder, and score many texts offline through the service's own path.

Training, evaluation, export and the benchmarks call `predict`, so their figures come from the same
encode/forward the API runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from service.model.backend import Backend
from service.model.batching import length_sorted_batches
from service.settings import default_of


def predict(
    backend: Backend,
    texts: Sequence[str],
    max_batch_size: int = default_of("max_batch_size"),
    max_batch_tokens: int = default_of("max_batch_tokens"),
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

    onnx_variant (onnx only): "auto", "fp32" or "int8"; see service/model/onnx_backend.py.
    """
    if kind == "torch":
        from service.model.torch_backend import TorchBackend

        return TorchBackend(
            model_dir, device=device, num_threads=num_threads, verify_weights=verify_weights, dtype=dtype
        )
    if kind == "onnx":
        from service.model.onnx_backend import OnnxBackend

        return OnnxBackend(model_dir, num_threads=num_threads, verify_weights=verify_weights, variant=onnx_variant)
    raise ValueError(f"unknown backend {kind!r}: use 'torch' or 'onnx'")
