"""From class probabilities to the two scores and the decision band (DESIGN.md sections 1 and 3).

The service and `training evaluate` both call `score_rows`, so what an evaluation reports is
exactly what the API would have answered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.model_folder import Sidecar

ACCEPT, REVIEW, REJECT = "accept", "review", "reject"


@dataclass(frozen=True)
class Score:
    validity: float
    spam: float
    category: str
    probabilities: dict[str, float]
    decision: str
    is_spam: bool


def decide(validity: float, accept_threshold: float, reject_threshold: float) -> str:
    if validity >= accept_threshold:
        return ACCEPT
    if validity <= reject_threshold:
        return REJECT
    return REVIEW


def score_columns(probs: np.ndarray, sidecar: Sidecar) -> tuple[np.ndarray, np.ndarray]:
    """Validity and spam for every row of a (n, labels) probability matrix."""
    index = {label: i for i, label in enumerate(sidecar.labels)}
    validity = probs[:, [index[label] for label in sidecar.scores["validity"]]].sum(axis=1)
    spam = probs[:, [index[label] for label in sidecar.scores["spam"]]].sum(axis=1)
    return validity, spam


def score_rows(probs: np.ndarray, sidecar: Sidecar) -> list[Score]:
    validity, spam = score_columns(probs, sidecar)
    best = probs.argmax(axis=1)
    results = []
    for row, v, s, b in zip(probs, validity, spam, best, strict=True):
        v, s = min(float(v), 1.0), min(float(s), 1.0)  # float sums can overshoot 1 by an ulp
        results.append(
            Score(
                validity=v,
                spam=s,
                category=sidecar.labels[int(b)],
                probabilities={label: float(p) for label, p in zip(sidecar.labels, row, strict=True)},
                decision=decide(v, sidecar.accept.value, sidecar.reject.value),
                is_spam=s >= sidecar.spam.value,
            )
        )
    return results
