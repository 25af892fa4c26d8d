"""PyTorch backend: the reference inference path for the service and for evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from service.model.encoding import Encoded, TextEncoder, softmax64
from service.model.folder import read_sidecar
from service.model.heads import MeanPoolClassifier, TfidfHead, TokenIds, combine


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but CUDA is not available")
    return device


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    """Half precision on GPUs; fp32 on CPU unless bf16 is asked for (a measured choice, see bench/)."""
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]


class TorchBackend:
    """Loads a model folder once and runs forwards on one device, never concurrently."""

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "auto",
        num_threads: int | None = None,
        verify_weights: bool = True,
        dtype: str = "auto",
    ) -> None:
        self.model_dir = Path(model_dir)
        self.sidecar = read_sidecar(self.model_dir, verify_weights=verify_weights)
        self.device = pick_device(device)
        if num_threads:
            torch.set_num_threads(num_threads)
        self.encoder = TextEncoder(self.model_dir, self.sidecar.max_length, prefix=self.sidecar.text_prefix)
        self.tokenizer = self.encoder.tokenizer
        self.max_length = self.encoder.max_length
        self.dtype = pick_dtype(dtype, self.device)
        heads = self.sidecar.heads
        self.text_head = TfidfHead(self.model_dir) if heads.get("text_head") else None
        self.text_weight = float(heads.get("text_head", {}).get("weight", 0.0))
        if heads:  # a frozen encoder with saring's heads (service/model/heads.py)
            self.model = MeanPoolClassifier.from_folder(self.model_dir, dtype=self.dtype, device=self.device)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(self.model_dir)
            self.model = model.to(self.dtype).to(self.device).eval()

    def encode(self, texts: Sequence[str]) -> Encoded:
        encoded = self.encoder.encode(texts)
        if self.text_head is not None:  # the text head reads the text once, here; its answer rides with the ids
            text_probs = self.text_head.probabilities(texts)
            encoded.ids = [TokenIds.of(ids, p) for ids, p in zip(encoded.ids, text_probs, strict=True)]
        return encoded

    @torch.inference_mode()
    def logits(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        padded = self.encoder.pad(batch, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in padded.items()}
        out = self.model(**inputs)
        logits = (out if isinstance(out, torch.Tensor) else out.logits).float().cpu().numpy().astype(np.float64)
        return combine(logits, batch, self.text_weight) if self.sidecar.heads else logits

    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        return softmax64(self.logits(batch))
