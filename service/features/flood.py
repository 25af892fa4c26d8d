"""Flood detection: how many near-identical messages arrived recently (copy-paste campaigns, chain
letters, the same prank from many numbers).

Each text is normalised (case, digits, links, punctuation and emoji do not make a message new),
cut into character 5-grams and summarised by a MinHash signature. A banded LSH index finds the
remembered messages that share a band with it; those whose signatures agree on at least
`similarity` of their positions (an estimate of the 5-gram Jaccard similarity) are its near-
duplicates. Memory is bounded: a ring of at most `max_tracked` messages, each forgotten when it
falls out of the time window or is pushed out by newer ones.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import unicodedata
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SHINGLE_CHARS = 5
NUM_PERM = 64
# 21 bands of 3 rows (63 of the 64 values): pairs at Jaccard 0.5 share a band with p=0.94, at 0.6
# with p=0.99; pairs at 0.3 still do with p=0.44 and are then refused by the full signature.
BANDS = 21
ROWS = 3
MAX_CHARS = 4096  # a near-duplicate is judged on the first 4,096 normalised characters: bounded cost
_PAD = 0x110000  # beyond Unicode: pads a text shorter than one shingle
_CHUNK = 1024  # shingles hashed at once: (shingles x NUM_PERM) uint64 temporaries of 16 MB at most

_URL = re.compile(r"(?:https?://|www\.)\S+|\S+\.(?:com|id|net|org|co|ly|me|io)\b(?:/\S*)?", re.IGNORECASE)
_NOT_LETTER = re.compile(r"[\W\d_]+")  # digits, punctuation, symbols and emoji alike
_REPEATS = re.compile(r"(.)\1{2,}")  # "haloooo" -> "haloo", "wkwkwk" stays

# Fixed seeds: the same text has the same signature in every process (tests, bench, replicas).
_rng = np.random.default_rng(20240917)
_MUL = (_rng.integers(1, 2**63, size=NUM_PERM, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)  # odd
_ADD = _rng.integers(0, 2**63, size=NUM_PERM, dtype=np.uint64)
_POWERS = np.array([pow(1_000_003, i, 2**64) for i in range(SHINGLE_CHARS)], dtype=np.uint64)
_BAND_WEIGHTS = np.array([pow(0x9E3779B1, i, 2**64) for i in range(ROWS)], dtype=np.uint64)


def normalise(text: str) -> str:
    """Casefolded letters and single spaces only: 'PROMO!!! 50rb 👉 bit.ly/x' -> 'promo rb'."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _URL.sub(" ", text)
    text = _NOT_LETTER.sub(" ", text)
    text = _REPEATS.sub(r"\1\1", text)
    return " ".join(text.split())


def _codes(text: str) -> np.ndarray:
    """Code points of the normalised text (its first MAX_CHARS), padded to at least one shingle."""
    normalised = normalise(text)[:MAX_CHARS]
    if not normalised:  # only digits, emoji or links: only an exact repeat is a duplicate
        normalised = "\x00" + " ".join(text.casefold().split())[:MAX_CHARS]
    codes = np.frombuffer(normalised.encode("utf-32-le"), dtype=np.uint32)
    if len(codes) < SHINGLE_CHARS:
        codes = np.concatenate([codes, np.full(SHINGLE_CHARS - len(codes), _PAD, dtype=np.uint32)])
    return codes


def signatures(texts: Sequence[str]) -> np.ndarray:
    """MinHash signatures (len(texts), NUM_PERM) uint32 of raw texts, computed for the whole call at
    once (per-text numpy calls would cost more than the hashing): one 64-bit rolling hash per
    character 5-gram, then multiply-shift hashing per permutation, minimum per text."""
    out = np.empty((len(texts), NUM_PERM), dtype=np.uint32)
    codes = [_codes(t) for t in texts]
    start = 0
    while start < len(codes):  # chunks of at most ~_CHUNK shingles bound the temporary arrays
        stop, shingles = start, 0
        while stop < len(codes) and (stop == start or shingles + len(codes[stop]) <= _CHUNK):
            shingles += len(codes[stop]) - SHINGLE_CHARS + 1
            stop += 1
        out[start:stop] = _signature_chunk(codes[start:stop])
        start = stop
    return out


def _signature_chunk(codes: list[np.ndarray]) -> np.ndarray:
    lengths = np.array([len(c) for c in codes])
    counts = lengths - SHINGLE_CHARS + 1  # shingles per text, each >= 1
    text_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    shingle_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    windows = sliding_window_view(np.concatenate(codes).astype(np.uint64), SHINGLE_CHARS)
    # Only windows that lie inside one text: shingle j of text i starts at text_start[i] + j.
    index = np.arange(counts.sum()) + np.repeat(text_start - shingle_start, counts)
    with np.errstate(over="ignore"):  # arithmetic modulo 2**64 is the point
        hashes = (windows[index] * _POWERS).sum(axis=1)
        permuted = (hashes[:, None] * _MUL[None, :] + _ADD[None, :]) >> np.uint64(32)
    return np.minimum.reduceat(permuted, shingle_start, axis=0).astype(np.uint32)


