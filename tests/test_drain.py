"""A replica that gets SIGTERM drains: /readyz turns 503 at once, calls still arriving are answered with
`Connection: close` (no keep-alive connection is left idle for the server to close under a request),
then the port closes and the process exits 0."""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from service_fixtures import ADUAN, running_server

pytestmark = pytest.mark.slow

DRAIN_S = 3.0


def _score(conn: http.client.HTTPConnection, i: int) -> http.client.HTTPResponse:
    body = json.dumps({"messages": [{"id": f"k{i}", "text": ADUAN}]})
    conn.request("POST", "/v1/score", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_sigterm_drains_then_closes(tiny_model_dir: Path, tmp_path: Path) -> None:
    with running_server(tiny_model_dir, tmp_path, drain_s=str(DRAIN_S)) as server:
        # Keep-alive connections that have served a call and sit idle, as a proxy's pool does.
        pool = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=10) for _ in range(6)]
        for i, conn in enumerate(pool):
            first = _score(conn, i)
            assert first.status == 200 and first.getheader("connection") != "close"

        signalled = time.monotonic()
        server.terminate()
        # /readyz says 503 at once (the first poll after the signal is handled).
        while True:
            ready = httpx.get(f"{server.url}/readyz", timeout=2)
            if ready.status_code == 503:
                break
            assert time.monotonic() - signalled < 0.5, "readyz still 200 half a second after SIGTERM"
            time.sleep(0.02)
        assert ready.json()["error"]["type"] == "not_ready"
        assert "draining" in ready.json()["error"]["message"]
        assert int(ready.headers["Retry-After"]) >= 1
        assert ready.headers["connection"] == "close"

        # Calls sent on the idle keep-alive connections during the drain are all answered, each with
        # Connection: close, and the server then closes that connection (no reset under a request).
        for i, conn in enumerate(pool):
            time.sleep((DRAIN_S - 0.8) / len(pool))
            response = _score(conn, 100 + i)
            assert response.status == 200, response.status
            assert response.getheader("connection") == "close"
            conn.close()
        fresh = httpx.post(f"{server.url}/v1/score", json={"messages": [{"text": ADUAN}]}, timeout=5)
        assert fresh.status_code == 200 and fresh.headers["connection"] == "close"
        assert not _refused(server.port), "the port closed before the drain ended"

        # Then the port closes and the process exits cleanly.
        while not _refused(server.port):
            assert time.monotonic() - signalled < DRAIN_S + 5, "still accepting long after the drain"
            time.sleep(0.05)
        assert time.monotonic() - signalled >= DRAIN_S - 0.2
        assert server.proc.wait(timeout=20) == 0
        assert "draining" in server.log()


def test_no_drain_when_set_to_zero(tiny_model_dir: Path, tmp_path: Path) -> None:
    with running_server(tiny_model_dir, tmp_path, drain_s="0") as server:
        signalled = time.monotonic()
        server.terminate()
        while not _refused(server.port):
            time.sleep(0.02)
        assert time.monotonic() - signalled < 1.5  # the port closes at the next tick, not after a drain
        assert server.proc.wait(timeout=20) == 0
