"""Decisions and is_spam follow the thresholds in the served folder's saring.json (docs/design.md section 3).

Thresholds are placed between the scores the tiny model gives to chosen texts, in log-odds, with a
wide margin, so the expected decision does not depend on the exact trained weights.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_fixtures import ADUAN, BUKAN, ISENG, SPAM, copy_model_dir, make_settings, metric_value

from service.http.app import create_app

CANDIDATES = [
    ADUAN,
    BUKAN,
    ISENG,
    SPAM,
    "mohon diperbaiki wkwk",
    "bansos tidak cair wkwk",
    "minta pulsa jalan rusak",
    "rumah sakit menolak pasien canda",
    "selamat pagi jalan rusak",
    "tes tes jalan di desa rusak",
    "pungli",
    "xyz qwerty",
    "lapor",
    "banjir di bandung hihi canda",
]
MARGIN = 0.25  # log-odds between a score and a threshold: ~1.3x in odds, still 1e5 times float noise


def logit(p: float) -> float:
    p = min(max(p, 1e-300), 1 - 1e-16)
    return math.log(p) - math.log1p(-p)


def between(lo: float, hi: float) -> float:
    """A threshold halfway between two scores in log-odds."""
    return 1 / (1 + math.exp(-(logit(lo) + logit(hi)) / 2))


def spread(scores: dict[str, float], k: int) -> list[str]:
    """k texts in increasing score, consecutive ones at least 2*MARGIN apart in log-odds."""
    chosen: list[str] = []
    for text in sorted(scores, key=lambda t: logit(scores[t])):
        if not chosen or logit(scores[text]) - logit(scores[chosen[-1]]) >= 2 * MARGIN:
            chosen.append(text)
    assert len(chosen) >= k, f"the tiny model does not spread these texts enough: {scores}"
    # Keep both ends and the most central ones in between.
    if k == 2:
        return [chosen[0], chosen[-1]]
    middle = chosen[1:-1]
    return [chosen[0], middle[len(middle) // 2], chosen[-1]] if k == 3 else chosen


def score_all(client: TestClient, texts: list[str]) -> list[dict]:
    response = client.post("/v1/score", json={"messages": [{"id": str(i), "text": t} for i, t in enumerate(texts)]})
    assert response.status_code == 200, response.text
    return response.json()["results"]


@pytest.fixture(scope="module")
def original_scores(tiny_model_dir: Path) -> dict[str, dict]:
    with TestClient(create_app(make_settings(tiny_model_dir))) as client:
        return dict(zip(CANDIDATES, score_all(client, CANDIDATES), strict=True))


def serve_copy(tmp_path: Path, tiny_model_dir: Path, name: str, **thresholds: float) -> TestClient:
    folder = copy_model_dir(tiny_model_dir, tmp_path / name, **thresholds)
    return TestClient(create_app(make_settings(folder)))


def test_decision_band_follows_the_sidecar(tmp_path: Path, tiny_model_dir: Path, original_scores: dict) -> None:
    validity = {t: r["validity"] for t, r in original_scores.items()}
    low, mid, high = spread(validity, 3)
    reject, accept = between(validity[low], validity[mid]), between(validity[mid], validity[high])
    assert 0 < reject < accept < 1

    with serve_copy(tmp_path, tiny_model_dir, "band", reject=reject, accept=accept) as client:
        thresholds = client.get("/v1/model").json()["thresholds"]
        assert thresholds["reject"]["value"] == pytest.approx(reject)
        assert thresholds["accept"]["value"] == pytest.approx(accept)
        results = score_all(client, [low, mid, high])
    assert [r["decision"] for r in results] == ["reject", "review", "accept"]
    # The scores themselves do not depend on the thresholds.
    assert [r["validity"] for r in results] == pytest.approx([validity[t] for t in (low, mid, high)], rel=1e-5)

    # Move both thresholds below the middle text: it is now accepted; no review band at all.
    with serve_copy(tmp_path, tiny_model_dir, "low-band", reject=reject, accept=reject) as client:
        results = score_all(client, [low, mid, high])
    assert [r["decision"] for r in results] == ["reject", "accept", "accept"]

    # And both above it: rejected.
    with serve_copy(tmp_path, tiny_model_dir, "high-band", reject=accept, accept=accept) as client:
        results = score_all(client, [low, mid, high])
    assert [r["decision"] for r in results] == ["reject", "reject", "accept"]


def test_is_spam_follows_the_spam_threshold(tmp_path: Path, tiny_model_dir: Path, original_scores: dict) -> None:
    spam = {t: r["spam"] for t, r in original_scores.items()}
    low, mid, high = spread(spam, 3)
    texts = [low, mid, high]

    with serve_copy(tmp_path, tiny_model_dir, "spam-mid", spam=between(spam[mid], spam[high])) as client:
        assert [r["is_spam"] for r in score_all(client, texts)] == [False, False, True]
    with serve_copy(tmp_path, tiny_model_dir, "spam-low", spam=between(spam[low], spam[mid])) as client:
        results = score_all(client, texts)
    assert [r["is_spam"] for r in results] == [False, True, True]
    # is_spam is a separate flag: the decision band did not move.
    assert [r["decision"] for r in results] == [original_scores[t]["decision"] for t in texts]


def test_decision_metrics_count_each_decision(tmp_path: Path, tiny_model_dir: Path, original_scores: dict) -> None:
    validity = {t: r["validity"] for t, r in original_scores.items()}
    low, mid, high = spread(validity, 3)
    reject, accept = between(validity[low], validity[mid]), between(validity[mid], validity[high])
    with serve_copy(tmp_path, tiny_model_dir, "band", reject=reject, accept=accept) as client:
        score_all(client, [low, mid, high, high])
        text = client.get("/metrics").text
    assert metric_value(text, "saring_decisions_total", decision="accept") == 2
    assert metric_value(text, "saring_decisions_total", decision="review") == 1
    assert metric_value(text, "saring_decisions_total", decision="reject") == 1
