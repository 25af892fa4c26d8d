"""orjson in and out (service/http/fast_json.py): the same values and refusals as the standard library,
and /v1/score answers, built without pydantic, that are exactly what the declared response model says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_fixtures import ADUAN, SPAM, make_settings

from service.http.app import create_app
from service.http.fast_json import loads
from service.http.schemas import ScoreResponse


@pytest.mark.parametrize(
    "body",
    [
        b'{"messages": [{"id": "wa-1", "text": "jalan rusak \\u00e9 \xc3\xa9"}], "explain": false}',
        b'{"a": 1.5e-07, "b": -0.0, "c": [true, null], "d": "x", "d": "last wins"}',
        b'{"text": "\\ud800 lone surrogate escape"}',  # orjson refuses it; the validator names it later
        b'{"text": "\xed\xa0\x80"}',  # a UTF-8-encoded surrogate: stdlib decodes it with surrogatepass
        b'{"x": NaN, "y": Infinity}',
        '{"utf16": "ok"}'.encode("utf-16"),
    ],
)
def test_loads_gives_the_standard_librarys_value(body: bytes) -> None:
    expected = json.loads(body)
    got = loads(body)
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)


@pytest.mark.parametrize("body", [b'{"messages": [', b"", b"{'single': 1}", b'{"a": 1} trailing', b"\xff\xfe\x00"])
def test_loads_refuses_what_the_standard_library_refuses_with_its_error(body: bytes) -> None:
    with pytest.raises(ValueError) as expected:
        json.loads(body)
    with pytest.raises(ValueError) as got:
        loads(body)
    assert type(got.value) is type(expected.value)
    assert str(got.value) == str(expected.value)


@pytest.fixture(scope="module")
def client(tiny_model_dir: Path):
    with TestClient(create_app(make_settings(tiny_model_dir))) as client:
        yield client


@pytest.mark.parametrize("explain", [False, True])
def test_score_answer_is_what_the_response_model_would_have_written(client: TestClient, explain: bool) -> None:
    """The handler writes its answer by hand: re-validated by ScoreResponse and written back by pydantic,
    it must come out identical (same keys in the same order, extras left out when null, same values)."""
    messages = [{"id": "wa-1", "text": ADUAN}, {"text": SPAM}, {"id": "wa-3", "text": ADUAN}]
    response = client.post("/v1/score", json={"messages": messages, "explain": explain})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    rewritten = json.loads(ScoreResponse.model_validate(body).model_dump_json())
    assert rewritten == body
    assert [list(r) for r in rewritten["results"]] == [list(r) for r in body["results"]]
    assert body["results"][2]["near_duplicates"] >= 1  # the repeat within the call counts
    assert ("explanation" in body["results"][0]) is explain


def test_an_integer_beyond_64_bits_is_refused_like_before(client: TestClient) -> None:
    """orjson reads it as a float, the standard library as an int: neither is a boolean."""
    body = b'{"messages": [{"text": "jalan rusak"}], "explain": 123456789012345678901234567890}'
    response = client.post("/v1/score", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert error["message"].startswith("explain: Input should be a valid boolean")
