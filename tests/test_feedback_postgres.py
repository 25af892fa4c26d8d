"""Feedback on a real PostgreSQL server (Debian `postgresql`, an initdb cluster on 127.0.0.1 started
by the fixture): the SQLite checks of test_feedback.py, against the server scale-out deployments use."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from engine_fixtures import PostgresServer, postgres_server
from fastapi.testclient import TestClient
from service_fixtures import ADUAN, SPAM, ServerProcess, make_settings, post_verdicts_concurrently, running_server

from service.features.feedback import FeedbackStore
from service.http.app import create_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pg() -> PostgresServer:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module")
def server(pg: PostgresServer, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One `python -m service` writing to this PostgreSQL, for the tests that need a real process."""
    with running_server(tiny_model_dir, tmp_path_factory.mktemp("pg-server"), feedback_db_url=pg.url) as server:
        yield server


def stored(pg: PostgresServer, where: str = "true") -> list[tuple[str, str, str]]:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=pg.port, user="saring", dbname=pg.database) as conn:
        return conn.execute(f"SELECT message_id, label, text FROM feedback WHERE {where} ORDER BY seq").fetchall()


def test_the_store_is_idempotent_and_keeps_corrections(pg: PostgresServer) -> None:
    store = FeedbackStore(pg.url)
    try:
        first, created = store.record("pg-1", "aduan", ADUAN, note="jalan desa", moderator_id="desk-7")
        assert created and first.received_at.tzinfo is not None
        again, created = store.record("pg-1", "aduan", ADUAN, note="a retry")
        assert not created and again == first  # the first write stands
        _, created = store.record("pg-1", "bukan_aduan", ADUAN)
        assert created
        assert [r.label for r in store.latest_per_message() if r.message_id == "pg-1"] == ["bukan_aduan"]
    finally:
        store.close()
    assert stored(pg, "message_id = 'pg-1'") == [("pg-1", "aduan", ADUAN), ("pg-1", "bukan_aduan", ADUAN)]


def test_the_api_stores_feedback_in_postgresql(pg: PostgresServer, tiny_model_dir: Path) -> None:
    with TestClient(create_app(make_settings(tiny_model_dir, feedback_db_url=pg.url))) as client:
        body = {"id": "api-1", "text": SPAM, "label": "spam"}
        assert client.post("/v1/feedback", json=body).status_code == 201
        repeat = client.post("/v1/feedback", json=body)
        assert repeat.status_code == 200 and repeat.json()["created"] is False
    assert stored(pg, "message_id = 'api-1'") == [("api-1", "spam", SPAM)]


def test_concurrent_writers_lose_nothing(pg: PostgresServer, server: ServerProcess) -> None:
    n = 160
    statuses, expected = post_verdicts_concurrently(server.url, n, "cw-", workers=32)
    assert statuses.count(201) == n - n // 4 + 1, statuses
    assert statuses.count(200) == n // 4 - 1
    rows = stored(pg, "message_id LIKE 'cw-%'")
    assert len(rows) == n - n // 4 + 1
    assert {r[0] for r in rows} == expected


def test_acknowledged_rows_survive_a_killed_database_and_service_recovers(
    pg: PostgresServer, server: ServerProcess
) -> None:
    """SIGKILL PostgreSQL (postmaster and backends) with writes in flight: every verdict answered 2xx is
    there after the restart; calls during the outage get 503 feedback_unavailable, never a 2xx or a
    500; and the first call after the restart is stored (dead pooled connections are not reused)."""
    acknowledged: set[str] = set()
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    enough = threading.Event()
    stop = threading.Event()

    def writer(w: int) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for i in range(400):  # bounded: at most 400 calls per writer
                if stop.is_set():
                    return
                message_id = f"kill-{w}-{i}"
                response = http.post("/v1/feedback", json={"id": message_id, "text": ADUAN, "label": "aduan"})
                with lock:
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    if response.status_code in (200, 201):
                        acknowledged.add(message_id)
                        if len(acknowledged) >= 40:
                            enough.set()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    try:
        assert enough.wait(timeout=60), f"only {len(acknowledged)} acknowledged: {statuses}"
        pg.kill()
        time.sleep(0.5)  # writers now meet a dead database
        stop.set()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    pg.start()  # crash recovery replays the WAL
    with lock:
        answered = set(acknowledged)
    first_after = httpx.post(
        f"{server.url}/v1/feedback", json={"id": "after-restart", "text": ADUAN, "label": "aduan"}, timeout=10
    )
    assert set(statuses) <= {200, 201, 503}, statuses
    assert statuses.get(503), f"no call met the dead database: {statuses}"
    in_database = {message_id for message_id, _, _ in stored(pg, "message_id LIKE 'kill-%'")}
    assert answered <= in_database, f"acknowledged but lost: {sorted(answered - in_database)}"
    assert first_after.status_code == 201, first_after.text


def test_the_first_verdict_after_an_idle_restart_is_stored(pg: PostgresServer, tiny_model_dir: Path) -> None:
    """PostgreSQL restarted while no feedback came in: the pooled connections are dead, and the next
    verdict must still be stored, not answered 503."""
    with TestClient(create_app(make_settings(tiny_model_dir, feedback_db_url=pg.url))) as client:
        assert client.post("/v1/feedback", json={"id": "idle-1", "text": ADUAN, "label": "aduan"}).status_code == 201
        pg.kill()
        pg.start()
        response = client.post("/v1/feedback", json={"id": "idle-2", "text": ADUAN, "label": "aduan"})
        assert response.status_code == 201, response.text
    assert [r[0] for r in stored(pg, "message_id LIKE 'idle-%'")] == ["idle-1", "idle-2"]


def test_replicas_opening_a_fresh_database_at_once_all_succeed(pg: PostgresServer) -> None:
    """Every replica creates the table on first use; at the same moment, one used to fail on a duplicate key."""
    import psycopg

    for trial in range(3):
        name = f"fresh_{trial}"
        with psycopg.connect(host="127.0.0.1", port=pg.port, user="saring", dbname="postgres", autocommit=True) as c:
            c.execute(f"create database {name}")
        url = pg.url.rsplit("/", 1)[0] + f"/{name}"
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def open_store(url: str = url, barrier: threading.Barrier = barrier, errors: list = errors) -> None:
            barrier.wait()
            try:
                FeedbackStore(url).close()
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
