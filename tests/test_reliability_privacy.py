"""What citizens wrote and the API keys never reach logs or metrics; logging never loses a line.

tests/test_service_logs.py and test_service_auth.py check the access line of a scored request
in-process. Here: every line a real server writes (stdout and stderr, every logger, refusals and
errors included) and its /metrics, after hostile traffic carrying personal numbers and keys;
masking on real-looking Indonesian numbers; and log lines that used to be lost.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from reliability_fixtures import KEY, bearer, log_records
from service_fixtures import ADUAN, json_log_lines, make_settings, metric_samples, running_server

from service.http.app import create_app
from service.logs import JsonFormatter, configure_logging, mask_pii

# -- masking -----------------------------------------------------------------------------------------

# How numbers are really written in complaints and WhatsApp forwards; each must leave no digit run
# that identifies the person.
REAL_LOOKING = [
    ("no hp saya (0812) 3456-7890 tolong hubungi", "no hp saya [PHONE] tolong hubungi"),
    ("WA (+62) 812-3456-7890 a.n. Bu Sari", "WA [PHONE] a.n. Bu Sari"),
    ("telp +62 (812) 3456 7890", "telp [PHONE]"),
    ("hubungi 0812 - 3456 - 7890 (wa)", "hubungi [PHONE] (wa)"),
    ("nomor: +62  812  3456  7890", "nomor: [PHONE]"),
    ("hp 0812–3456–7890 / 0857‑1234‑5678", "hp [PHONE] / [PHONE]"),
    ("call center? bukan, ini 0878.8888.1234 pribadi", "call center? bukan, ini [PHONE] pribadi"),
    ("NIK : 3174 - 0512 - 0589 - 0003", "NIK : [NIK]"),
    ("KTP 3603 2806 9000 0004, KK 3603281209120003", "KTP [NIK], KK [NIK]"),
    ("nik 317405120589000３ (angka lebar)", "nik [NIK] (angka lebar)"),
    # Left alone: amounts, dates, addresses, office landlines.
    ("dana Rp 1.250.000 untuk 12 KK belum cair sejak 05-03-2024", None),
    ("RT 003/RW 011 no. 45, kode pos 40115, kantor 022-4231234", None),
]


@pytest.mark.parametrize(("text", "masked"), REAL_LOOKING)
def test_real_looking_numbers_are_masked(text: str, masked: str | None) -> None:
    assert mask_pii(text) == (text if masked is None else masked)


def test_logged_texts_are_masked_in_the_access_line(tiny_model_dir: Path) -> None:
    texts = [t for t, masked in REAL_LOOKING if masked]
    with TestClient(create_app(make_settings(tiny_model_dir, log_texts=True))) as client, json_log_lines() as lines:
        response = client.post("/v1/score", json={"messages": [{"text": t} for t in texts]})
    assert response.status_code == 200
    (line,) = [x for x in lines if x["logger"] == "saring.access"]
    assert line["texts"] == [masked for _, masked in REAL_LOOKING if masked]


# -- logging never loses a line ------------------------------------------------------------------------


def write_through(handler_stream: io.TextIOWrapper, formatter: logging.Formatter, emit) -> list[str]:
    """Log through a real StreamHandler on a strict stream; return the lines that reached it."""
    handler = logging.StreamHandler(handler_stream)
    handler.setFormatter(formatter)
    logger = logging.Logger("saring.isolated", logging.INFO)  # outside the hierarchy: only this handler
    logger.addHandler(handler)
    errors: list[str] = []
    handler.handleError = lambda record: errors.append(str(record.msg))  # a lost line
    emit(logger)
    handler_stream.flush()
    assert not errors, f"lines lost: {errors}"
    return handler_stream.buffer.getvalue().decode(handler_stream.encoding).splitlines()


def awkward_lines(logger: logging.Logger) -> None:
    logger.error("model reload refused", extra={"fields": {"dir": "/models/m\udcff", "error": "bad \ud800"}})
    logger.info("path /models/\udcfe and 😡 in the message")
    logger.info("not JSON-serialisable", extra={"fields": {"path": Path("/models/m"), "when": {1, 2}}})
    logger.info("bad format %d", "not a number")
    try:
        raise ValueError("lone \udcff in an exception")
    except ValueError:
        logger.exception("failed")


@pytest.mark.parametrize("encoding", ["utf-8", "ascii", "latin-1"])
def test_awkward_log_lines_are_written_not_lost(encoding: str) -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors="strict")
    formatter = JsonFormatter(ensure_ascii=encoding != "utf-8")
    lines = [json.loads(line) for line in write_through(stream, formatter, awkward_lines)]
    assert [x["msg"] for x in lines][:3] == [
        "model reload refused",
        "path /models/\udcfe and 😡 in the message",
        "not JSON-serialisable",
    ]
    assert lines[0]["dir"] == "/models/m\udcff"  # escaped in the line, not dropped
    assert lines[2]["path"] == "/models/m"
    assert "not a number" in lines[3]["msg"]
    assert "lone" in lines[4]["exc"]


def test_production_logging_escapes_for_a_non_utf8_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict")
    monkeypatch.setattr(sys, "stdout", stream)
    saring = logging.getLogger("saring")
    saved = saring.handlers[:], saring.level, saring.propagate
    try:
        configure_logging("info")
        logging.getLogger("saring").info("café 😡 \udcff", extra={"fields": {"dir": "/m\udcff"}})
    finally:
        saring.handlers[:], saring.level, saring.propagate = saved
    stream.flush()
    (line,) = stream.buffer.getvalue().decode("ascii").splitlines()
    assert json.loads(line)["msg"] == "café 😡 \udcff"


# -- a real server: nothing private in its output or its metrics ------------------------------------

FILE_KEY = "rel-file-key-5b2e81"
MARKER = "Zq9xMarkerWarga"
NIK = "3273012505900001"
PHONE = "081298765432"
PRIVATE = f"{MARKER} jalan rusak NIK {NIK} hp {PHONE}"


@pytest.mark.slow
def test_no_text_number_or_key_in_any_server_output_or_metric(tiny_model_dir: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"# rotated monthly\n\n{FILE_KEY}\n", encoding="utf-8")
    with running_server(tiny_model_dir, tmp_path, api_keys=KEY, api_keys_file=str(key_file)) as server:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            one = {"messages": [{"id": "p1", "text": PRIVATE}, {"text": ADUAN}]}
            calls = [
                http.post("/v1/score", json=one, headers=bearer(KEY)),
                http.post("/v1/score", json=one, headers=bearer(FILE_KEY)),
                http.post("/v1/score", json=one),  # no key
                http.post("/v1/score", json=one, headers=bearer(KEY + PHONE)),  # a wrong key holding a key
                http.post("/v1/score", json=one, headers={"Authorization": f"Basic {FILE_KEY}"}),
                http.post("/v1/score", json={"messages": [{"text": PRIVATE * 1000}]}, headers=bearer()),  # 422
                http.post("/v1/score", json={"messages": [{"text": PRIVATE}] * 300}, headers=bearer()),  # 413
                http.post("/v1/score", json={"messages": [{"text": PRIVATE, "id": 5}]}, headers=bearer()),
                http.post(
                    "/v1/score",
                    content=f'{{"messages": [{{"text": "{PRIVATE}"'.encode(),  # truncated JSON
                    headers={**bearer(), "content-type": "application/json"},
                ),
                http.get(f"/v1/{MARKER}/{NIK}", headers=bearer()),  # an unknown route holding the text
                http.get("/v1/score", params={"text": PRIVATE}, headers=bearer()),  # 405
                http.post("/v1/admin/reload", json={"model_dir": str(tmp_path / "missing")}, headers=bearer()),
            ]
            model_info = http.get("/v1/model", headers=bearer()).text
            metrics = http.get("/metrics").text
            openapi = http.get("/openapi.json").text
        server.terminate()
        server.proc.wait(timeout=30)
        log = server.log()
        records = log_records(server)

    assert [c.status_code for c in calls] == [200, 200, 401, 401, 401, 422, 413, 422, 422, 404, 405, 422]
    access = [r for r in records if r.get("logger") == "saring.access"]
    assert len(access) >= len(calls)
    assert any(r.get("msg") == "model reload refused" for r in records)
    for secret in (MARKER, NIK, PHONE, KEY, FILE_KEY):
        assert secret not in log, f"{secret!r} in the server log"
        assert secret not in metrics, f"{secret!r} in /metrics"
        assert secret not in model_info and secret not in openapi
    # Metric labels are route templates and status codes: an unknown path is "unmatched", not itself.
    routes = {labels["route"] for labels, _ in metric_samples(metrics)["saring_requests_total"]}
    assert routes <= {"/v1/score", "/v1/model", "/v1/admin/reload", "/metrics", "/readyz", "unmatched"}, routes
