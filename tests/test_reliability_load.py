"""A burst at 10x measured capacity, from a separate process, against `python -m service` on 127.0.0.1.

The capacity is measured first (closed loop, full calls of 256 messages, so that the model, not HTTP,
is the bottleneck); then tests/reliability_load.py offers ten times that rate open-loop for 3 s. Excess
calls get 429 with Retry-After at once (decided in milliseconds by the server), resident memory stays
bounded, and within 5 s of the burst's last call a new call is answered as fast as on an idle server.
tests/test_service_server.py checks a burst against a tiny admission limit; this one uses the default
limits and a rate derived from what the server can actually do.

Every call carries distinct texts, like traffic from many citizens. One text repeated thousands of
times is a different load: flood detection then compares each message with every remembered copy,
which is flood detection's own cost to bound, not what this test measures.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from reliability_fixtures import rss_kib
from service_fixtures import running_server

from service.core.infer import Infer
from service.errors import SaringError
from service.http.errors import status_of
from service.metrics import ServiceMetrics
from service.model.encoding import Encoded

LOAD = Path(__file__).with_name("reliability_load.py")
BATCH = 256  # the default SARING_MAX_MESSAGES_PER_REQUEST


def load(port: int, *args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(LOAD), *args, "--port", str(port), "--batch", str(BATCH)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_ten_times_capacity_gets_fast_429s_bounded_memory_and_recovers(tiny_model_dir: Path, tmp_path: Path) -> None:
    # A generous request timeout: admitted calls may queue for seconds on a shared 2-core machine, and
    # this test is about the refusals, not about the 503 of docs/design.md's timeout.
    with running_server(tiny_model_dir, tmp_path, request_timeout_s="60") as server:
        pid, port = server.proc.pid, server.port
        idle = load(port, "closed", "--concurrency", "1", "--seconds", "20", "--max-requests", "5")
        capacity = load(port, "closed", "--concurrency", "4", "--seconds", "3")
        rss_before = rss_kib(pid)
        rate = 10 * capacity["ok_per_s"]
        burst = load(port, "burst", "--rate", f"{rate:.1f}", "--seconds", "3", "--probe-seconds", "8")
        rss_after = rss_kib(pid)
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
        access = server.access_lines()

    probes = burst.pop("probes")
    normal_s = max(3 * idle["ok_p50_s"], idle["ok_p50_s"] + 0.25)
    # Recovered at the first probe answered within the idle bound from which every probe is answered
    # (200) and nine in ten within the bound (a shared 2-core machine has the odd slow call).
    recovered_at = None
    for i, probe in enumerate(probes):
        rest = probes[i:]
        normal = [p["status"] == 200 and p["seconds"] <= normal_s for p in rest]
        if normal[0] and all(p["status"] == 200 for p in rest) and sum(normal) >= 0.9 * len(rest):
            recovered_at = probe["at"] + probe["seconds"]
            break
    server_429_ms = sorted(r["latency_ms"] for r in access if r["status"] == 429)
    numbers = {
        "idle_latency_s": idle["ok_p50_s"],
        "capacity_calls_per_s": capacity["ok_per_s"],
        "capacity_messages_per_s": capacity["ok_per_s"] * BATCH,
        "offered_calls_per_s": burst["offered_per_s"],
        "burst": burst,
        "server_429_ms_p50_p99_max": [
            statistics.median(server_429_ms),
            server_429_ms[int(0.99 * (len(server_429_ms) - 1))],
            server_429_ms[-1],
        ]
        if server_429_ms
        else None,
        "rss_mib_before_after": [rss_before / 1024, rss_after / 1024],
        "recovered_within_s": recovered_at,
        "probes": [(round(p["at"], 2), p["status"], round(p["seconds"], 3)) for p in probes[:15]],
    }
    print(json.dumps(numbers, indent=1))  # shown with -s: the figures behind each assertion below

    assert idle["statuses"] == {"200": 5} and capacity["statuses"] == {"200": capacity["sent"]}, numbers
    assert capacity["ok_per_s"] > 0.5, numbers
    # The load process really offered ~10x (not throttled by its own CPU share).
    assert burst["offered_per_s"] >= 8 * capacity["ok_per_s"] and burst["skipped"] == 0, numbers
    # Every call answered: scored or refused with 429 + Retry-After; no 5xx, no dropped connection.
    assert set(burst["statuses"]) <= {"200", "429"}, numbers
    assert burst["statuses"].get("429", 0) >= burst["offered"] / 2, numbers
    assert burst["statuses"].get("200", 0) >= 1, numbers
    assert burst["refused_without_retry_after"] == 0, numbers
    assert all(r["status"] < 500 for r in access)
    # Refusals are decided at once on the server, and reach the client faster than the scored calls.
    assert numbers["server_429_ms_p50_p99_max"][1] < 250, numbers
    assert burst["refused_p50_s"] < burst["ok_p50_s"], numbers
    assert burst["refused_p50_s"] < 2.0, numbers
    # Memory: the queue and admission are bounded, so a burst costs at most a little working memory.
    assert rss_after - rss_before < 200 * 1024, numbers
    # Back to idle latency within 5 s of the burst's last call, and it stays there.
    assert recovered_at is not None and recovered_at <= 5.0, numbers


class SlowTokeniser:
    """A backend whose tokenising takes a while (as 256 long texts do) and that records the queue it sees."""

    sidecar = None
    device, kind, precision = "cpu", "fake", "fp32"

    def __init__(self) -> None:
        self.infer: Infer | None = None
        self.largest_queue = 0

    def encode(self, texts):
        time.sleep(0.2)
        return Encoded(ids=[[101, 7, 102]] * len(texts), truncated=[False] * len(texts))

    def forward(self, batch):
        self.largest_queue = max(self.largest_queue, len(self.infer._queue) + len(batch))
        return np.full((len(batch), 4), 0.25)


def test_calls_being_tokenised_count_against_the_queue_limit() -> None:
    """20 calls of 40 messages against a 100-message queue: at most 2 admitted, the rest 429 at once.

    The limit used to be checked before the tokenising await only, so every call passed it while the
    queue was still empty and 800 messages were queued: the queue bound was inflight x call size.
    """
    backend = SlowTokeniser()

    async def run() -> list:
        infer = Infer(backend, ServiceMetrics(), max_queued_messages=100, max_wait_ms=0, max_batch_size=8)
        backend.infer = infer
        infer.start()
        try:
            return await asyncio.gather(*(infer.score(["a"] * 40) for _ in range(20)), return_exceptions=True)
        finally:
            await infer.stop()

    outcomes = asyncio.run(run())
    refused = [o for o in outcomes if isinstance(o, SaringError)]
    scored = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(scored) + len(refused) == 20, outcomes
    assert len(scored) * 40 <= 100 and len(scored) >= 1
    assert all(status_of(e)[0] == 429 and "SARING_MAX_QUEUED_MESSAGES" in e.message for e in refused)
    assert backend.largest_queue <= 100
