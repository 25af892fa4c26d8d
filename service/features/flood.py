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
import hashlib
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
# Members of one band bucket compared with a new message: a repeated text fills every one of its 21
# buckets with the same messages, so without a bound one observe compared it with the whole flood
# (3.5 ms at 20,000 copies against 0.15 ms for a unique text). 32 keeps a flood's message within a
# few unique-text costs, and is enough sample for the estimate below.
SAMPLE_PER_BUCKET = 32

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


def band_key_array(sigs: np.ndarray, salt: int = 0) -> np.ndarray:
    """Per signature, one uint64 per band (BANDS columns); two signatures share a key when they agree on
    all rows of that band. A scope's salt (XOR) keeps its keys apart from every other scope's."""
    rows = sigs[:, : BANDS * ROWS].astype(np.uint64).reshape(len(sigs), BANDS, ROWS)
    with np.errstate(over="ignore"):
        keys = (rows * _BAND_WEIGHTS).sum(axis=2)
    return keys ^ np.uint64(salt) if salt else keys


def band_keys(sigs: np.ndarray, salt: int = 0) -> list[list[int]]:
    """band_key_array as Python ints (dictionary keys)."""
    return band_key_array(sigs, salt).tolist()


def scope_of_key(api_key: str) -> str:
    """The flood scope of an API key: a short hash, so neither memory nor Redis key names hold the key."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:16]


def scope_salt(scope: str) -> int:
    """The band-key salt of a scope; 0 for the shared scope ''."""
    return int.from_bytes(hashlib.sha256(scope.encode("utf-8")).digest()[:8], "little") if scope else 0


_NO_SLOTS = np.empty(0, dtype=np.int64)


def near_duplicate_count(
    sig: np.ndarray,
    keys: np.ndarray,
    sizes: np.ndarray,
    positions: np.ndarray,
    bands: np.ndarray,
    cand_sigs: np.ndarray,
    cand_keys: np.ndarray,
    min_agree: int,
) -> tuple[int, np.ndarray]:
    """How many remembered messages are near-duplicates of `sig`, and which candidates are.

    Band b's bucket holds sizes[b] messages; the ones read are the entries (positions[i] into
    cand_sigs/cand_keys, bands[i] == b). With every bucket read whole, the count is exact: the
    candidates whose signatures agree on at least min_agree positions. Otherwise it is a Horvitz-
    Thompson style estimate: a match j lies in |B(j)| of this message's buckets (the bands whose keys
    it shares), so summing 1/|B(j)| over every bucket's matches counts each match once; each
    bucket's sum is its sample's sum scaled by sizes[b] / (entries read of b). A repeated text (every
    match in all 21 buckets) is counted exactly; paraphrased copies are estimated, never below the
    verified matches.
    """
    if not len(cand_sigs):
        return 0, np.zeros(0, dtype=bool)
    matched = (cand_sigs == sig).sum(axis=1) >= min_agree
    exact = int(matched.sum())
    read = np.bincount(bands, minlength=BANDS)
    if np.array_equal(read, sizes):
        return exact, matched
    shared = np.maximum((cand_keys == keys).sum(axis=1), 1)
    weight = np.where(matched, 1.0 / shared, 0.0)
    per_band = np.bincount(bands, weights=weight[positions], minlength=BANDS)
    scale = np.divide(sizes, read, out=np.zeros(BANDS), where=read > 0)
    return max(exact, round(float((per_band * scale).sum()))), matched


class _Bucket:
    """A band bucket of more than one message: how many, and the most recent SAMPLE_PER_BUCKET slots."""

    __slots__ = ("count", "recent")

    def __init__(self, first: int, second: int) -> None:
        self.count = 2
        self.recent = array("q", (first, second))


class FloodDetector:
    """Counts, for each observed text, the remembered near-duplicates seen within the window (in-process)."""

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
        self._salts = np.zeros(max_tracked, dtype=np.uint64)  # each slot's scope, to find its buckets again
        # band -> key -> slot (one message) or a _Bucket: most keys hold one message, a flood's keys many.
        self._buckets: list[dict[int, int | _Bucket]] = [{} for _ in range(BANDS)]
        self._oldest = 0  # ring buffer: slots _oldest .. _oldest+_size-1 (mod max_tracked), in arrival order
        self._size = 0
        self._lock = threading.Lock()
        self._thread: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return self._size

    async def observe_async(self, texts: Sequence[str], scope: str = "") -> list[int]:
        """observe() off the event loop, on the detector's one thread, whatever the call's size. One, not
        the shared pool: under a burst, several threads hashing at once would hold the GIL against the
        model thread and the event loop alike."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="saring-flood")
        return await asyncio.get_running_loop().run_in_executor(self._thread, self.observe, texts, None, scope)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None

    def observe(self, texts: Sequence[str], now: float | None = None, scope: str = "") -> list[int]:
        """Near-duplicate counts for texts arriving now, in order; each is then remembered, so later
        texts of the same call count the earlier ones. Only texts of the same scope are compared."""
        if not texts:
            return []
        salt = scope_salt(scope)
        sigs = signatures(texts)  # outside the lock: the costly part
        keys = band_key_array(sigs, salt)
        now = self.clock() if now is None else now
        counts = []
        for sig, sig_keys in zip(sigs, keys, strict=True):
            # The lock is taken per message: a small call never waits for a large call's whole batch.
            with self._lock:
                self._expire(now)
                counts.append(self._add(sig, sig_keys, salt, now)[1])
        return counts

    def observe_matches(self, text: str, now: float, scope: str = "") -> tuple[int, int, list[int]]:
        """For measurements: the ring slot `text` is remembered in, its count, and the slots of the
        near-duplicates that were compared and matched (all of them while buckets are not sampled)."""
        salt = scope_salt(scope)
        sigs = signatures([text])
        with self._lock:
            self._expire(now)
            return self._add(sigs[0], band_key_array(sigs, salt)[0], salt, now)

    # -- internals (hold the lock) -----------------------------------------------------------
    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        while self._size and self._times[self._oldest] < horizon:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        slot = self._oldest
        keys = band_keys(self._sigs[slot : slot + 1], int(self._salts[slot]))[0]
        for band, key in zip(self._buckets, keys, strict=True):
            held = band[key]
            if isinstance(held, int):
                del band[key]
                continue
            # The oldest slot of all is the oldest of each of its buckets: first in the sample, if still there.
            held.count -= 1
            if held.recent and held.recent[0] == slot:
                del held.recent[0]
            if held.count == 1:
                band[key] = held.recent[-1]  # the newest member is always in the sample
        self._oldest = (self._oldest + 1) % self.max_tracked
        self._size -= 1

    def _add(self, sig: np.ndarray, keys: np.ndarray, salt: int, now: float) -> tuple[int, int, list[int]]:
        if self._size == self.max_tracked:
            self._evict_oldest()  # the cap holds even when the window is long
        key_list = keys.tolist()
        sizes = np.zeros(BANDS, dtype=np.int64)
        entries: list[int] = []  # the bucket members read, band after band
        bands: list[int] = []
        for b, (band, key) in enumerate(zip(self._buckets, key_list, strict=True)):
            held = band.get(key)
            if held is None:
                continue
            if isinstance(held, int):
                sizes[b] = 1
                entries.append(held)
                bands.append(b)
            else:
                sizes[b] = held.count
                entries.extend(held.recent)
                bands.extend([b] * len(held.recent))
        count, matches = 0, []
        if entries:  # the common case is nothing like it remembered
            slots, positions = np.unique(np.array(entries, dtype=np.int64), return_inverse=True)
            cand_sigs = self._sigs[slots]
            count, matched = near_duplicate_count(
                sig,
                keys,
                sizes,
                positions,
                np.array(bands, dtype=np.int64),
                cand_sigs,
                band_key_array(cand_sigs, salt),
                self.min_agree,
            )
            matches = slots[matched].tolist()
        slot = (self._oldest + self._size) % self.max_tracked
        self._sigs[slot] = sig
        self._times[slot] = now
        self._salts[slot] = salt
        for band, key in zip(self._buckets, key_list, strict=True):
            held = band.get(key)
            if held is None:
                band[key] = slot
            elif isinstance(held, int):
                band[key] = _Bucket(held, slot)
            else:
                held.count += 1
                held.recent.append(slot)
                if len(held.recent) > SAMPLE_PER_BUCKET:
                    del held.recent[0]
        self._size += 1
        return slot, count, matches
