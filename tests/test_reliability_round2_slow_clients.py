"""Issue 14, items 4 and 6 against a real `python -m service`: slow and silent clients are bounded.

A body that stalls or trickles gets 408 and a closed connection within SARING_BODY_TIMEOUT_S while
other clients are served; a caller without a key gets 401 at once even when its body never comes;
SARING_LIMIT_CONCURRENCY bounds the connections idle clients can hold. Header timeouts are the
reverse proxy's job (README: limits and security); uvicorn has none.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from reliability_fixtures import KEY, bearer, status_of
from service_fixtures import ADUAN, running_server

pytestmark = pytest.mark.slow

BODY_TIMEOUT_S = 2.0
BODY = json.dumps({"messages": [{"id": "ok", "text": ADUAN}]}).encode()


def head(content_length: int, key: str | None = KEY) -> bytes:
    auth = f"Authorization: Bearer {key}\r\n".encode() if key else b""
    return (
        b"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + auth
        + b"Content-Length: %d\r\n\r\n" % content_length
    )


class SlowClient(threading.Thread):
    """Sends the headers and `first` body bytes, then one byte every `trickle_s` (None: nothing more).
    Records what came back and when the server closed the connection, seconds after the headers."""

    def __init__(self, port: int, first: bytes, trickle_s: float | None = None, key: str | None = KEY) -> None:
        super().__init__(daemon=True)
        self.port, self.first, self.trickle_s, self.key = port, first, trickle_s, key
        self.response = b""
        self.closed_after: float | None = None

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(head(len(BODY), self.key) + self.first)
            started = time.monotonic()
            sock.settimeout(self.trickle_s or 30)
            sent = len(self.first)
            while time.monotonic() - started < 30:
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:  # nothing from the server yet: trickle one more byte
                    if sent < len(BODY) - 1:
                        sock.sendall(BODY[sent : sent + 1])
                        sent += 1
                    continue
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    self.closed_after = time.monotonic() - started
                    return
                self.response += chunk


def test_a_stalled_and_a_trickling_body_get_408_and_are_closed_while_others_are_served(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with running_server(tiny_model_dir, tmp_path, api_keys=KEY, body_timeout_s=BODY_TIMEOUT_S) as server:
        slow = [
            SlowClient(server.port, BODY[:10]),  # stalls after 10 bytes
            SlowClient(server.port, b""),  # headers only: silent from then on
            SlowClient(server.port, BODY[:5], trickle_s=0.3),  # one byte every 0.3 s: would take 30 s
        ]
        for client in slow:
            client.start()
        time.sleep(0.3)
        # While they hold their connections, other clients are answered at once.
        served = [
            httpx.post(f"{server.url}/v1/score", json=json.loads(BODY), headers=bearer(), timeout=10) for _ in range(5)
        ]
        for client in slow:
            client.join(timeout=40)
    assert [r.status_code for r in served] == [200] * 5
    for client in slow:
        assert status_of(client.response) == 408, client.response[:300]
        assert b"request_timeout" in client.response and b"SARING_BODY_TIMEOUT_S" in client.response
        assert b"connection: close" in client.response.lower()
        # Closed by the server within the limit (plus scheduling slack), not held open.
        assert client.closed_after is not None and client.closed_after < BODY_TIMEOUT_S + 1.5, client.closed_after


def test_no_key_gets_401_at_once_even_when_the_body_never_comes(tiny_model_dir: Path, tmp_path: Path) -> None:
    with running_server(tiny_model_dir, tmp_path, api_keys=KEY, body_timeout_s=30) as server:
        client = SlowClient(server.port, b"", key=None)
        started = time.monotonic()
        client.start()
        deadline = time.monotonic() + 10
        while not client.response.endswith(b"}") and time.monotonic() < deadline:
            time.sleep(0.05)
        answered_after = time.monotonic() - started
    assert status_of(client.response) == 401, client.response[:300]
    assert b"unauthorized" in client.response
    assert answered_after < 5, answered_after  # not after the 30 s body timeout: the body was never awaited


def test_limit_concurrency_refuses_at_once_beyond_the_idle_connections(tiny_model_dir: Path, tmp_path: Path) -> None:
    with running_server(tiny_model_dir, tmp_path, limit_concurrency=4) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
        try:
            time.sleep(0.3)
            started = time.monotonic()
            refused = httpx.get(f"{server.url}/healthz", timeout=10)
            refused_after = time.monotonic() - started
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.3)
        after = httpx.get(f"{server.url}/healthz", timeout=10)
    assert refused.status_code == 503 and refused_after < 2
    assert after.status_code == 200
