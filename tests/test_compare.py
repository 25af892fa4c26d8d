"""`python -m training compare`: side-by-side figures and decision moves, checked against an independent count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from service_fixtures import copy_model_dir
from training_fixtures import read_jsonl, write_jsonl

from service.model.loading import load_backend, predict
from training.__main__ import main

# Messages that land all over the validity range: templates, mixtures of two classes, greetings.
MIXED = [
    {"text": "selamat pagi admin jalan rusak parah salam hangat dari medan", "label": "aduan"},
    {"text": "selamat pagi admin slot gacor salam hangat dari medan", "label": "spam"},
    {"text": "selamat pagi admin ada pungli di kantor kelurahan", "label": "aduan"},
    {"text": "terima kasih laporan saya sudah ditanggapi slot gacor maxwin", "label": "spam"},
    {"text": "banjir di rumah saya tolong carikan jodoh", "label": "iseng"},
    {"text": "listrik pln padam salam hangat", "label": "aduan"},
    {"text": "bansos tidak cair hubungi wa bonus", "label": "aduan"},
    {"text": "tes tes ini nomor lapor ya min", "label": "bukan_aduan"},
    {"text": "rumah sakit menolak pasien wkwk canda", "label": "iseng"},
    {"text": "pinjaman dana cepat cair mohon diperbaiki", "label": "spam"},
]


@pytest.fixture(scope="module")
def data(tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = read_jsonl(tiny_data["test"]) + MIXED
    return write_jsonl(rows, tmp_path_factory.mktemp("compare") / "data.jsonl")


@pytest.fixture(scope="module")
def validity(tiny_model_dir: Path, data: Path) -> np.ndarray:
    """P(aduan) of every message, from the tiny folder through the service's inference code."""
    backend = load_backend(tiny_model_dir, device="cpu")
    probs, _ = predict(backend, [r["text"] for r in read_jsonl(data)])
    return probs[:, backend.sidecar.labels.index("aduan")]


def thresholds_between(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """(reject, accept) halfway between distinct validities near the given quantiles: no message sits on one."""
    distinct = np.unique(values)
    assert len(distinct) >= 6, distinct

    def cut(q: float) -> float:
        i = min(max(int(q * (len(distinct) - 1)), 0), len(distinct) - 2)
        return float((distinct[i] + distinct[i + 1]) / 2)

    return cut(low), cut(high)


def band(v: np.ndarray, reject: float, accept: float) -> np.ndarray:
    return np.where(v >= accept, "accept", np.where(v <= reject, "reject", "review"))


def run_compare(a: Path, b: Path, data: Path, out: Path) -> dict:
    argv = ["compare", "--models", str(a), str(b), "--data", str(data), "--output", str(out), "--device", "cpu"]
    assert main(argv) == 0
    return json.loads((out / "compare.json").read_text(encoding="utf-8"))


def test_transitions_match_an_independent_count(
    tiny_model_dir: Path, data: Path, validity: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # A: a wide review band in the middle; B: a stricter model that rejects more and accepts less.
    reject_a, accept_a = thresholds_between(validity, 0.2, 0.6)
    reject_b, accept_b = thresholds_between(validity, 0.7, 0.9)
    assert reject_b > accept_a  # some of A's accepts fall into B's reject band
    a = copy_model_dir(tiny_model_dir, tmp_path / "a", reject=reject_a, accept=accept_a)
    b = copy_model_dir(tiny_model_dir, tmp_path / "b", reject=reject_b, accept=accept_b)
    result = run_compare(a, b, data, tmp_path / "out")

    before, after = band(validity, reject_a, accept_a), band(validity, reject_b, accept_b)
    expected = {
        x: {y: int(((before == x) & (after == y)).sum()) for y in ("accept", "review", "reject")}
        for x in ("accept", "review", "reject")
    }
    assert result["transitions"] == expected
    assert result["accept_to_reject"] == int(((before == "accept") & (after == "reject")).sum()) > 0
    assert result["reject_to_accept"] == 0  # B is stricter everywhere
    assert result["changed"] == int((before != after).sum())
    assert result["n"] == len(validity) == sum(sum(row.values()) for row in expected.values())
    genuine = np.array([r["label"] == "aduan" for r in read_jsonl(data)])
    assert result["aduan_newly_rejected"] == int((genuine & (before != after) & (after == "reject")).sum())

    # Same weights, same data: the classification figures agree; the band figures follow the thresholds.
    fig_a, fig_b = result["models"]["A"], result["models"]["B"]
    assert fig_a["macro_f1"] == fig_b["macro_f1"]
    assert fig_a["decision_band"]["accept_rate"] == pytest.approx(float((before == "accept").mean()))
    assert fig_b["decision_band"]["reject_rate"] == pytest.approx(float((after == "reject").mean()))
    assert fig_a["thresholds"]["accept"] == pytest.approx(accept_a)

    printed = capsys.readouterr().out
    assert f"accept -> reject: {result['accept_to_reject']}" in printed
    assert "decisions (rows: A, columns: B)" in printed and "macro-F1" in printed

    # Swapped, every move runs backwards: the matrix is transposed.
    swapped = run_compare(b, a, data, tmp_path / "out-swapped")
    assert swapped["reject_to_accept"] == result["accept_to_reject"]
    for x, row in result["transitions"].items():
        for y, count in row.items():
            assert swapped["transitions"][y][x] == count


def test_compare_needs_exactly_two_models(tiny_model_dir: Path, data: Path, tmp_path: Path, capsys) -> None:
    argv = ["compare", "--models", str(tiny_model_dir), "--data", str(data), "--output", str(tmp_path)]
    assert main(argv) == 2  # a user's mistake: one line, no traceback
    assert "two folders" in capsys.readouterr().err
