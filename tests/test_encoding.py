"""TextEncoder (the `tokenizers` engine and numpy, used by every backend) equals the `transformers` wrapper.

Training tokenises through the wrapper (`truncation=True, max_length=...`); the service encodes and
pads without it for speed. Both must give the same ids, truncation flags and padded batches (the
converted e5 folder is checked the same way in tests/test_e5_base.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from test_e5_base import EDGE, VARIED

from service.model.encoding import TextEncoder

LONG = [
    "jalan rusak " * 80,
    "Dengan hormat, bersama ini kami sampaikan bahwa gaji karyawan belum dibayar tiga bulan. " * 12,
    "a" * 3000,
    "🙏" * 300,
]
TEXTS = VARIED + EDGE + LONG


def wrapper_encode(tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], list[bool]]:
    """What training and `transformers.pipeline` do: the first row per text, and whether it overflowed."""
    ids, truncated = [], []
    for text in texts:
        enc = tokenizer(text, truncation=True, max_length=max_length, return_overflowing_tokens=True)
        ids.append(enc["input_ids"][0])
        truncated.append(len(enc["input_ids"]) > 1)
    return ids, truncated


def assert_same_as_wrapper(encoder: TextEncoder, texts: list[str]) -> None:
    encoded = encoder.encode(texts)
    ids, truncated = wrapper_encode(encoder.tokenizer, [encoder.prefix + t for t in texts], encoder.max_length)
    assert encoded.ids == ids
    assert encoded.truncated == truncated
    assert any(truncated) and not all(truncated)
    assert max(len(row) for row in encoded.ids) == encoder.max_length
    for start in range(0, len(texts), 16):
        batch = encoded.ids[start : start + 16]
        ours = encoder.pad(batch, return_tensors="np")
        theirs = encoder.tokenizer.pad({"input_ids": batch}, return_tensors="np")
        assert set(ours) == set(theirs)
        for name in theirs:
            np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


def test_wordpiece_folder_encodes_and_pads_like_the_wrapper(tiny_model_dir: Path) -> None:
    assert_same_as_wrapper(TextEncoder(tiny_model_dir, max_length=64), TEXTS)


def test_torch_tensors_carry_the_same_values(tiny_model_dir: Path) -> None:
    encoder = TextEncoder(tiny_model_dir, max_length=32)
    batch = encoder.encode(["lampu jalan mati", "halo"]).ids
    pt, np_ = encoder.pad(batch, return_tensors="pt"), encoder.pad(batch, return_tensors="np")
    for name, array in np_.items():
        np.testing.assert_array_equal(pt[name].numpy(), array)
