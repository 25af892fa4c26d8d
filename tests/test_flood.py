"""Flood detection: exact near-duplicate counts on crafted bursts, the window, the cap, and the API field."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_fixtures import ADUAN, BUKAN, ISENG, SPAM, make_settings

from service.features.flood import BANDS, SAMPLE_PER_BUCKET, FloodDetector, normalise, scope_of_key
from service.http.app import create_app

BASE = (
    "Assalamualaikum pak, ini info resmi: bantuan sosial tunai tahap tiga sudah cair untuk semua warga, "
    "silakan klaim lewat tautan berikut sebelum hari minggu"
)
# Copies a flood really sends: new numbers, links, emoji, casing, punctuation, one typo or word more.
COPIES = [
    BASE,
    BASE + " 081234567890",
    BASE.upper(),
    BASE + " 🙏🙏🙏",
    BASE.replace("pak,", "bu!!"),
    BASE + " https://bit.ly/bansos-2024",
    BASE.replace("tunai", "tunia"),
    "FWD: " + BASE,
    BASE.replace("tiga", "3"),
    BASE.replace("minggu", "minggu ini ya"),
]
UNRELATED = [
    ADUAN,
    BUKAN,
    ISENG,
    SPAM,
    "lampu jalan di gang mawar mati sejak bulan lalu mohon diganti",
    "pak camat kapan pasar kaget dibuka lagi",
    "selamat malam, pengaduan saya nomor 4471 belum ada tanggapan",
]


def test_normalise_drops_what_does_not_make_a_message_new() -> None:
    assert normalise("PROMO!!! Kuota 30GB cuma 10rb 👉 https://bit.ly/x  wa.me/62812") == "promo kuota gb cuma rb"
    assert normalise("Haloooo   min\n\tTES") == "haloo min tes"
    assert normalise("12345 😂😂 ...") == ""


def test_a_burst_of_edited_copies_counts_zero_to_n_minus_one() -> None:
    detector = FloodDetector()
    assert detector.observe(COPIES, now=0.0) == list(range(len(COPIES)))  # within one call too
    assert detector.observe([BASE], now=1.0) == [len(COPIES)]  # and across calls


def test_unrelated_messages_count_zero_even_mid_flood() -> None:
    detector = FloodDetector()
    counts = detector.observe(COPIES[:5] + UNRELATED + COPIES[5:], now=0.0)
    assert counts == [0, 1, 2, 3, 4] + [0] * len(UNRELATED) + [5, 6, 7, 8, 9]


def test_messages_of_only_digits_or_emoji_count_exact_repeats_only() -> None:
    detector = FloodDetector()
    assert detector.observe(["😂😂😂", "😂😂😂", "12345", "😡", "😂😂😂"], now=0.0) == [0, 1, 0, 0, 2]


def test_copies_older_than_the_window_are_forgotten() -> None:
    clock = [0.0]
    detector = FloodDetector(window_s=60.0, clock=lambda: clock[0])
    assert detector.observe(COPIES[:3]) == [0, 1, 2]
    clock[0] = 40.0
    assert detector.observe(COPIES[3:5]) == [3, 4]
    clock[0] = 61.0  # the first three (t=0) are out of the window, the two at t=40 are not
    assert detector.observe(COPIES[5:6]) == [2]
    assert len(detector) == 3
    clock[0] = 200.0
    assert detector.observe(COPIES[6:7]) == [0]
    assert len(detector) == 1


def test_the_cap_holds_and_keeps_the_newest() -> None:
    cap = 4
    detector = FloodDetector(max_tracked=cap)
    counts = []
    for i, text in enumerate(COPIES + UNRELATED):
        counts += detector.observe([text], now=float(i))
        assert len(detector) <= cap
        # No band remembers more messages than the ring holds: memory is bounded by the cap.
        assert sum(1 if isinstance(v, int) else v.count for b in detector._buckets for v in b.values()) <= cap * BANDS
    # At most cap - 1 earlier copies are remembered when a copy arrives.
    assert counts[: len(COPIES)] == [min(i, cap - 1) for i in range(len(COPIES))]
    # The ring now holds the last `cap` unrelated messages; none of the copies is remembered.
    assert detector.observe([BASE], now=100.0) == [0]


@pytest.fixture(scope="module")
def client(tiny_model_dir: Path):
    with TestClient(create_app(make_settings(tiny_model_dir, flood_window_s=3600))) as client:
        yield client


def test_score_answers_carry_near_duplicates(client: TestClient) -> None:
    def near(*texts: str) -> list[int]:
        response = client.post("/v1/score", json={"messages": [{"text": t} for t in texts]})
        assert response.status_code == 200, response.text
        return [r["near_duplicates"] for r in response.json()["results"]]

    assert near(COPIES[0], UNRELATED[4], COPIES[1]) == [0, 0, 1]
    assert near(COPIES[2]) == [2]
    assert near(UNRELATED[5]) == [0]
    # A large call is hashed off the event loop; the counts are the same.
    assert near(*COPIES[3:], *UNRELATED[:4]) == [3, 4, 5, 6, 7, 8, 9] + [0] * 4


def test_flood_detection_can_be_switched_off(tiny_model_dir: Path) -> None:
    with TestClient(create_app(make_settings(tiny_model_dir, flood_detection=False))) as client:
        response = client.post("/v1/score", json={"messages": [{"text": BASE}, {"text": BASE}]})
    assert response.status_code == 200
    assert all("near_duplicates" not in r for r in response.json()["results"])


# -- bounded work per message, scopes ------------------------------------------------------------------


def test_a_repeated_text_is_counted_exactly_while_each_message_compares_a_bounded_sample() -> None:
    """20,000 copies of one text used to make each new copy compare all 20,000 (3.5 ms): now each
    compares at most SAMPLE_PER_BUCKET per band, and the count stays exact."""
    detector = FloodDetector(max_tracked=5000)
    counts = detector.observe([BASE] * 3000, now=0.0)
    assert counts == list(range(3000))
    slot, count, compared_matches = detector.observe_matches(BASE, now=1.0)
    assert count == 3000
    assert 0 < len(compared_matches) <= SAMPLE_PER_BUCKET * BANDS
    assert len(compared_matches) == SAMPLE_PER_BUCKET  # the same newest copies sit in all 21 buckets
    # No bucket keeps more than its sample, whatever the flood.
    assert all(isinstance(v, int) or len(v.recent) <= SAMPLE_PER_BUCKET for b in detector._buckets for v in b.values())


def test_the_cap_and_window_still_hold_for_sampled_buckets() -> None:
    detector = FloodDetector(window_s=100.0, max_tracked=500)
    counts = [detector.observe([BASE], now=i * 0.01)[0] for i in range(1200)]
    assert counts[:500] == list(range(500))
    assert counts[500:] == [499] * 700  # the ring holds 500: 499 earlier copies each time
    # Each bucket's count is the number of remembered messages in it: the ring, 21 buckets each.
    assert sum(1 if isinstance(v, int) else v.count for b in detector._buckets for v in b.values()) == 500 * BANDS
    assert detector.observe([BASE], now=200.0) == [0]  # all out of the window
    assert len(detector) == 1 and all(isinstance(v, int) for b in detector._buckets for v in b.values())


def _paraphrases(n: int, seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    words = BASE.split()
    out = []
    for _ in range(n):
        copy = list(words)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(copy))
            edit = rng.randrange(3)
            if edit == 0:
                copy.insert(i, f"08{rng.randint(10**8, 10**9 - 1)}")
            elif edit == 1:
                copy[i] = copy[i][::-1]
            else:
                del copy[i]
        out.append(" ".join(copy))
    return out


def test_paraphrased_floods_past_the_sample_are_estimated_closely() -> None:
    """Copies that differ share only some buckets: the count is then estimated from the samples. The
    truth here is what an unbounded detector counts (every remembered message sharing a band)."""
    import numpy as np

    from service.features.flood import band_key_array, signatures

    texts = _paraphrases(400, seed=5)
    detector = FloodDetector(max_tracked=5000)
    counts = np.array(detector.observe(texts, now=0.0))
    sigs = signatures(texts)
    keys = band_key_array(sigs)
    truth = np.array(
        [
            int((((sigs[:i] == sigs[i]).sum(axis=1) >= detector.min_agree) & (keys[:i] == keys[i]).any(axis=1)).sum())
            for i in range(len(texts))
        ]
    )
    assert truth[-1] > 3 * SAMPLE_PER_BUCKET  # buckets well past their sample
    small = truth <= SAMPLE_PER_BUCKET
    late = truth > 100
    relative = np.abs(counts[late] - truth[late]) / truth[late]
    assert relative.mean() < 0.15, relative.mean()
    assert np.all(counts[small & (np.arange(len(texts)) < 20)] == truth[small & (np.arange(len(texts)) < 20)])


def test_scopes_never_count_each_other() -> None:
    detector = FloodDetector()
    assert detector.observe(COPIES[:3], now=0.0, scope=scope_of_key("key-a")) == [0, 1, 2]
    assert detector.observe(COPIES[3:5], now=0.0, scope=scope_of_key("key-b")) == [0, 1]
    assert detector.observe(COPIES[5:6], now=0.0) == [0]  # the shared scope is a scope of its own
    assert detector.observe(COPIES[6:7], now=0.0, scope=scope_of_key("key-a")) == [3]
    assert scope_of_key("key-a") != scope_of_key("key-b") and "key-a" not in scope_of_key("key-a")


def test_near_duplicates_are_per_api_key_unless_shared(tiny_model_dir: Path) -> None:
    """Caller B must not learn from near_duplicates that caller A sent a similar text."""
    keys = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}

    def near(client: TestClient, headers: dict, *texts: str) -> list[int]:
        response = client.post("/v1/score", json={"messages": [{"text": t} for t in texts]}, headers=headers)
        assert response.status_code == 200, response.text
        return [r["near_duplicates"] for r in response.json()["results"]]

    with TestClient(create_app(make_settings(tiny_model_dir, api_keys="key-a,key-b"))) as client:
        assert near(client, keys[0], *COPIES[:3]) == [0, 1, 2]
        assert near(client, keys[1], COPIES[3]) == [0]
        assert near(client, keys[0], COPIES[4]) == [3]
    settings = make_settings(tiny_model_dir, api_keys="key-a,key-b", flood_shared_across_keys=True)
    with TestClient(create_app(settings)) as client:
        assert near(client, keys[0], *COPIES[:3]) == [0, 1, 2]
        assert near(client, keys[1], COPIES[3]) == [3]


def test_even_a_one_message_call_is_observed_off_the_event_loop() -> None:
    """The event loop never hashes or compares: under a flood it serves every other caller meanwhile."""
    import asyncio
    import threading

    detector = FloodDetector()
    seen: list[str] = []
    observe = detector.observe

    def recording(*args, **kwargs):
        seen.append(threading.current_thread().name)
        return observe(*args, **kwargs)

    detector.observe = recording

    async def main() -> list[int]:
        return await detector.observe_async([BASE])

    try:
        assert asyncio.run(main()) == [0]
    finally:
        detector.close()
    assert seen and seen[0].startswith("saring-flood"), seen