def signature(text: str) -> np.ndarray:
    """MinHash signature (NUM_PERM uint32) of one raw text."""
    return signatures([text])[0]


def band_keys(sigs: np.ndarray) -> list[list[int]]:
    """Per signature, one integer per band; two signatures share a key when they agree on all rows
    of that band."""
    rows = sigs[:, : BANDS * ROWS].astype(np.uint64).reshape(len(sigs), BANDS, ROWS)
    with np.errstate(over="ignore"):
        return (rows * _BAND_WEIGHTS).sum(axis=2).tolist()


_NO_SLOTS = np.empty(0, dtype=np.int64)


class FloodDetector:
    """Counts, for each observed text, the remembered near-duplicates seen within the window."""

    def __init__(
        self,
        window_s: float = 600.0,
        max_tracked: int = 20_000,
        similarity: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.max_tracked = max_tracked
        self.min_agree = int(np.ceil(similarity * NUM_PERM))
        self.clock = clock
        self._sigs = np.zeros((max_tracked, NUM_PERM), dtype=np.uint32)
        self._times = np.zeros(max_tracked, dtype=np.float64)
        # band -> key -> slot (one message) or slots oldest first (an int64 array, readable by numpy
        # without copying): most keys hold one message, a flood's keys hold thousands.
        self._buckets: list[dict[int, int | array]] = [{} for _ in range(BANDS)]
        self._mark = np.zeros(max_tracked, dtype=bool)  # scratch for the union of candidate slots
        self._oldest = 0  # ring buffer: slots _oldest .. _oldest+_size-1 (mod max_tracked), in arrival order
        self._size = 0
        self._lock = threading.Lock()
        self._thread: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return self._size

    async def observe_async(self, texts: Sequence[str]) -> list[int]:
        """observe() for the event loop: a few texts inline (~0.1 ms each), a larger call on the
        detector's one thread. One, not the shared pool: under a burst, several threads hashing at
        once would hold the GIL against the model thread and the event loop alike."""
        if len(texts) <= 8:
            return self.observe(texts)
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="saring-flood")
        return await asyncio.get_running_loop().run_in_executor(self._thread, self.observe, texts)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None

    def observe(self, texts: Sequence[str], now: float | None = None) -> list[int]:
        """Near-duplicate counts for texts arriving now, in order; each is then remembered, so later
        texts of the same call count the earlier ones."""
        if not texts:
            return []
        sigs = signatures(texts)  # outside the lock: the costly part
        keys = band_keys(sigs)
        now = self.clock() if now is None else now
        counts = []
        for sig, sig_keys in zip(sigs, keys, strict=True):
            # The lock is taken per message: the event loop, observing a small call, never waits
            # for a large call's whole batch on a worker thread.
            with self._lock:
                self._expire(now)
                counts.append(len(self._add(sig, sig_keys, now)[1]))
        return counts

    def observe_matches(self, text: str, now: float) -> tuple[int, list[int]]:
        """For measurements: the ring slot `text` is remembered in, and the slots of its near-duplicates."""
        sigs = signatures([text])
        with self._lock:
            self._expire(now)
            return self._add(sigs[0], band_keys(sigs)[0], now)

    # -- internals (hold the lock) -----------------------------------------------------------
    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        while self._size and self._times[self._oldest] < horizon:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        slot = self._oldest
        for band, key in zip(self._buckets, band_keys(self._sigs[slot : slot + 1])[0], strict=True):
            held = band[key]
            if isinstance(held, int):
                del band[key]
            else:
                held.pop(0)  # the oldest slot is first: slots enter buckets in arrival order
                if len(held) == 1:
                    band[key] = held[0]
        self._oldest = (self._oldest + 1) % self.max_tracked
        self._size -= 1

    def _candidates(self, keys: list[int]) -> np.ndarray:
        """Slots sharing at least one band key, each once (the numpy views die with this call:
        they pin the bucket arrays, which must be free to grow afterwards)."""
        parts = []
        for band, key in zip(self._buckets, keys, strict=True):
            held = band.get(key)
            if held is not None:
                parts.append(np.array([held]) if isinstance(held, int) else np.frombuffer(held, dtype=np.int64))
        if not parts:  # the common case: nothing like it remembered
            return _NO_SLOTS
        for part in parts:
            self._mark[part] = True
        slots = np.flatnonzero(self._mark)
        for part in parts:
            self._mark[part] = False
        return slots

    def _add(self, sig: np.ndarray, keys: list[int], now: float) -> tuple[int, list[int]]:
        if self._size == self.max_tracked:
            self._evict_oldest()  # the cap holds even when the window is long
        slots = self._candidates(keys)
        matches: list[int] = []
        if len(slots):
            agree = (self._sigs[slots] == sig).sum(axis=1)
            matches = slots[agree >= self.min_agree].tolist()
        slot = (self._oldest + self._size) % self.max_tracked
        self._sigs[slot] = sig
        self._times[slot] = now
        for band, key in zip(self._buckets, keys, strict=True):
            held = band.get(key)
            if held is None:
                band[key] = slot
            elif isinstance(held, int):
                band[key] = array("q", (held, slot))
            else:
                held.append(slot)
        self._size += 1
        return slot, matches
