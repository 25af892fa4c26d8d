"""`python -m service` under real load on 127.0.0.1: batching, overload and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from pathlib import Path
from statistics import median

import httpx
import pytest
from service_fixtures import ADUAN, BUKAN, ISENG, SPAM, metric_value, running_server

pytestmark = pytest.mark.slow

TEXTS = [ADUAN, BUKAN, ISENG, SPAM]


def body(i: int) -> dict:
    return {"messages": [{"id": f"m{i}", "text": TEXTS[i % 4]}]}


async def burst(url: str, n: int, timeout: float = 60.0) -> list[tuple[httpx.Response, float]]:
    """n concurrent single-message calls, each on its own connection; (response, seconds) each."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:

        async def one(i: int) -> tuple[httpx.Response, float]:
            started = time.perf_counter()
            response = await client.post("/v1/score", json=body(i), headers={"X-Request-ID": f"b-{i}"})
            return response, time.perf_counter() - started

        return await asyncio.gather(*(one(i) for i in range(n)))


def test_concurrent_requests_are_batched(tiny_model_dir: Path, tmp_path: Path) -> None:
    with running_server(tiny_model_dir, tmp_path, max_wait_ms="20") as server:
        answers = asyncio.run(burst(server.url, 64))
        metrics = httpx.get(f"{server.url}/metrics").text
    for i, (response, _) in enumerate(answers):
        assert response.status_code == 200, response.text
        (result,) = response.json()["results"]
        assert result["id"] == f"m{i}"
        assert result["category"] == ["aduan", "bukan_aduan", "iseng", "spam"][i % 4]
    observed = metric_value(metrics, "saring_batch_size_sum")
    batches = metric_value(metrics, "saring_batch_size_count")
    assert observed == 64  # every message went through the batcher exactly once
    assert observed / batches > 1, f"{batches} batches for 64 concurrent messages: nothing was batched"


def test_overload_burst_gets_429_with_retry_after_and_no_5xx(tiny_model_dir: Path, tmp_path: Path) -> None:
    wait_ms = 2000  # an admitted call waits for its batch up to this long; a refused one must not
    env = {"max_inflight_requests": "4", "max_wait_ms": str(wait_ms), "max_batch_size": "64"}
    with running_server(tiny_model_dir, tmp_path, **env) as server:
        answers = asyncio.run(burst(server.url, 200))
        log = {line["request_id"]: line for line in server.access_lines()}
        assert httpx.get(f"{server.url}/readyz").status_code == 200
    statuses = [r.status_code for r, _ in answers]
    assert set(statuses) <= {200, 429}, sorted(set(statuses))
    refused = [(r, s) for r, s in answers if r.status_code == 429]
    served = [(r, s) for r, s in answers if r.status_code == 200]
    assert len(refused) >= 100, f"only {len(refused)} of 200 refused with 4 admitted at a time"
    assert len(served) >= 4
    for response, _ in refused:
        error = response.json()["error"]
        assert error["type"] == "overloaded"
        assert "SARING_MAX_INFLIGHT_REQUESTS" in error["message"]
        assert int(response.headers["Retry-After"]) >= 1
    for response, _ in served:
        assert response.json()["results"][0]["id"].startswith("m")
    # Refusals come back at once: on the server, far below the batch wait an admitted call sits through.
    refused_ms = [log[r.headers["x-request-id"]]["latency_ms"] for r, _ in refused]
    assert max(refused_ms) < wait_ms / 2, sorted(refused_ms)[-5:]
    # And, seen by the client, faster than the calls that were served.
    assert median([s for _, s in refused]) < median([s for _, s in served])


def _connect_refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        try:
            sock.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        except OSError as exc:
            return exc.errno == errno.ECONNREFUSED
        return False


def test_sigterm_during_a_burst_finishes_every_accepted_request(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Requests the server has read are answered; the rest are refused at connect or never read.

    Admitted calls wait up to SARING_MAX_WAIT_MS for their batch, so SIGTERM lands while many are in
    flight. New calls keep starting before, during and after the shutdown. The server's access log
    says which requests it read: each of those must have reached the client with the same status,
    and every call that failed at the transport level must be absent from that log.
    """
    env = {"max_wait_ms": "4000", "max_batch_size": "256", "graceful_shutdown_s": "30"}
    with running_server(tiny_model_dir, tmp_path, **env) as server:
        outcomes: dict[str, tuple[str, object, float]] = {}
        timeline: dict[str, float] = {}

        async def run() -> None:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as client:

                async def one(i: int) -> None:
                    rid = f"t-{i}"
                    started = time.monotonic()
                    try:
                        response = await client.post("/v1/score", json=body(i), headers={"X-Request-ID": rid})
                        outcomes[rid] = ("response", response, started)
                    except httpx.TransportError as exc:
                        outcomes[rid] = ("transport", exc, started)

                tasks = []
                stop_at = None
                i = 0
                while stop_at is None or time.monotonic() < stop_at:
                    tasks.append(asyncio.create_task(one(i)))
                    i += 1
                    await asyncio.sleep(0.01)
                    if "sigterm" not in timeline and i == 40:
                        await asyncio.sleep(1.0)  # the first calls are read and waiting for their batch
                        timeline["sigterm"] = time.monotonic()
                        server.terminate()
                    watching = "sigterm" in timeline and "refused" not in timeline
                    if watching and await asyncio.to_thread(_connect_refused, server.port):
                        timeline["refused"] = time.monotonic()
                        timeline["alive_when_refused"] = float(server.proc.poll() is None)
                        stop_at = time.monotonic() + 0.5  # a few more calls against the closed port
                    assert time.monotonic() - timeline.get("sigterm", time.monotonic()) < 20, "never refused"
                await asyncio.gather(*tasks)

        asyncio.run(run())
        try:
            returncode = server.proc.wait(timeout=30)
        except Exception:
            pytest.fail(f"server still running 30 s after SIGTERM:\n{server.log()[-3000:]}")
        exited_after = time.monotonic() - timeline["sigterm"]
        logged = {line["request_id"]: line["status"] for line in server.access_lines()}

    assert returncode == 0, server.log()[-3000:]
    assert exited_after < 30
    # New connections were refused while accepted calls were still being answered.
    assert timeline["alive_when_refused"] == 1.0

    answered = {rid: o[1] for rid, o in outcomes.items() if o[0] == "response"}
    failed = {rid: o[1] for rid, o in outcomes.items() if o[0] == "transport"}
    before_sigterm = [rid for rid, o in outcomes.items() if o[2] < timeline["sigterm"] - 0.8]
    assert len(before_sigterm) >= 30
    for rid in before_sigterm:  # read well before SIGTERM: all answered, and scored
        assert rid in answered, (rid, failed.get(rid))
        assert answered[rid].status_code == 200, answered[rid].text
    for rid, response in answered.items():
        assert response.status_code in (200, 429, 503), (rid, response.status_code, response.text)
        if response.status_code == 200:
            assert response.json()["results"][0]["id"] == "m" + rid.removeprefix("t-")
        else:
            assert set(response.json()["error"]) == {"type", "message"}
            assert "Retry-After" in response.headers
        assert logged.get(rid) == response.status_code, rid
    for rid, exc in failed.items():
        assert rid not in logged, f"{rid} was read by the server (status {logged[rid]}) but lost: {exc!r}"
    assert {rid for rid in logged if rid.startswith("t-")} <= set(answered)
    assert failed, "no call was ever refused: the burst did not outlast the shutdown"
    assert _connect_refused(server.port)
