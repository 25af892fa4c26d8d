"""The HTTP parser the service runs (httptools on uvloop, service/http/protocol.py), on a real server."""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability_fixtures import raw_http, status_of
from service_fixtures import running_server

SCORE = b'{"messages": [{"id": "p", "text": "jalan rusak di depan pasar"}]}'


@pytest.mark.slow
def test_request_lines_old_and_new(tiny_model_dir: Path, tmp_path: Path) -> None:
    with running_server(tiny_model_dir, tmp_path) as server:
        http09 = raw_http(server.port, b"GET /healthz\r\n\r\n", until_close=True)
        http10 = raw_http(server.port, b"GET /healthz HTTP/1.0\r\n\r\n", until_close=True)
        post = b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        post += b"Content-Length: %d\r\n\r\n" % len(SCORE) + SCORE
        two = raw_http(server.port, post + post.replace(b"Host: x", b"Host: x\r\nConnection: close"), until_close=True)
        still = raw_http(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")

    # No version on the request line (HTTP/0.9): refused and closed, as uvicorn's h11 protocol did.
    assert status_of(http09) == 400, http09[:200]
    assert b"connection: close" in http09.lower()
    assert status_of(http10) == 200 and http10.endswith(b'{"status":"ok"}')
    # Two requests on one kept-alive connection: both answered, in order, with the scores.
    assert two.count(b"HTTP/1.1 200 OK") == 2, two[:300]
    assert two.count(b'"id":"p"') == 2
    assert status_of(still) == 200
