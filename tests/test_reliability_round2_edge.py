"""Issue 14, items 6, 7 and 9 at the HTTP edge, in-process.

6. The API key is checked from the headers before the body is read or parsed: no key gets 401 whatever
   the body (invalid JSON, gzip, a wrong type, a declared size over the limit).
7. One refusal table: bodies the parser cannot read (nesting, invalid UTF-8, gzip, a 5,000-digit
   number) are 422 `invalid_request` like any invalid JSON; a wrong content type or an encoded body
   is 415; HEAD works wherever GET does, OPTIONS answers 204 with `Allow`, every 405 has `Allow`; and
   README's table lists exactly the `type`s the code can answer.
9. X-Request-Id is echoed and logged only when it is a short plain token holding no phone or ID
   number; texts logged with SARING_LOG_TEXTS are normalised before masking; a setting puts
   /metrics, /docs, /redoc and /openapi.json behind the key.
"""

from __future__ import annotations

import ast
import gzip
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from reliability_fixtures import KEY, bearer
from service_fixtures import ADUAN, REPO, assert_error_shape, json_log_lines, make_settings

from service.http.app import create_app
from service.http.errors import ERROR_STATUS, FRAMEWORK_TYPES
from service.logs import mask_pii

JSON = {"content-type": "application/json"}
BODY = json.dumps({"messages": [{"id": "m1", "text": ADUAN}]}).encode()


@pytest.fixture(scope="module")
def client(tiny_model_dir: Path):
    with TestClient(create_app(make_settings(tiny_model_dir, api_keys=KEY)), raise_server_exceptions=False) as client:
        yield client


# -- item 6: 401 before anything is read or parsed ---------------------------------------------------

NO_KEY_BODIES = [
    pytest.param(b"{", JSON, id="invalid-json"),
    pytest.param(b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}", JSON, id="deep-nesting"),
    pytest.param(gzip.compress(BODY), {**JSON, "content-encoding": "gzip"}, id="gzip"),
    pytest.param(BODY, {"content-type": "text/plain"}, id="wrong-content-type"),
    pytest.param(b'{"messages": [{"text": "\xff"}]}', JSON, id="invalid-utf8"),
    pytest.param(b"x" * 3_000_000, JSON, id="over-the-body-limit"),
]


@pytest.mark.parametrize(("body", "headers"), NO_KEY_BODIES)
@pytest.mark.parametrize("route", ["/v1/score", "/v1/feedback", "/v1/admin/reload"])
def test_no_key_is_401_whatever_the_body(client: TestClient, route: str, body: bytes, headers: dict) -> None:
    error = assert_error_shape(client.post(route, content=body, headers=headers), 401)
    assert error["type"] == "unauthorized"
    wrong = client.post(route, content=body, headers={**headers, "Authorization": "Bearer not-the-key"})
    assert assert_error_shape(wrong, 401)["type"] == "unauthorized"


def test_with_the_key_the_same_bodies_get_their_own_refusals(client: TestClient) -> None:
    statuses = [client.post("/v1/score", content=p.values[0], headers={**p.values[1], **bearer()}).status_code
                for p in NO_KEY_BODIES]  # fmt: skip
    assert statuses == [422, 422, 415, 415, 422, 413]


# -- item 7: consistent refusals ---------------------------------------------------------------------

UNREADABLE = [
    # Near 1000 levels the parser's recursion limit (which counts the stack already in use) or the model
    # validation refuses it: 422 either way.
    pytest.param(b'{"messages": ' + b"[" * 1000 + b"]" * 1000 + b"}", "", id="nesting-1000"),
    pytest.param(b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests", id="nesting-100000"),
    pytest.param(b'{"messages": [{"text": "caf\xe9"}]}', "UTF-8", id="latin-1-byte"),
    pytest.param(b'{"messages": [{"text": "\xc0\xaf"}]}', "UTF-8", id="overlong-utf8"),
    pytest.param(gzip.compress(BODY), "UTF-8", id="gzip-without-content-encoding"),
    pytest.param(b'{"messages": [{"text": "a", "id": ' + b"9" * 5000 + b"}]}", "digits", id="5000-digit-integer"),
    pytest.param(b'{"messages": [{"text": "a"}], "explain": ' + b"1" * 5000 + b"}", "digits", id="5000-digit-flag"),
    pytest.param(b'{"messages": [{"text": "jalan"}', "JSON", id="truncated-json"),
]


@pytest.mark.parametrize(("body", "words"), UNREADABLE)
def test_bodies_the_parser_cannot_read_are_422_invalid_request(client: TestClient, body: bytes, words: str) -> None:
    error = assert_error_shape(client.post("/v1/score", content=body, headers={**JSON, **bearer()}), 422)
    assert error["type"] == "invalid_request" and words in error["message"], error
    assert "error parsing the body" not in error["message"]


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        pytest.param({"content-type": "text/plain"}, "Content-Type must be application/json", id="text-plain"),
        pytest.param({"content-type": "application/x-www-form-urlencoded"}, "application/json", id="form"),
        pytest.param({}, "got 'none'", id="no-content-type"),
        pytest.param({**JSON, "content-encoding": "gzip"}, "Content-Encoding 'gzip'", id="gzip"),
        pytest.param({**JSON, "content-encoding": "br"}, "Content-Encoding 'br'", id="brotli"),
    ],
)
def test_a_body_in_another_type_or_encoding_is_415(client: TestClient, headers: dict, words: str) -> None:
    error = assert_error_shape(client.post("/v1/score", content=BODY, headers={**headers, **bearer()}), 415)
    assert error["type"] == "unsupported_media_type" and words in error["message"], error
    assert "valid dictionary" not in error["message"]


