"""The bf16 accuracy gate: may the service run this folder in bf16 on a CPU that computes bf16 natively?

On such CPUs (AVX-512-BF16 or AMX) bf16 forwards run 1.6-1.7x faster than fp32 (bench/fast_path.py).
Every set the run evaluated (held-out writers, the written test, the independent writers, real public
data when given) is scored again in bf16; bf16 is accepted only when no set's macro-F1 drops by more
than `MAX_F1_DROP`, the rule the ONNX int8 export uses. The record goes to saring.json's `precision`
field, which `SARING_DTYPE=auto` reads (service/model/torch_backend.py: pick_dtype).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.model.loading import predict
from service.model.torch_backend import TorchBackend
from training.metrics import MAX_F1_DROP, classification_figures, within_f1_drop


def check_bf16(
    folder: Path,
    sets: Sequence[tuple[str, Sequence[str], np.ndarray]],
    fp32: Mapping[str, np.ndarray],
    labels: Sequence[str],
    device: str = "cpu",
    max_drop: float = MAX_F1_DROP,
) -> dict[str, Any]:
    """`sets`: (name, texts, label ids); `fp32`: each set's fp32 probabilities. Returns the sidecar record."""
    backend = TorchBackend(folder, device=device, verify_weights=False, dtype="bf16")
    record: dict[str, Any] = {"max_f1_drop": max_drop, "sets": {}}
    for name, texts, y_true in sets:
        bf16, _ = predict(backend, texts)
        reference = fp32[name]
        f1_fp32 = classification_figures(y_true, reference.argmax(1), labels)["macro_f1"]
        f1_bf16 = classification_figures(y_true, bf16.argmax(1), labels)["macro_f1"]
        record["sets"][name] = {
            "rows": len(texts),
            "macro_f1_fp32": round(float(f1_fp32), 6),
            "macro_f1_bf16": round(float(f1_bf16), 6),
            "same_top_label": round(float((bf16.argmax(1) == reference.argmax(1)).mean()), 6),
            "max_abs_diff": round(float(np.abs(bf16 - reference).max()), 6),
            "accepted": within_f1_drop(f1_fp32, f1_bf16, max_drop),
        }
    record["accepted"] = bool(record["sets"]) and all(s["accepted"] for s in record["sets"].values())
    return record
