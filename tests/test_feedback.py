"""POST /v1/feedback: durable, idempotent, concurrent-safe; and `training export-feedback` -> `train`."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from service_fixtures import (
    ADUAN,
    assert_error_shape,
    json_log_lines,
    make_settings,
    post_verdicts_concurrently,
    running_server,
)
from training_fixtures import read_jsonl, torch_threads, train_argv

from service.features.feedback import FeedbackStore, database_url
from service.http.app import create_app

KEY = "feedback-test-key"
TRICKY = 'teks b, dengan koma\ndan "kutip"'  # a comma, a newline and quotes survive both formats
AUTH = {"Authorization": f"Bearer {KEY}"}


def stored(db: Path) -> list[tuple[str, str, str]]:
    """(message id, label, text) of every row, read with plain sqlite3: what is on disk."""
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT message_id, label, text FROM feedback ORDER BY seq").fetchall()


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "feedback" / "feedback.sqlite3"


@pytest.fixture()
def client(tiny_model_dir: Path, db: Path):
    settings = make_settings(tiny_model_dir, feedback_db_path=db, api_keys=KEY)
    with TestClient(create_app(settings)) as client:
        yield client


def post(client, **body) -> httpx.Response:
    return client.post("/v1/feedback", json=body, headers=AUTH)


def test_feedback_is_stored_and_repeats_are_idempotent(client: TestClient, db: Path) -> None:
    first = post(client, id="wa-1", text=ADUAN, label="aduan", note="jalan desa", moderator_id="desk-7")
    assert first.status_code == 201, first.text
    receipt = first.json()
    assert receipt["id"] == "wa-1" and receipt["label"] == "aduan" and receipt["created"] is True
    assert receipt["model_version"]
    # The same verdict again (a retry): 200, the stored row, nothing new on disk.
    again = post(client, id="wa-1", text=ADUAN, label="aduan", note="a retry")
    assert again.status_code == 200, again.text
    assert again.json() == {**receipt, "created": False}
    # A corrected label for the same message is a new verdict.
    corrected = post(client, id="wa-1", text=ADUAN, label="bukan_aduan")
    assert corrected.status_code == 201
    assert stored(db) == [("wa-1", "aduan", ADUAN), ("wa-1", "bukan_aduan", ADUAN)]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        note, moderator = conn.execute("SELECT note, moderator_id FROM feedback WHERE seq = 1").fetchone()
    assert (note, moderator) == ("jalan desa", "desk-7")  # the first write stands


def test_feedback_texts_are_never_logged(client: TestClient) -> None:
    secret = "rahasia pelapor nik 3171234567890001 di jalan mawar"
    with json_log_lines() as lines:
        assert post(client, id="log-1", text=secret, label="aduan", note=secret).status_code == 201
    (access,) = [line for line in lines if line.get("route") == "/v1/feedback"]
    assert access["feedback_label"] == "aduan" and access["created"] is True
    assert not any("rahasia" in json.dumps(line) for line in lines)


def test_the_store_commits_with_full_fsync(db: Path) -> None:
    store = FeedbackStore(database_url(None, db))
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        store.close()


def test_unknown_labels_and_bad_bodies_are_refused(client: TestClient, db: Path) -> None:
    error = assert_error_shape(post(client, id="x", text=ADUAN, label="complaint"), 422)
    assert "aduan, bukan_aduan, iseng, spam" in error["message"]
    assert_error_shape(post(client, id="x", text="   ", label="aduan"), 422)
    assert_error_shape(post(client, text=ADUAN, label="aduan"), 422)  # the id is what makes it idempotent
    assert_error_shape(post(client, id="", text=ADUAN, label="aduan"), 422)
    assert not db.exists() or stored(db) == []


def test_feedback_needs_the_api_key_when_keys_are_set(client: TestClient) -> None:
    response = client.post("/v1/feedback", json={"id": "x", "text": ADUAN, "label": "aduan"})
    assert_error_shape(response, 401)


def test_a_database_failure_is_a_503_never_a_2xx(tiny_model_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the database folder should be")
    settings = make_settings(tiny_model_dir, feedback_db_path=blocker / "feedback.sqlite3")
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/feedback", json={"id": "x", "text": ADUAN, "label": "aduan"})
    error = assert_error_shape(response, 503)
    assert error["type"] == "feedback_unavailable"
    assert response.headers["Retry-After"]


# -- a real server ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_concurrent_feedback_loses_nothing(tiny_model_dir: Path, tmp_path: Path, db: Path) -> None:
    n = 200
    with running_server(tiny_model_dir, tmp_path, feedback_db_path=str(db)) as server:
        statuses, expected = post_verdicts_concurrently(server.url, n, "m", workers=50)
    assert statuses.count(201) == n - n // 4 + 1, statuses
    assert statuses.count(200) == n // 4 - 1
    rows = stored(db)
    assert len(rows) == n - n // 4 + 1
    assert {r[0] for r in rows} == expected


@pytest.mark.slow
def test_acknowledged_feedback_survives_a_killed_server(tiny_model_dir: Path, tmp_path: Path, db: Path) -> None:
    """SIGKILL the server the moment the 30th 2xx arrives, with writes still in flight: every call
    that was answered 2xx must be in the database afterwards."""
    acknowledged: set[str] = set()
    lock = threading.Lock()
    enough = threading.Event()
    with running_server(tiny_model_dir, tmp_path, feedback_db_path=str(db)) as server:

        def writer(w: int) -> None:
            with httpx.Client(base_url=server.url, timeout=10) as http:
                for i in range(1000):
                    message_id = f"w{w}-{i}"
                    try:
                        response = http.post("/v1/feedback", json={"id": message_id, "text": ADUAN, "label": "aduan"})
                    except httpx.HTTPError:
                        return  # the server is gone
                    if response.status_code in (200, 201):
                        with lock:
                            acknowledged.add(message_id)
                            if len(acknowledged) >= 30:
                                enough.set()

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        assert enough.wait(timeout=60), f"only {len(acknowledged)} acknowledged:\n{server.log()}"
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)
        for t in threads:
            t.join(timeout=30)
        with lock:
            answered = set(acknowledged)
    assert server.proc.returncode == -signal.SIGKILL
    on_disk = {message_id for message_id, _, _ in stored(db)}  # sqlite3 replays the WAL on open
    assert answered <= on_disk, f"acknowledged but lost: {sorted(answered - on_disk)}"


# -- export-feedback -> train ----------------------------------------------------------------------


def test_export_keeps_the_latest_label_per_message_as_jsonl_and_csv(tmp_path: Path, db: Path) -> None:
    from training.__main__ import main

    store = FeedbackStore(database_url(None, db))
    store.record("a", "aduan", "teks a")
    store.record("b", "spam", TRICKY)
    store.record("a", "bukan_aduan", "teks a")  # the desk corrected itself: the later label wins
    store.record("a", "aduan", "teks a")  # a repeat of the first verdict changes nothing
    store.close()

    assert main(["export-feedback", "--db_path", str(db), "--output", str(tmp_path / "fb.jsonl")]) == 0
    assert read_jsonl(tmp_path / "fb.jsonl") == [
        {"text": TRICKY, "label": "spam", "id": "b"},
        {"text": "teks a", "label": "bukan_aduan", "id": "a"},
    ]
    assert main(["export-feedback", "--db_path", str(db), "--output", str(tmp_path / "fb.csv")]) == 0
    from training.data import read_rows

    rows, columns, _ = read_rows(str(tmp_path / "fb.csv"))
    assert columns == ["text", "label", "id"]
    assert [(r["text"], r["label"]) for r in rows] == [(TRICKY, "spam"), ("teks a", "bukan_aduan")]
    assert main(["export-feedback", "--db_path", str(tmp_path / "missing.sqlite3"), "--output", "x.jsonl"]) == 2


@pytest.mark.slow
def test_exported_feedback_trains_with_the_seed_data(tmp_path: Path, db: Path, tiny_data: dict[str, Path]) -> None:
    from training.__main__ import main

    store = FeedbackStore(database_url(None, db))
    verdicts = [
        ("lampu jalan di gang mawar mati sejak bulan lalu mohon diganti", "aduan"),
        ("sekolah di kampung kami atapnya bocor mohon dibantu", "aduan"),
        ("pak wapres semoga sehat selalu salam dari warga", "bukan_aduan"),
        ("terima kasih atas tanggapannya min", "bukan_aduan"),
        ("lapor ada alien mendarat di sawah wkwk", "iseng"),
        ("mas tolong pilihkan baju lebaran buat saya", "iseng"),
        ("daftar sekarang bonus deposit 100 persen klik link", "spam"),
        ("investasi emas untung 20 persen per minggu hubungi kami", "spam"),
    ]
    for i, (text, label) in enumerate(verdicts):
        store.record(f"fb-{i}", label, text)
    store.close()
    exported = tmp_path / "feedback.jsonl"
    assert main(["export-feedback", "--db_path", str(db), "--output", str(exported)]) == 0

    out = tmp_path / "retrained"
    with torch_threads(1):
        # 3 epochs may stay near chance: the sanity gate is waived, the data flow is what is tested.
        argv = train_argv([tiny_data["train"], exported], out, "--allow_weak_model", "true", epochs=3)
        assert main(["train", *argv]) == 0
    sidecar = json.loads((out / "saring.json").read_text(encoding="utf-8"))
    data = sidecar["training_data"]
    assert str(tiny_data["train"]) in data["sources"]["train"] and str(exported) in data["sources"]["train"]
    seed_rows = len(read_jsonl(tiny_data["train"]))
    assert data["rows"]["train"] + data["rows"]["validation"] == seed_rows + len(verdicts)