def test_json_types_that_are_json_are_accepted(client: TestClient) -> None:
    for content_type in ("application/json", "application/json; charset=utf-8", "application/vnd.saring+json"):
        response = client.post("/v1/score", content=BODY, headers={"content-type": content_type, **bearer()})
        assert response.status_code == 200, (content_type, response.text)
    # A reload without a body needs no content type.
    assert client.post("/v1/admin/reload", headers=bearer()).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/v1/model"])
def test_head_works_wherever_get_does(client: TestClient, path: str) -> None:
    get = client.get(path, headers=bearer())
    head = client.head(path, headers=bearer())
    assert get.status_code == 200 and head.status_code == 200
    assert head.content == b"" and head.headers.get("content-type") == get.headers.get("content-type")


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/v1/score", "OPTIONS, POST"),
        ("/v1/feedback", "OPTIONS, POST"),
        ("/v1/admin/reload", "OPTIONS, POST"),
        ("/v1/model", "GET, HEAD, OPTIONS"),
        ("/healthz", "GET, HEAD, OPTIONS"),
        ("/metrics", "GET, HEAD, OPTIONS"),
    ],
)
def test_options_and_405_say_what_is_allowed(client: TestClient, path: str, allow: str) -> None:
    options = client.options(path, headers=bearer())
    assert options.status_code == 204 and options.headers["allow"] == allow and options.content == b""
    wrong = "PUT" if "GET" in allow else "GET"
    refused = client.request(wrong, path, headers=bearer())
    error = assert_error_shape(refused, 405)
    assert error["type"] == "method_not_allowed" and refused.headers["allow"] == allow
    assert allow in error["message"]
    head = client.head(path, headers=bearer())
    assert head.status_code == (200 if "HEAD" in allow else 405)
    if head.status_code == 405:
        assert head.headers["allow"] == allow


