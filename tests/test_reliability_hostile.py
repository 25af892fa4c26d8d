"""Hostile input gets a clear 4xx in the error shape, never a 5xx; odd but real text is scored.

tests/test_service_api.py covers the everyday refusals (bad JSON, wrong types, limits, lone
surrogates); this adds what pranksters send on purpose, in-process through the app with its
default limits, and malformed HTTP on a raw socket against a real `python -m service`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from reliability_fixtures import KEY, bearer, log_records, raw_http, status_of
from service_fixtures import ADUAN, assert_error_shape, make_settings, running_server

from service.http.app import create_app


@pytest.fixture(scope="module")
def client(tiny_model_dir: Path):
    with TestClient(create_app(make_settings(tiny_model_dir)), raise_server_exceptions=False) as client:
        yield client


def post(client: TestClient, body: bytes, content_type: str = "application/json"):
    return client.post("/v1/score", content=body, headers={"content-type": content_type})


def messages(*texts: str, **extra) -> bytes:
    return json.dumps({"messages": [{"text": t} for t in texts], **extra}).encode()


def tiny_messages(n: int) -> bytes:
    return b'{"messages":[' + b",".join([b'{"text":"a"}'] * n) + b"]}"


# -- refused -----------------------------------------------------------------------------------------

REFUSED = [
    pytest.param(messages("a" * 1_000_000), 422, "SARING_MAX_CHARS_PER_MESSAGE", id="one-megabyte-string"),
    pytest.param(tiny_messages(5000), 413, "SARING_MAX_MESSAGES_PER_REQUEST", id="thousands-of-tiny-messages"),
    pytest.param(messages("\u0000\u0000\u0000"), 422, "empty", id="null-bytes-only"),
    pytest.param(messages("".join(map(chr, range(1, 32)))), 422, "empty", id="control-characters-only"),
    pytest.param(messages("\u200b\u200c\u200d\u2060\ufeff"), 422, "empty", id="zero-width-only"),
    pytest.param(messages("\u3164\u115f\u1160"), 422, "empty", id="hangul-fillers-only"),
    pytest.param(messages("\u202e\u202d\u200f\u061c"), 422, "empty", id="direction-marks-only"),
    pytest.param(messages("\U000e0041\U000e0042"), 422, "empty", id="tag-characters-only"),
    pytest.param(b'{"messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 422, "nests", id="deeply-nested-arrays"),
    pytest.param(b'{"messages": [{"text": "a", "id": ' + b"9" * 5000 + b"}]}", 422, "digits", id="5000-digit-number"),
    pytest.param(b'{"messages": [{"text": "a", "id": NaN}]}', 422, "id", id="nan"),
    pytest.param(b'{"messages": [{"text": Infinity}]}', 422, "text", id="infinity"),
    pytest.param(b'{"messages": [{"text": "\xc0\xaf"}]}', 422, "UTF-8", id="overlong-utf8"),
    pytest.param(b'{"messages": [{"text": "\xe2\x82"}]}', 422, "UTF-8", id="truncated-utf8"),
    pytest.param(b'{"messages": [{"text": "caf\xe9"}]}', 422, "UTF-8", id="latin-1-bytes"),
    pytest.param(b"\x00" * 1000, 422, "json", id="binary-zeros"),
    pytest.param(b"true", 422, "body", id="body-true"),
    pytest.param(b'"jalan rusak"', 422, "body", id="body-string"),
    pytest.param(b'{"messages": [{"text": {"$ne": null}}]}', 422, "text", id="operator-injection"),
    pytest.param(b'{"messages": [{"text": "a"}], "explain": {"a": 1}}', 422, "explain", id="explain-object"),
]


@pytest.mark.parametrize(("body", "status", "words"), REFUSED)
def test_hostile_bodies_get_a_clear_4xx(client: TestClient, body: bytes, status: int, words: str) -> None:
    error = assert_error_shape(post(client, body), status)
    assert words.lower() in error["message"].lower()


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_json_sent_as_another_type_is_415(client: TestClient, content_type: str) -> None:
    error = assert_error_shape(post(client, messages(ADUAN), content_type), 415)
    assert error["type"] == "unsupported_media_type" and "application/json" in error["message"]


def test_a_hundred_thousand_tiny_messages_are_refused_before_validating_each(client: TestClient) -> None:
    """1.4 MB of `{"text":"a"}`: refused on the count alone, not after validating 100,000 messages.

    Validating them all took over a second of event-loop time (everything else waits meanwhile);
    the bound is loose, the point is it no longer grows with a per-message cost.
    """
    body = tiny_messages(100_000)
    assert len(body) < 2 * 1024 * 1024  # under the default body limit: the count is what refuses it
    started = time.perf_counter()
    error = assert_error_shape(post(client, body), 413)
    elapsed = time.perf_counter() - started
    assert "100000 messages" in error["message"] and "SARING_MAX_MESSAGES_PER_REQUEST" in error["message"]
    assert elapsed < 1.0, f"{elapsed:.2f} s to refuse"


# -- odd but real: scored ----------------------------------------------------------------------------

SCORED = [
    pytest.param("jalan\u0000rusak\u0000parah", id="null-bytes-inside"),
    pytest.param("jalan\x07rusak\x1b[31m parah\x7f", id="controls-and-ansi-escape-inside"),
    pytest.param("ja\u200blan ru\u200dsak\ufeff pa\u2060rah", id="zero-width-inside"),
    pytest.param("😡😡😡🔥🔥💩", id="emoji-only"),
    pytest.param("👨‍👩‍👧‍👦🏳️‍🌈👍🏽🇮🇩", id="emoji-sequences"),
    pytest.param("\u202eالطريق مدمر\u202c שלום", id="rtl-with-override"),
    pytest.param("jalan" + "\u0301\u0317\u0358" * 2000, id="combining-marks-zalgo"),
    pytest.param("😡" * 10_000, id="ten-thousand-emoji-at-the-limit"),
    pytest.param("\uffff\ufffe\U0010ffff\ue000", id="noncharacters-and-private-use"),
    pytest.param("a", id="one-character"),
]


@pytest.mark.parametrize("text", SCORED)
def test_odd_but_real_text_is_scored(client: TestClient, text: str) -> None:
    alone = client.post("/v1/score", json={"messages": [{"text": ADUAN}]}).json()["results"][0]
    response = client.post("/v1/score", json={"messages": [{"id": "x\u0000😡", "text": text}, {"text": ADUAN}]})
    assert response.status_code == 200, response.text
    odd, plain = response.json()["results"]
    assert odd["id"] == "x\u0000😡"
    assert math.isclose(sum(odd["probabilities"].values()), 1.0, abs_tol=1e-6)
    assert all(math.isfinite(v) and 0 <= v <= 1 for v in odd["probabilities"].values())
    # A hostile sibling in the same call does not change its neighbour's answer.
    assert all(
        math.isclose(plain["probabilities"][k], v, rel_tol=1e-5, abs_tol=1e-9)
        for k, v in alone["probabilities"].items()
    )


# -- malformed HTTP against a real server ------------------------------------------------------------

SCORE_HEAD = b"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
BODY = json.dumps({"messages": [{"id": "ok", "text": ADUAN}]}).encode()
AUTH = f"Authorization: Bearer {KEY}\r\n".encode()

RAW = {
    "garbage-request-line": b"GARBAGE\r\n\r\n",
    "binary-request": bytes(range(256)) * 4,
    "null-byte-in-header": SCORE_HEAD + b"X-Evil: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "header-of-100-kb": SCORE_HEAD + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    "10000-headers": SCORE_HEAD + b"".join(b"X-%d: a\r\n" % i for i in range(10_000)) + b"\r\n",
    "negative-content-length": SCORE_HEAD + b"Content-Length: -5\r\n\r\n",
    "two-content-lengths": SCORE_HEAD + b"Content-Length: 5\r\nContent-Length: 7\r\n\r\n12345",
    "content-length-and-chunked": SCORE_HEAD + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad-chunk-size": SCORE_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "body-shorter-than-declared": SCORE_HEAD + b"Content-Length: 500\r\n\r\n" + BODY,
    "non-latin-auth-header": SCORE_HEAD
    + b"Authorization: Bearer \xff\xfe\xc3\x28\r\nContent-Length: %d\r\n\r\n" % len(BODY)
    + BODY,
    "weird-request-id": SCORE_HEAD
    + AUTH
    + b"X-Request-ID: \xff\xfe"
    + b"z" * 5000
    + b"\r\nContent-Length: %d\r\n\r\n" % len(BODY)
    + BODY,
    "path-traversal": b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-form-url": b"GET http://evil.example/v1/model HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    "unknown-method": b"BREW /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "http-0.9-style": b"GET /healthz\r\n\r\n",
}


@pytest.mark.slow
def test_malformed_http_never_gets_a_5xx_and_the_server_keeps_serving(tiny_model_dir: Path, tmp_path: Path) -> None:
    with running_server(tiny_model_dir, tmp_path, api_keys=KEY) as server:
        answers = {}
        for name, data in RAW.items():
            half_close = name == "body-shorter-than-declared"
            answers[name] = status_of(raw_http(server.port, data, timeout=5, half_close=half_close))
        # A hundred pipelined requests on one connection: every one answered, in order.
        one = SCORE_HEAD + AUTH + b"Content-Length: %d\r\n" % len(BODY)
        last = one + b"Connection: close\r\n\r\n" + BODY
        pipelined = raw_http(server.port, (one + b"\r\n" + BODY) * 99 + last, timeout=30, until_close=True)
        after = httpx.post(f"{server.url}/v1/score", json=json.loads(BODY), headers=bearer(), timeout=10)
        records = log_records(server)
        log = server.log()

    expected = {"non-latin-auth-header": 401, "weird-request-id": 200, "path-traversal": 404}
    for name, status in answers.items():
        if name in expected:
            assert status == expected[name], (name, status)
        else:  # refused, or the connection closed without an answer: never a 5xx
            assert status is None or 400 <= status < 500, (name, status)
    assert pipelined.count(b"HTTP/1.1 200 OK") == 100, pipelined[:300]
    assert after.status_code == 200 and after.json()["results"][0]["id"] == "ok"
    statuses = [r["status"] for r in records if r.get("logger") == "saring.access"]
    assert statuses and max(statuses) < 500, statuses
    assert "Traceback" not in log and '"level": "error"' not in log, log[-3000:]
