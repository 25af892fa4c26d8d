"""The scoring API through TestClient (lifespan included): answers, limits, refusals, model info, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_fixtures import (
    ADUAN,
    BUKAN,
    ISENG,
    SPAM,
    assert_error_shape,
    make_settings,
    metric_samples,
    metric_value,
)

from service.http.app import create_app
from service.model.folder import ModelFolderError, read_sidecar

MAX_MESSAGES = 4
MAX_CHARS = 3000
MAX_BODY = 16 * 1024
RESULT_KEYS = {
    "id",
    "validity",
    "spam",
    "category",
    "probabilities",
    "decision",
    "is_spam",
    "truncated",
    "near_duplicates",  # flood detection is on by default
}


@pytest.fixture(scope="module")
def client(tiny_model_dir: Path):
    settings = make_settings(
        tiny_model_dir,
        max_messages_per_request=MAX_MESSAGES,
        max_chars_per_message=MAX_CHARS,
        max_body_bytes=MAX_BODY,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def score(client: TestClient, *texts: str, **kwargs) -> list[dict]:
    response = client.post("/v1/score", json={"messages": [{"text": t} for t in texts]}, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()["results"]


# -- answers ---------------------------------------------------------------------------------------


def test_answer_shape_ids_model_and_scores(client: TestClient, tiny_model_dir: Path) -> None:
    sidecar = read_sidecar(tiny_model_dir)
    messages = [
        {"id": "wa-1029", "text": ADUAN},
        {"text": SPAM},  # no id: echoed as null
        {"id": "sms-7", "text": ISENG},
        {"id": None, "text": BUKAN},
    ]
    response = client.post("/v1/score", json={"messages": messages})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": sidecar.name, "version": sidecar.version}
    results = body["results"]
    assert [r["id"] for r in results] == ["wa-1029", None, "sms-7", None]
    for result in results:
        assert set(result) == RESULT_KEYS
        probs = result["probabilities"]
        assert list(probs) == sidecar.labels
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
        assert all(0.0 <= p <= 1.0 for p in probs.values())
        assert result["validity"] == pytest.approx(probs["aduan"], abs=1e-12)
        assert result["spam"] == pytest.approx(probs["spam"] + probs["iseng"], abs=1e-12)
        assert result["category"] == max(probs, key=probs.get)
        assert result["decision"] in {"accept", "review", "reject"}
        assert isinstance(result["is_spam"], bool)
        assert result["truncated"] is False
    # The tiny model learned these four texts: each lands in its own category.
    assert [r["category"] for r in results] == ["aduan", "spam", "iseng", "bukan_aduan"]


def test_results_come_back_in_request_order(client: TestClient) -> None:
    """The queue sorts messages by length for batching; answers must still follow the request."""
    texts = [SPAM + " " + SPAM, "lapor", ADUAN, "jalan"]  # long, short, middle, shortest
    alone = {t: score(client, t)[0] for t in texts}
    messages = [{"id": f"m{i}", "text": t} for i, t in enumerate(texts)]
    for order in (messages, messages[::-1]):
        results = client.post("/v1/score", json={"messages": order}).json()["results"]
        assert [r["id"] for r in results] == [m["id"] for m in order]
        for message, result in zip(order, results, strict=True):
            expected = alone[message["text"]]
            assert result["category"] == expected["category"]
            for label, p in expected["probabilities"].items():
                assert result["probabilities"][label] == pytest.approx(p, abs=1e-6)


def test_every_response_names_the_model(client: TestClient, tiny_model_dir: Path) -> None:
    sidecar = read_sidecar(tiny_model_dir)
    for text in (ADUAN, "x", "tes " * 50):
        response = client.post("/v1/score", json={"messages": [{"text": text}]})
        assert response.json()["model"] == {"name": sidecar.name, "version": sidecar.version}


def test_truncated_flag_follows_max_length_tokens(client: TestClient, tiny_model_dir: Path) -> None:
    max_length = read_sidecar(tiny_model_dir).max_length
    # "jalan" is one token; [CLS] and [SEP] take two more.
    fits = " ".join(["jalan"] * (max_length - 2))
    over = " ".join(["jalan"] * (max_length - 1))
    much_longer = " ".join(["jalan"] * (3 * max_length))
    results = score(client, fits, over, "jalan", much_longer)
    assert [r["truncated"] for r in results] == [False, True, False, True]


def test_pipeline_gives_the_same_probabilities(tiny_model_dir: Path) -> None:
    """docs/design.md section 2: the folder loads in transformers.pipeline, and the service agrees with it.

    In fp32, as `pipeline` runs: `auto` may serve bf16 on this CPU (tests/test_backend_dtype.py).
    """
    from transformers import pipeline

    texts = [ADUAN, BUKAN, ISENG, SPAM, "mohon diperbaiki wkwk", "bansos tidak cair wkwk", "selamat pagi jalan rusak"]
    clf = pipeline("text-classification", model=str(tiny_model_dir), top_k=None, device="cpu")
    expected = clf(texts)
    with TestClient(create_app(make_settings(tiny_model_dir, dtype="fp32"))) as client:
        assert client.get("/v1/model").json()["precision"] == "fp32"
        results = score(client, *texts[:4]) + score(client, *texts[4:])
    for text, result, reference in zip(texts, results, expected, strict=True):
        reference = {row["label"]: row["score"] for row in reference}
        assert set(reference) == set(result["probabilities"])
        for label, p in reference.items():
            assert result["probabilities"][label] == pytest.approx(p, abs=1e-4), (text, label)


def test_concurrent_large_requests_are_all_scored_in_order(tiny_model_dir: Path) -> None:
    """Calls of more than 8 messages are tokenised off the event loop while other calls use the model."""
    from concurrent.futures import ThreadPoolExecutor

    texts = [ADUAN, BUKAN, ISENG, SPAM] * 3
    with TestClient(create_app(make_settings(tiny_model_dir, max_batch_size=8))) as client:
        expected = [r["category"] for r in score(client, *texts)]
        assert expected == ["aduan", "bukan_aduan", "iseng", "spam"] * 3

        def call(i: int) -> list[str]:
            return [r["category"] for r in score(client, *texts[i % 4 :], *texts[: i % 4])]

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(call, range(32)))
    assert answers == [expected[i % 4 :] + expected[: i % 4] for i in range(32)]


# -- limits and refusals ---------------------------------------------------------------------------


def test_too_many_messages_is_413_naming_the_setting(client: TestClient) -> None:
    response = client.post("/v1/score", json={"messages": [{"text": ADUAN}] * (MAX_MESSAGES + 1)})
    error = assert_error_shape(response, 413)
    assert "SARING_MAX_MESSAGES_PER_REQUEST" in error["message"]
    assert str(MAX_MESSAGES) in error["message"]
    assert len(score(client, *[ADUAN] * MAX_MESSAGES)) == MAX_MESSAGES  # the limit itself is allowed


def test_too_long_text_is_422_naming_the_setting(client: TestClient) -> None:
    response = client.post("/v1/score", json={"messages": [{"text": ADUAN}, {"text": "a" * (MAX_CHARS + 1)}]})
    error = assert_error_shape(response, 422)
    assert "SARING_MAX_CHARS_PER_MESSAGE" in error["message"]
    assert "messages[1]" in error["message"]
    at_limit = ("jalan " * MAX_CHARS)[:MAX_CHARS]
    assert score(client, at_limit)[0]["truncated"] is True  # at the limit: scored (and cut to max_length)


def test_body_over_limit_by_content_length_is_413(client: TestClient) -> None:
    body = json.dumps({"messages": [{"text": "jalan rusak " * 100}] * 20}).encode()
    assert len(body) > MAX_BODY
    response = client.post("/v1/score", content=body, headers={"content-type": "application/json"})
    error = assert_error_shape(response, 413)
    assert "SARING_MAX_BODY_BYTES" in error["message"]


def test_streamed_body_over_limit_without_content_length_is_413(client: TestClient) -> None:
    chunk = b'{"messages": [' + b'{"text": "jalan rusak parah"}, ' * 200

    def stream():
        for _ in range(10):
            yield chunk

    response = client.post("/v1/score", content=stream(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    error = assert_error_shape(response, 413)
    assert "SARING_MAX_BODY_BYTES" in error["message"]


def test_streamed_body_under_limit_is_scored(client: TestClient) -> None:
    def stream():
        yield b'{"messages": [{"id": "c1", '
        yield b'"text": "' + ADUAN.encode() + b'"}]}'

    response = client.post("/v1/score", content=stream(), headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["id"] == "c1"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        pytest.param(b'{"messages": []}', 422, "messages", id="empty-list"),
        pytest.param(b"{}", 422, "messages", id="no-messages"),
        pytest.param(b'{"messages": [{"text": ""}]}', 422, "empty", id="empty-text"),
        pytest.param(b'{"messages": [{"text": " \\n\\t "}]}', 422, "empty", id="whitespace-text"),
        pytest.param(b'{"messages": [{"id": "x"}]}', 422, "text", id="missing-text"),
        pytest.param(b'{"messages": [{"text": 5}]}', 422, "text", id="text-not-string"),
        pytest.param(b'{"messages": [{"text": ["a"]}]}', 422, "text", id="text-list"),
        pytest.param(b'{"messages": "jalan rusak"}', 422, "messages", id="messages-not-list"),
        pytest.param(b'{"messages": [{"id": 7, "text": "jalan"}]}', 422, "id", id="id-not-string"),
        pytest.param(b'[{"text": "jalan"}]', 422, "body", id="body-list"),
        pytest.param(b"null", 422, "body", id="body-null"),
        pytest.param(b'{"messages": [{"text": "jalan"}', 422, "JSON", id="truncated-json"),
        pytest.param(b"messages=jalan", 422, "JSON", id="not-json"),
        pytest.param(b'{"messages": [{"text": "\\ud800"}]}', 422, "surrogate", id="lone-surrogate-escape"),
        pytest.param(b'{"messages": [{"text": "jalan \\udfff rusak"}]}', 422, "surrogate", id="lone-low-surrogate"),
        pytest.param(b'{"messages": [{"id": "\\ud800", "text": "jalan"}]}', 422, "id", id="lone-surrogate-in-id"),
    ],
)
def test_bad_requests_get_4xx_in_the_error_shape(client: TestClient, body: bytes, status: int, words: str) -> None:
    response = client.post("/v1/score", content=body, headers={"content-type": "application/json"})
    error = assert_error_shape(response, status)
    assert words.lower() in error["message"].lower()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"messages": [{"text": "\xff\xfe jalan"}]}', id="invalid-utf8"),
        pytest.param(b'{"messages": [{"text": "\xed\xa0\x80"}]}', id="utf8-encoded-surrogate"),
    ],
)
def test_undecodable_bodies_get_4xx_not_5xx(client: TestClient, body: bytes) -> None:
    response = client.post("/v1/score", content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert_error_shape(response)


def test_error_messages_do_not_echo_the_text(client: TestClient) -> None:
    secret = "NIK saya 3273012505900001 jalan rusak"
    response = client.post("/v1/score", json={"messages": [{"text": secret, "id": 5}]})
    error = assert_error_shape(response, 422)
    assert "id" in error["message"]
    response = client.post("/v1/score", json={"messages": [{"text": secret + " x" * MAX_CHARS}]})
    assert_error_shape(response, 422)
    assert "3273012505900001" not in response.text


def test_unknown_route_and_wrong_method_use_the_error_shape(client: TestClient) -> None:
    assert assert_error_shape(client.get("/v2/score"), 404)["type"] == "not_found"
    assert assert_error_shape(client.post("/nope", json={}), 404)["type"] == "not_found"
    assert assert_error_shape(client.get("/v1/score"), 405)["type"] == "method_not_allowed"


def test_service_still_scores_after_refusals(client: TestClient) -> None:
    client.post("/v1/score", content=b"{", headers={"content-type": "application/json"})
    client.post("/v1/score", json={"messages": [{"text": "a" * (MAX_CHARS + 1)}]})
    assert score(client, ADUAN)[0]["category"] == "aduan"


# -- model info, probes, metrics, docs -------------------------------------------------------------


def test_model_info(client: TestClient, tiny_model_dir: Path) -> None:
    sidecar = read_sidecar(tiny_model_dir)
    response = client.get("/v1/model")
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["name"] == sidecar.name
    assert info["version"] == sidecar.version
    assert info["labels"] == ["aduan", "bukan_aduan", "iseng", "spam"]
    assert info["scores"] == {"validity": ["aduan"], "spam": sidecar.scores["spam"]}
    assert info["max_length"] == sidecar.max_length
    for name in ("accept", "reject", "spam"):
        threshold = info["thresholds"][name]
        assert threshold["value"] == getattr(sidecar, name).value
        assert threshold["objective"]
    summary = info["metrics"]
    assert set(summary) == {"validation", "test"}
    figures = json.loads((tiny_model_dir / "metrics.json").read_text(encoding="utf-8"))
    for split in ("validation", "test"):
        assert summary[split]["macro_f1"] == pytest.approx(figures[split]["macro_f1"])
        assert summary[split]["n"] == figures[split]["n"]
    assert info["last_reload_error"] is None


def test_probes_after_startup(client: TestClient, tiny_model_dir: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model": read_sidecar(tiny_model_dir).version}


def test_openapi_documents_the_score_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/score" in spec["paths"]
    assert "/v1/model" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_metrics_exposition(client: TestClient, tiny_model_dir: Path) -> None:
    before = metric_value(client.get("/metrics").text, "saring_decisions_total")
    score(client, ADUAN, SPAM, BUKAN)
    client.post("/v1/score", json={"messages": []})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = metric_samples(response.text)
    for name in (
        "saring_requests_total",
        "saring_request_duration_seconds_count",
        "saring_batch_size_count",
        "saring_queue_depth",
        "saring_decisions_total",
        "saring_model_info",
    ):
        assert name in samples, name
    text = response.text
    assert metric_value(text, "saring_decisions_total") == before + 3
    assert metric_value(text, "saring_requests_total", route="/v1/score", status="200") >= 1
    assert metric_value(text, "saring_requests_total", route="/v1/score", status="422") >= 1
    assert metric_value(text, "saring_request_duration_seconds_count", route="/v1/score") >= 2
    assert metric_value(text, "saring_batch_size_sum") >= 3
    ((labels, value),) = samples["saring_model_info"]
    assert value == 1
    assert labels["version"] == read_sidecar(tiny_model_dir).version
    # Message texts never become label values.
    assert "slot gacor" not in text


def test_a_broken_model_folder_is_refused_at_startup(tmp_path: Path, tiny_model_dir: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not the trained weights")
    with pytest.raises(ModelFolderError, match="checksum"), TestClient(create_app(make_settings(broken))):
        pass
