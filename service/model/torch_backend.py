"""PyTorch backend: the reference inference path for the service and for evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from service.model.encoding import Encoded, TextEncoder, softmax64
from service.model.folder import Sidecar, read_sidecar
from service.model.heads import POOLED_LAYERS, MeanPoolClassifier
from service.model.text_head import TextMix


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but CUDA is not available")
    return device


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies bf16 in hardware (x86 AVX-512-BF16 or AMX, Arm's BF16 extension).

    Without it torch emulates bf16 and runs slower than fp32.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:  # not Linux: stay on fp32
            return False
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return bool({"avx512_bf16", "amx_bf16", "bf16"} & set(value.split()))
    return False


def pick_dtype(dtype: str, device: str, sidecar: Sidecar | None = None) -> torch.dtype:
    """Half precision on GPUs. On CPU fp32, or bf16 where the CPU computes it natively and the folder's
    bf16 accuracy gate passed at training time (saring.json `precision`; training/precision.py)."""
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        accepted = bool(sidecar and sidecar.precision.get("bf16", {}).get("accepted"))
        return torch.bfloat16 if accepted and cpu_has_native_bf16() else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]


class TorchBackend:
    """Loads a model folder once and runs forwards on one device, never concurrently."""

    kind = "torch"

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
        self.dtype = pick_dtype(dtype, self.device, self.sidecar)
        self.precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]
        # A frozen encoder with saring's heads (service/model/heads.py, text_head.py); None for classification folders.
        self.text_mix = TextMix(self.model_dir, self.sidecar.heads) if self.sidecar.heads else None
        if self.text_mix is not None:
            self.model = MeanPoolClassifier.from_folder(
                self.model_dir, dtype=self.dtype, device=self.device, layers=self.sidecar.heads.get(POOLED_LAYERS)
            )
        else:
            model = AutoModelForSequenceClassification.from_pretrained(self.model_dir)
            self.model = model.to(self.dtype).to(self.device).eval()

    def encode(self, texts: Sequence[str]) -> Encoded:
        encoded = self.encoder.encode(texts)
        if self.text_mix is not None:  # the text head reads the texts on the model thread, batched (logits)
            encoded.ids = self.text_mix.attach(encoded.ids, texts)
        return encoded

    @torch.inference_mode()
    def logits(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        padded = self.encoder.pad(batch, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in padded.items()}
        out = self.model(**inputs)
        logits = (out if isinstance(out, torch.Tensor) else out.logits).float().cpu().numpy().astype(np.float64)
        return logits if self.text_mix is None else self.text_mix.mix(logits, batch)

    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        return softmax64(self.logits(batch))
