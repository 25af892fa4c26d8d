"""The check batch: written messages of every category, scored by a model before it may serve.

A folder can pass every file check (config, sidecar, weights checksum) and still be broken: weights
overwritten with random bytes and the checksum recomputed load without complaint, then answer NaN
for every message, which the API showed as a null score with decision `review`. So loading and
reloading score these texts first and refuse a model whose outputs are not probabilities, and the
batcher applies the same test (`output_problem`) to every forward it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from service.model.folder import ModelFolderError

if TYPE_CHECKING:  # the protocol module is light, but the check needs only its shape
    from service.model.backend import Backend

# How far a row's sum may stray from 1: float64 softmax is exact to ~1e-15; bf16 logits still give
# exact float64 sums, so anything near this bound means the numbers are not a distribution at all.
SUM_TOLERANCE = 1e-6

# Short and long, plain and messy (emoji, links, digits), so the batch is padded like real traffic.
CHECK_TEXTS: dict[str, list[str]] = {
    "aduan": [
        "Assalamualaikum, jalan di desa kami rusak parah sudah tiga bulan, mohon segera diperbaiki",
        "Lampu PJU di Jl. Merdeka mati semua sejak minggu lalu, rawan begal kalau malam. Tolong dicek "
        "petugasnya pak, warga RT 04 sudah lapor ke kelurahan tapi belum ada tindakan sama sekali.",
    ],
    "bukan_aduan": [
        "Selamat pagi admin, terima kasih atas pelayanannya",
        "jam buka kantor kecamatan hari sabtu sampai jam berapa ya?",
    ],
    "iseng": [
        "min tolong carikan jodoh buat saya dong 😂😂",
        "tes tes 123 masuk ga nih",
    ],
    "spam": [
        "SLOT GACOR hari ini maxwin 💰 daftar sekarang di bit.ly/gacor88 bonus new member 100%",
        "Pinjaman online cair 5 menit tanpa jaminan, hubungi WA admin sekarang juga!!!",
    ],
}


class ModelOutputError(ModelFolderError):
    """The model loads, but what it answers for real text is not a probability distribution."""


def output_problem(probs: np.ndarray, rows: int | None = None) -> str | None:
    """What is wrong with a (rows, labels) probability matrix, or None when every row is a distribution."""
    probs = np.asarray(probs)
    if probs.ndim != 2 or (rows is not None and probs.shape[0] != rows):
        return f"expected {rows if rows is not None else 'n'} rows of class probabilities, got shape {probs.shape}"
    finite = np.isfinite(probs).all(axis=1)
    if not finite.all():
        return f"{int((~finite).sum())} of {len(probs)} rows are not finite (NaN or infinity)"
    if (probs < 0).any() or (probs > 1).any():
        return "probabilities outside [0, 1]"
    sums = probs.sum(axis=1)
    off = np.abs(sums - 1.0) > SUM_TOLERANCE
    if off.any():
        return f"{int(off.sum())} of {len(probs)} rows do not sum to 1 (one sums to {sums[off][0]:.6g})"
    return None


def check_model(backend: Backend) -> None:
    """Score the check batch, and one message alone, with `backend`; raise ModelOutputError if either is wrong."""
    texts = [text for texts in CHECK_TEXTS.values() for text in texts]
    encoded = backend.encode(texts)
    for batch in (encoded.ids, encoded.ids[:1]):  # padded batch, and a batch of one without padding
        problem = output_problem(backend.forward(batch), rows=len(batch))
        if problem:
            where = getattr(backend, "model_dir", "the model")
            raise ModelOutputError(
                f"{where}: refused, its answers to {len(batch)} written check messages are not probabilities: {problem}"
            )
