"""One JSON access line per request, no message text unless asked for, and then with numbers masked."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_fixtures import ADUAN, SPAM, json_log_lines, make_settings

from service.http.app import create_app
from service.logs import configure_logging, mask_pii

PRIVATE = "jalan rusak parah NIK saya 3273012505900001 hubungi 081234567890 atau +62 812-3456-7891"


@pytest.fixture(scope="module")
def client(tiny_model_dir: Path):
    with TestClient(create_app(make_settings(tiny_model_dir, max_body_bytes=4096))) as client:
        yield client


@pytest.fixture(scope="module")
def texts_client(tiny_model_dir: Path):
    with TestClient(create_app(make_settings(tiny_model_dir, log_texts=True))) as client:
        yield client


def access_lines(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["logger"] == "saring.access"]


def test_one_json_line_per_request_with_its_fields(client: TestClient) -> None:
    with json_log_lines() as lines:
        response = client.post(
            "/v1/score",
            json={"messages": [{"text": ADUAN}, {"text": SPAM}, {"text": PRIVATE}]},
            headers={"X-Request-ID": "req-abc-123"},
        )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-abc-123"
    decisions: dict[str, int] = {}
    for result in response.json()["results"]:
        decisions[result["decision"]] = decisions.get(result["decision"], 0) + 1

    (line,) = access_lines(lines)
    assert line["request_id"] == "req-abc-123"
    assert line["method"] == "POST"
    assert line["route"] == "/v1/score"
    assert line["status"] == 200
    assert isinstance(line["latency_ms"], float) and 0 <= line["latency_ms"] < 60_000
    assert line["messages"] == 3
    assert line["decisions"] == decisions
    assert line["level"] == "info" and line["ts"]


def test_message_text_is_not_logged_by_default(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with json_log_lines() as lines:
        assert client.post("/v1/score", json={"messages": [{"text": PRIVATE}]}).status_code == 200
        client.post("/v1/score", json={"messages": [{"text": PRIVATE, "id": 5}]})  # refused: 422
    assert [line["status"] for line in access_lines(lines)] == [200, 422]
    everything = caplog.text + json.dumps(lines)
    for fragment in ("jalan rusak parah", "3273012505900001", "081234567890", "812-3456-7891", "[NIK]"):
        assert fragment not in everything
    assert "texts" not in access_lines(lines)[0]


def test_refusals_get_one_line_each_with_their_status(client: TestClient) -> None:
    with json_log_lines() as lines:
        client.get("/nope", headers={"X-Request-ID": "r-404"})
        json_type = {"content-type": "application/json"}
        client.post("/v1/score", content=b"x" * 5000, headers={"X-Request-ID": "r-413", **json_type})
        client.post("/v1/score", content=b"{", headers={"X-Request-ID": "r-422", **json_type})
        client.get("/healthz", headers={"X-Request-ID": "r-200"})
    got = [(line["request_id"], line["status"]) for line in access_lines(lines)]
    assert got == [("r-404", 404), ("r-413", 413), ("r-422", 422), ("r-200", 200)]


def test_request_ids_are_generated_and_unique(client: TestClient) -> None:
    with json_log_lines() as lines:
        answers = [client.get("/healthz") for _ in range(5)]
    ids = [line["request_id"] for line in access_lines(lines)]
    assert ids == [a.headers["x-request-id"] for a in answers]
    assert len(set(ids)) == 5 and all(ids)


def test_log_texts_logs_masked_texts(texts_client: TestClient) -> None:
    texts = [PRIVATE, "pinjaman cepat WA 0857.1234.5678 NIK 3273-0125-0590-0002", ADUAN]
    with json_log_lines() as lines:
        response = texts_client.post("/v1/score", json={"messages": [{"text": t} for t in texts]})
    assert response.status_code == 200
    (line,) = access_lines(lines)
    assert line["texts"] == [
        "jalan rusak parah NIK saya [NIK] hubungi [PHONE] atau [PHONE]",
        "pinjaman cepat WA [PHONE] NIK [NIK]",
        ADUAN,
    ]
    dumped = json.dumps(lines)
    for number in ("3273012505900001", "081234567890", "812-3456-7891", "0857.1234.5678", "3273-0125-0590-0002"):
        assert number not in dumped


def test_production_logging_writes_json_lines_to_stdout(
    texts_client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    saring = logging.getLogger("saring")
    saved = saring.handlers[:], saring.level, saring.propagate
    capsys.readouterr()
    try:
        configure_logging("info")
        texts_client.post("/v1/score", json={"messages": [{"text": "jalan rusak\nbaris baru 081234567890"}]})
    finally:
        saring.handlers[:], saring.level, saring.propagate = saved
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines()]  # every line is one JSON object
    (line,) = [x for x in lines if x["logger"] == "saring.access"]
    assert line["texts"] == ["jalan rusak\nbaris baru [PHONE]"]
    assert "081234567890" not in out


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("NIK saya 3273012505900001 mohon dibantu", "NIK saya [NIK] mohon dibantu"),
        ("nik: 3273 0125 0590 0001.", "nik: [NIK]."),
        ("NIK 32.73.01.250590.0001 a.n. Siti", "NIK [NIK] a.n. Siti"),
        ("no KK 3273-0125-0590-0001", "no KK [NIK]"),
        ("NIK3273012505900001", "NIK[NIK]"),
        ("hubungi 081234567890 ya pak", "hubungi [PHONE] ya pak"),
        ("WA +62 812-3456-7890 (Budi)", "WA [PHONE] (Budi)"),
        ("+6281234567890", "[PHONE]"),
        ("hp 0812 3456 7890, wa 0857.1234.5678", "hp [PHONE], wa [PHONE]"),
        ("wa.me/6285712345678", "wa.me/[PHONE]"),
        ("hp:0813-1234-567", "hp:[PHONE]"),
        ("nomor 62 821 1234 5678 tidak aktif", "nomor [PHONE] tidak aktif"),
        ("wa081234567890", "wa[PHONE]"),
        ("telp081398765432 atau nik3201234567890001", "telp[PHONE] atau nik[NIK]"),
        ("081234567890 081298765432", "[PHONE] [PHONE]"),
        # Not personal numbers: left alone.
        ("bansos Rp 600.000 belum cair sejak 2023", "bansos Rp 600.000 belum cair sejak 2023"),
        ("RT 03/RW 05 kel. 12345, 021-5551234", "RT 03/RW 05 kel. 12345, 021-5551234"),
        ("jalan rusak parah", "jalan rusak parah"),
    ],
)
def test_mask_pii(text: str, masked: str) -> None:
    assert mask_pii(text) == masked
