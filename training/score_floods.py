"""Near-duplicate clusters over a whole backlog (`python -m training score --floods`).

The service counts, per message, the near-duplicates seen in a recent window; a backlog has no
window, so here each row gets the size of its cluster over the whole backlog: the rows linked to
it by near-duplicate pairs, itself included (1: a unique message). Text normalisation, MinHash
signatures and LSH band keys are the service's own (`service/features/flood.py`), so a desk sees
the same copy-paste campaigns offline as live.

Pairs are found band by band: rows sharing a band key are candidates, and a candidate joins a row
when their signatures agree on at least `similarity` of positions (the service's rule). Clusters are
the connected components of those pairs (scipy). Memory: one signature (256 bytes) and the band keys
(168 bytes) per row, about 420 MB per million rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from service.features.flood import NUM_PERM, band_keys, signatures
from service.settings import default_of

# In one bucket, rows are compared with a representative; those that do not match it try the next
# one. A bucket of unrelated rows that share a band by chance stops after this many representatives
# (their other bands still link them): bounded work on an adversarial backlog.
MAX_REPRESENTATIVES = 32


class BacklogFloods:
    """Collects signatures of the rows of a backlog in order, then sizes their clusters."""

    def __init__(self, similarity: float = default_of("flood_similarity")) -> None:
        self.min_agree = math.ceil(similarity * NUM_PERM)
        self._sigs: list[np.ndarray] = []
        self._keys: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []  # which backlog rows the signatures belong to
        self._seen = 0

    def add(self, texts: Sequence[str | None]) -> None:
        """The next rows of the backlog; None for a row that has no usable text (it gets no cluster)."""
        present = [i for i, text in enumerate(texts) if text is not None]
        if present:
            sigs = signatures([texts[i] for i in present])
            self._sigs.append(sigs)
            self._keys.append(np.array(band_keys(sigs), dtype=np.uint64))
            self._rows.append(np.asarray(present, dtype=np.int64) + self._seen)
        self._seen += len(texts)

    def cluster_sizes(self) -> list[int | None]:
        """Per backlog row, the size of its near-duplicate cluster (None for rows without text)."""
        out: list[int | None] = [None] * self._seen
        if not self._sigs:
            return out
        sigs = np.concatenate(self._sigs)
        keys = np.concatenate(self._keys)
        rows = np.concatenate(self._rows)
        n = len(sigs)
        labels = np.arange(n)
        for band in range(keys.shape[1]):
            sources, targets = self._band_pairs(keys[:, band], sigs)
            if not len(sources):
                continue
            # This band's pairs plus each row's link to its component so far (one node standing for
            # each component), so the edge list never grows past n plus one band's pairs.
            _, first = np.unique(labels, return_index=True)
            sources = np.concatenate([sources, np.arange(n)])
            targets = np.concatenate([targets, first[labels]])
            graph = coo_matrix((np.ones(len(sources), dtype=np.int8), (sources, targets)), shape=(n, n))
            _, labels = connected_components(graph, directed=False)
        sizes = np.bincount(labels)[labels]
        for row, size in zip(rows.tolist(), sizes.tolist(), strict=True):
            out[row] = size
        return out

    def _band_pairs(self, keys: np.ndarray, sigs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        ends = np.append(starts[1:], len(order))
        sources: list[np.ndarray] = []
        targets: list[np.ndarray] = []
        for start, end in zip(starts[ends - starts > 1].tolist(), ends[ends - starts > 1].tolist(), strict=True):
            remaining = order[start:end]
            for _ in range(MAX_REPRESENTATIVES):
                if len(remaining) < 2:
                    break
                rep, rest = remaining[0], remaining[1:]
                match = (sigs[rest] == sigs[rep]).sum(axis=1) >= self.min_agree
                sources.append(np.full(int(match.sum()), rep))
                targets.append(rest[match])
                remaining = rest[~match]
        if not sources:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        return np.concatenate(sources), np.concatenate(targets)
