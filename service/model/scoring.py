"""The scoring vocabulary, defined once (docs/design.md sections 1 and 3).

From class probabilities to the two scores (`validity`, `spam`) and the decision band. The service,
`training train` (threshold choice), `evaluate`, `compare` and the model card all use these names
and this rule, so what an evaluation reports is exactly what the API would answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ACCEPT, REVIEW, REJECT = "accept", "review", "reject"
DECISIONS = (ACCEPT, REVIEW, REJECT)
# The sidecar's thresholds: accept and reject bound the decision band on validity; spam sets is_spam.
THRESHOLDS = ("accept", "reject", "spam")
# The two scores; a model folder names which of its labels add up to each.
SCORES = ("validity", "spam")


@dataclass(frozen=True)
class Score:
    validity: float
    spam: float
    category: str
    probabilities: dict[str, float]
    decision: str
    is_spam: bool


def decide(validity: np.ndarray, accept_threshold: float, reject_threshold: float) -> np.ndarray:
    """accept when validity >= accept; else reject when validity <= reject; else review (vectorised)."""
    validity = np.asarray(validity, dtype=np.float64)
    return np.where(
        validity >= accept_threshold, ACCEPT, np.where(validity <= reject_threshold, REJECT, REVIEW)
    ).astype(object)


def decision_counts(decisions: Sequence[str]) -> dict[str, int]:
    """How many of each decision, every decision present (zeros included)."""
    counts = dict.fromkeys(DECISIONS, 0)
    for decision in decisions:
        counts[decision] += 1
    return counts


def score_columns(
    probs: np.ndarray, labels: Sequence[str], scores: Mapping[str, Sequence[str]]
) -> dict[str, np.ndarray]:
    """{"validity": ..., "spam": ...} for every row of a (n, labels) probability matrix.

    `scores` maps each score to the labels that add up to it (a sidecar's `scores`).
    """
    index = {label: i for i, label in enumerate(labels)}
    return {name: probs[:, [index[label] for label in scores[name]]].sum(axis=1) for name in SCORES}


def score_rows(probs: np.ndarray, sidecar) -> list[Score]:
    """One `Score` per row, with the sidecar's labels, score definitions and thresholds."""
    columns = score_columns(probs, sidecar.labels, sidecar.scores)
    validity = np.minimum(columns["validity"], 1.0)  # float sums can overshoot 1 by an ulp
    spam = np.minimum(columns["spam"], 1.0)
    decisions = decide(validity, sidecar.accept.value, sidecar.reject.value)
    best = probs.argmax(axis=1)
    return [
        Score(
            validity=float(v),
            spam=float(s),
            category=sidecar.labels[int(b)],
            probabilities={label: float(p) for label, p in zip(sidecar.labels, row, strict=True)},
            decision=str(d),
            is_spam=bool(s >= sidecar.spam.value),
        )
        for row, v, s, b, d in zip(probs, validity, spam, best, decisions, strict=True)
    ]
