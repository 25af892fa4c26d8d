"""The torch backend's bf16 option agrees with fp32 within a stated tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.model.loading import load_backend, predict

TEXTS = [
    "jalan di desa bandung rusak parah mohon diperbaiki",
    "slot gacor hari ini maxwin link daftar bonus",
    "mas wapres tolong carikan jodoh buat saya",
    "terima kasih laporan saya sudah ditanggapi",
    "🙏🙏🙏",
    "lapor ada pungli di kantor kelurahan medan mohon ditindak " * 20,
]
# bf16 keeps 8 bits of mantissa: a tiny model's probabilities move by well under this.
BF16_TOLERANCE = 0.05


def test_bf16_matches_fp32(tiny_model_dir) -> None:
    fp32 = load_backend(tiny_model_dir, device="cpu", dtype="fp32")
    bf16 = load_backend(tiny_model_dir, device="cpu", dtype="bf16")
    assert fp32.model.dtype == torch.float32 and bf16.model.dtype == torch.bfloat16
    p32, t32 = predict(fp32, TEXTS)
    p16, t16 = predict(bf16, TEXTS)
    assert t32 == t16
    assert np.abs(p32 - p16).max() < BF16_TOLERANCE
    assert (p32.argmax(axis=1) == p16.argmax(axis=1)).all()
    assert np.allclose(p16.sum(axis=1), 1.0)


def test_auto_dtype_is_fp32_on_cpu(tiny_model_dir) -> None:
    assert load_backend(tiny_model_dir, device="cpu").model.dtype == torch.float32


def test_unknown_dtype_is_refused(tiny_model_dir) -> None:
    with pytest.raises(KeyError):
        load_backend(tiny_model_dir, device="cpu", dtype="int4")
