"""Flood state shared in Redis (SARING_FLOOD_REDIS_URL): the in-process detector's counts, across replicas,
within bounded memory, and scoring that never fails or waits long when Redis does.

The store's logic runs on fakeredis (with Lua); replicas, outages and freezes on a real redis-server."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import fakeredis
import pytest
from engine_fixtures import RedisServer, redis_server
from fastapi.testclient import TestClient
from service_fixtures import make_settings, metric_value
from test_flood import BASE, COPIES, UNRELATED

from service.features.flood import BANDS, SAMPLE_PER_BUCKET, FloodDetector, scope_of_key
from service.features.flood_redis import RETRY_AFTER_FAILURE_S, RedisFloodDetector
from service.http.app import create_app
from service.metrics import ServiceMetrics


def fake_detector(**kwargs) -> RedisFloodDetector:
    return RedisFloodDetector("redis://fake", client=fakeredis.FakeRedis(), **kwargs)


# -- the store's logic (fakeredis) ---------------------------------------------------------------------


def test_counts_match_the_in_process_detector() -> None:
    redis_counts = fake_detector()
    memory = FloodDetector()
    stream = COPIES[:5] + UNRELATED + COPIES[5:]
    expected = [0, 1, 2, 3, 4] + [0] * len(UNRELATED) + [5, 6, 7, 8, 9]
    assert memory.observe(stream, now=0.0) == expected
    assert redis_counts.observe(stream, now=0.0) == expected  # 17 messages: two round trips of 16 and 1
    assert redis_counts.observe([BASE], now=1.0) == [10]


def test_a_repeated_flood_is_counted_exactly_from_bounded_samples() -> None:
    detector = fake_detector(max_tracked=5000)
    counts = []
    for start in range(0, 600, 100):
        counts += detector.observe([BASE] * 100, now=float(start))
    assert counts == list(range(600))
    client = detector.client
    buckets = list(client.scan_iter(match="saring:flood:shared:b:*"))
    assert len(buckets) == BANDS  # one text: one bucket per band, each holding every copy
    assert all(client.zcard(b) == 600 for b in buckets)
    assert SAMPLE_PER_BUCKET < 600  # so each count above was estimated from a sample, and exact


def test_the_window_forgets_and_the_cap_bounds_what_redis_holds() -> None:
    detector = fake_detector(window_s=60.0, max_tracked=4)
    assert detector.observe(COPIES[:3], now=0.0) == [0, 1, 2]
    assert detector.observe(COPIES[3:4], now=70.0) == [0]  # the first three left the window
    counts = [detector.observe([text], now=80.0 + i)[0] for i, text in enumerate(COPIES[4:] + UNRELATED)]
    assert counts[:3] == [1, 2, 3]  # at most cap - 1 = 3 earlier copies remembered
    client = detector.client
    assert client.zcard("saring:flood:shared:all") <= 4
    assert len(list(client.scan_iter(match="saring:flood:shared:m:*"))) <= 4
    members = sum(client.zcard(b) for b in client.scan_iter(match="saring:flood:shared:b:*"))
    assert members <= 4 * BANDS
    assert all(0 < client.ttl(k) <= 60 + 60 for k in client.scan_iter(match="saring:flood:*") if b":seq" not in k)


def test_scopes_are_kept_apart_in_redis() -> None:
    detector = fake_detector()
    a, b = scope_of_key("key-a"), scope_of_key("key-b")
    assert detector.observe(COPIES[:2], now=0.0, scope=a) == [0, 1]
    assert detector.observe(COPIES[2:3], now=0.0, scope=b) == [0]
    assert detector.observe(COPIES[3:4], now=0.0, scope=a) == [2]
    assert not any(b"key-a" in k for k in detector.client.scan_iter())  # key names hold a hash, never the key


# -- a real redis-server ----------------------------------------------------------------------------------


@pytest.fixture()
def redis() -> RedisServer:
    with redis_server() as server:
        yield server


def test_copies_alternating_replicas_count_as_one_campaign(redis: RedisServer) -> None:
    replicas = [RedisFloodDetector(redis.url), RedisFloodDetector(redis.url)]
    counts = [replicas[i % 2].observe([text])[0] for i, text in enumerate(COPIES)]
    assert counts == list(range(len(COPIES)))
    assert replicas[1].observe(UNRELATED[:2]) == [0, 0]


def test_redis_killed_gives_null_counts_a_metric_one_log_line_and_recovery(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = ServiceMetrics()
    detector = RedisFloodDetector(redis.url, metrics=metrics)
    assert detector.observe(COPIES[:2]) == [0, 1]
    redis.kill()
    with caplog.at_level(logging.INFO, logger="saring"):
        outage = [detector.observe([COPIES[2]]) for _ in range(5)]
        assert outage == [None] * 5
        assert metrics.flood_unavailable._value.get() == 5
        assert metrics.flood_store_up._value.get() == 0
        redis.start()  # same port, empty (no persistence)
        time.sleep(RETRY_AFTER_FAILURE_S + 0.1)
        assert detector.observe([COPIES[3]]) == [0]
        assert detector.observe([COPIES[4]]) == [1]
    assert metrics.flood_store_up._value.get() == 1
    messages = [r.getMessage() for r in caplog.records if r.name == "saring"]
    assert sum("flood store unavailable" in m for m in messages) == 1, messages  # one line per outage
    assert sum("flood store back" in m for m in messages) == 1, messages


def test_a_frozen_redis_costs_at_most_the_timeout(redis: RedisServer) -> None:
    detector = RedisFloodDetector(redis.url, timeout_s=0.2)
    assert detector.observe([BASE]) == [0]
    redis.proc.send_signal(signal.SIGSTOP)  # accepts nothing, answers nothing
    try:
        started = time.monotonic()
        assert detector.observe([BASE]) is None
        assert time.monotonic() - started < 1.0
        started = time.monotonic()
        assert detector.observe([BASE]) is None  # while it is down, not even the timeout is spent
        assert time.monotonic() - started < 0.05
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    time.sleep(RETRY_AFTER_FAILURE_S + 0.1)
    assert detector.observe([BASE]) is not None


def test_the_api_shares_counts_between_replicas_and_scores_through_an_outage(
    redis: RedisServer, tiny_model_dir: Path
) -> None:
    settings = make_settings(tiny_model_dir, flood_redis_url=redis.url, flood_window_s=3600)

    def near(client: TestClient, text: str) -> int | None:
        response = client.post("/v1/score", json={"messages": [{"text": text}]})
        assert response.status_code == 200, response.text
        return response.json()["results"][0].get("near_duplicates")

    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        assert [near((one, two)[i % 2], text) for i, text in enumerate(COPIES[:4])] == [0, 1, 2, 3]
        redis.kill()
        assert near(one, COPIES[4]) is None  # scored, near_duplicates omitted (null)
        assert near(two, COPIES[5]) is None
        metrics = one.get("/metrics").text
        assert metric_value(metrics, "saring_flood_unavailable_total") == 1
        assert metric_value(metrics, "saring_flood_store_up") == 0
