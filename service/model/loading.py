"""Build a backend for a model folder, and score many texts offline through the service's own path.

Training, evaluation, export and the benchmarks call `predict`, so their figures come from the same
encode/forward the API runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from service.model.backend import Backend
from service.model.batching import batch_tokens_for, length_sorted_batches
from service.model.folder import read_sidecar
from service.settings import default_of


def predict(
    backend: Backend,
    texts: Sequence[str],
    max_batch_size: int = default_of("max_batch_size"),
    max_batch_tokens: int | None = None,
    forward: Callable[[Sequence[Sequence[int]]], np.ndarray] | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, list[bool]]:
    """Probabilities (or what `forward` returns, e.g. logits) for many texts, in input order.

    Goes through the same encode/forward the server uses, in length-sorted batches; `max_batch_tokens`
    None takes the backend device's default.
    """
    encoded = backend.encode(texts)
    forward = forward or backend.forward
    out = np.zeros((len(texts), len(backend.sidecar.labels)), dtype=np.float64)
    lengths = [len(ids) for ids in encoded.ids]
    budget = batch_tokens_for(backend.device, max_batch_tokens)
    batches = list(length_sorted_batches(lengths, max_batch_size, budget))
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="scoring", unit="batch")
    for batch in batches:
        out[batch] = forward([encoded.ids[i] for i in batch])
    return out, encoded.truncated


def pick_kind(model_dir: str | Path, device: str = "auto") -> str:
    """onnx on CPU when the folder records an accepted int8 export of its current weights, else torch.

    int8 is only recorded after its macro-F1 gate passed (`python -m training export --int8 --data`;
    `make model` runs it on real data). An fp32-only export is not faster than torch bf16, and
    ONNX Runtime here is CPU-only, so everything else goes to torch.
    """
    if device.startswith("cuda") or (device == "auto" and _cuda_available()):
        return "torch"
    sidecar = read_sidecar(model_dir, verify_weights=False)
    return "onnx" if "int8" in sidecar.onnx and sidecar.onnx_matches_weights() else "torch"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def load_backend(
    model_dir: str | Path,
    kind: str = "torch",
    device: str = "auto",
    num_threads: int | None = None,
    verify_weights: bool = True,
    onnx_variant: str = "auto",
    dtype: str = "auto",
) -> Backend:
    """Build the backend named by `kind` ("auto", "torch" or "onnx") for a model folder.

    onnx_variant (onnx only): "auto", "fp32" or "int8"; see service/model/onnx_backend.py.
    """
    if kind == "auto":
        kind = pick_kind(model_dir, device)
    if kind == "torch":
        from service.model.torch_backend import TorchBackend

        return TorchBackend(
            model_dir, device=device, num_threads=num_threads, verify_weights=verify_weights, dtype=dtype
        )
    if kind == "onnx":
        from service.model.onnx_backend import OnnxBackend

        return OnnxBackend(model_dir, num_threads=num_threads, verify_weights=verify_weights, variant=onnx_variant)
    raise ValueError(f"unknown backend {kind!r}: use 'torch' or 'onnx'")
