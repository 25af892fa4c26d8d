"""bf16 on the torch backend: agreement with fp32, the training-time accuracy gate, and what `auto` picks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from service.model import torch_backend
from service.model.folder import read_sidecar, write_sidecar
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


def with_bf16_gate(folder: Path, tmp_path: Path, accepted: bool) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    sidecar = read_sidecar(copy)
    sidecar.precision = {"bf16": {**sidecar.precision["bf16"], "accepted": accepted}}
    write_sidecar(copy, sidecar)
    return copy


@pytest.mark.parametrize(
    ("accepted", "native", "expected"),
    [(True, True, torch.bfloat16), (True, False, torch.float32), (False, True, torch.float32)],
)
def test_auto_dtype_on_cpu_is_bf16_only_where_the_gate_passed_and_the_cpu_has_it(
    tiny_model_dir, tmp_path: Path, monkeypatch, accepted: bool, native: bool, expected
) -> None:
    monkeypatch.setattr(torch_backend, "cpu_has_native_bf16", lambda: native)
    backend = load_backend(with_bf16_gate(tiny_model_dir, tmp_path, accepted), device="cpu")
    assert backend.model.dtype == expected
    assert backend.precision == {torch.bfloat16: "bf16", torch.float32: "fp32"}[expected]


def test_a_folder_without_a_gate_record_is_served_in_fp32(tiny_model_dir, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch_backend, "cpu_has_native_bf16", lambda: True)
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    sidecar = read_sidecar(copy)
    sidecar.precision = {}
    write_sidecar(copy, sidecar)
    assert load_backend(copy, device="cpu").model.dtype == torch.float32


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [
        ("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n", True),
        ("flags\t\t: fpu sse avx2 amx_tile amx_bf16 amx_int8\n", True),
        ("Features\t: fp asimd bf16 i8mm\n", True),
        ("flags\t\t: fpu sse avx2 avx512f avx512bw\n", False),  # AVX-512 alone emulates bf16
        ("", False),
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(cpuinfo: str, native: bool) -> None:
    assert torch_backend.cpu_has_native_bf16(cpuinfo) is native


def test_training_recorded_the_bf16_gate(tiny_model_dir) -> None:
    gate = read_sidecar(tiny_model_dir).precision["bf16"]
    metrics = json.loads((tiny_model_dir / "metrics.json").read_text())
    assert set(gate["sets"]) == set(metrics["evaluated"]) and metrics["precision"]["bf16"] == gate
    for figures in gate["sets"].values():
        assert figures["accepted"] == (figures["macro_f1_fp32"] - figures["macro_f1_bf16"] <= 0.01 + 1e-9)
    assert gate["accepted"] == all(s["accepted"] for s in gate["sets"].values())
    assert "bf16 accuracy gate" in (tiny_model_dir / "README.md").read_text()


def test_the_gate_refuses_a_bf16_model_that_loses_more_than_a_point(tiny_model_dir, tiny_data) -> None:
    """Against a reference that is right on every row, the tiny model's bf16 answers lose more than 1 point."""
    from training.precision import check_bf16

    sidecar = read_sidecar(tiny_model_dir)
    rows = [json.loads(line) for line in Path(tiny_data["test"]).read_text(encoding="utf-8").splitlines()]
    texts, truth = [r["text"] for r in rows], np.array([sidecar.labels.index(r["label"]) for r in rows])
    perfect = np.eye(len(sidecar.labels))[truth]
    record = check_bf16(tiny_model_dir, [("test", texts, truth)], {"test": perfect}, sidecar.labels)
    figures = record["sets"]["test"]
    assert figures["macro_f1_fp32"] == 1.0 and figures["macro_f1_bf16"] < 0.99
    assert not figures["accepted"] and not record["accepted"]


def test_unknown_dtype_is_refused(tiny_model_dir) -> None:
    with pytest.raises(KeyError):
        load_backend(tiny_model_dir, device="cpu", dtype="int4")