def _readme_refusal_rows() -> list[tuple[int, str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## The API", 1)[1].split("\n## ", 1)[0]
    return [(int(status), type) for status, type in re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \|", section, flags=re.M)]


def _types_answered_in_code() -> set[tuple[int, str]]:
    """(status, type) pairs: the typed-error table, the framework table, and every literal refusal in
    service/http (error_response(status, "type", ...) calls and (status, "type", message) tuples)."""
    pairs = {(status, type) for status, type in ERROR_STATUS.values()}
    pairs |= {(status, type) for status, type in FRAMEWORK_TYPES.items()}
    for path in (REPO / "service" / "http").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            args = None
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "error_response":
                args = node.args
            elif isinstance(node, ast.Tuple) and len(node.elts) == 3:
                args = node.elts
            if args and len(args) >= 2 and all(isinstance(a, ast.Constant) for a in args[:2]):
                status, type = args[0].value, args[1].value
                if isinstance(status, int) and isinstance(type, str):
                    pairs.add((status, type))
    return pairs


def test_readme_refusal_table_lists_every_type_the_code_answers() -> None:
    rows = set(_readme_refusal_rows())
    code = _types_answered_in_code()
    assert {t for _, t in code} >= {"unauthorized", "request_timeout", "unsupported_media_type", "model_error"}
    assert not code - rows, f"README's refusal table lacks {sorted(code - rows)}"
    assert not rows - code, f"README's refusal table lists what the code never answers: {sorted(rows - code)}"


# -- item 9: request ids, masking, protected docs and metrics ----------------------------------------


@pytest.mark.parametrize(
    ("supplied", "kept"),
    [
        pytest.param("req-abc-123", True, id="plain"),
        pytest.param("4bf92f3577b34da6a3ce929d0e0e4736", True, id="trace-id"),
        pytest.param("a" * 64, True, id="64-chars"),
        pytest.param("a" * 65, False, id="65-chars"),
        pytest.param("081234567890", False, id="phone"),
        pytest.param("cb-3273012505900001", False, id="nik"),
        pytest.param("wa:+6281234567890", False, id="plus-phone"),
        pytest.param("two words", False, id="space"),
        pytest.param("<script>", False, id="markup"),
    ],
)
def test_request_id_is_echoed_only_when_plain(client: TestClient, supplied: str, kept: bool) -> None:
    with json_log_lines("saring.access") as lines:
        response = client.get("/healthz", headers={"X-Request-Id": supplied})
    echoed = response.headers["x-request-id"]
    (line,) = lines
    assert line["request_id"] == echoed
    if kept:
        assert echoed == supplied
    else:
        assert echoed != supplied and re.fullmatch(r"[0-9a-f]{32}", echoed)
        assert supplied not in json.dumps(lines)


def test_raw_non_ascii_request_id_is_replaced_not_echoed(client: TestClient) -> None:
    response = client.get("/healthz", headers={"X-Request-Id": b"\xff\xfe\xc3\xa9abc"})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


STYLED_NUMBERS = [
    pytest.param("hp ０８１２３４５６７８９０ ya", "hp [PHONE] ya", id="fullwidth-phone"),
    pytest.param("wa 𝟎𝟖𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗𝟎", "wa [PHONE]", id="math-digit-phone"),
    pytest.param("hub 0812\u200b3456\u200b7890", "hub [PHONE]", id="zero-width-split-phone"),
    pytest.param("hub 0\u200c8\u200d1\u20602\ufeff34567890", "hub [PHONE]", id="joiners-between-digits"),
    pytest.param("hub 0812_3456_7890", "hub [PHONE]", id="underscores"),
    pytest.param("hub 0812/3456/7890", "hub [PHONE]", id="slashes"),
    pytest.param("+62\u00ad812\u00ad3456\u00ad7890", "[PHONE]", id="soft-hyphens"),
    pytest.param("nik ３２７３０１２５０５９００００１", "nik [NIK]", id="fullwidth-nik"),
    pytest.param("nik 3273\u200b0125\u200b0590\u200b0001", "nik [NIK]", id="zero-width-nik"),
    pytest.param("nik 3273/0125/0590/0001", "nik [NIK]", id="slash-nik"),
    pytest.param("hp 0812/3456/7890 / 0857_1234_5678", "hp [PHONE] / [PHONE]", id="two-numbers-slash-between"),
    pytest.param("RT 003/RW 011 no. 45, kode pos 40115", "RT 003/RW 011 no. 45, kode pos 40115", id="address-kept"),
]


@pytest.mark.parametrize(("text", "masked"), STYLED_NUMBERS)
def test_styled_and_split_numbers_are_masked(text: str, masked: str) -> None:
    assert mask_pii(text) == masked


def test_logged_texts_are_normalised_then_masked(tiny_model_dir: Path) -> None:
    texts = [p.values[0] for p in STYLED_NUMBERS]
    with TestClient(create_app(make_settings(tiny_model_dir, log_texts=True))) as client, json_log_lines() as lines:
        assert client.post("/v1/score", json={"messages": [{"text": t} for t in texts]}).status_code == 200
    (line,) = [x for x in lines if x["logger"] == "saring.access"]
    assert line["texts"] == [p.values[1] for p in STYLED_NUMBERS]
    for secret in ("3456", "0590", "３４５６"):
        assert secret not in json.dumps(line, ensure_ascii=False)


DOCS_AND_METRICS = ["/metrics", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"]


def test_docs_and_metrics_are_open_by_default(client: TestClient) -> None:
    for path in DOCS_AND_METRICS:
        assert client.get(path).status_code == 200, path


def test_docs_and_metrics_can_be_put_behind_the_key(tiny_model_dir: Path) -> None:
    settings = make_settings(tiny_model_dir, api_keys=KEY, protect_docs_and_metrics=True)
    with TestClient(create_app(settings)) as client:
        for path in DOCS_AND_METRICS:
            assert assert_error_shape(client.get(path), 401)["type"] == "unauthorized", path
            assert client.get(path, headers=bearer()).status_code == 200, path
        for probe in ("/healthz", "/readyz"):  # load balancers and orchestrators send no key
            assert client.get(probe).status_code == 200
