"""Two saring replicas behind a real nginx (deploy/nginx/saring.conf) with a shared Redis and PostgreSQL,
all on 127.0.0.1: what a scaled-out deployment promises, end to end."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from engine_fixtures import NginxServer, PostgresServer, RedisServer, nginx_server, postgres_server, redis_server
from service_fixtures import ADUAN, BUKAN, ISENG, SPAM, ServerProcess, running_server
from test_flood import COPIES

pytestmark = pytest.mark.slow


@dataclass
class Cluster:
    redis: RedisServer
    pg: PostgresServer
    replicas: list[ServerProcess]
    nginx: NginxServer


@pytest.fixture(scope="module")
def cluster(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    logs = tmp_path_factory.mktemp("replicas")
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(redis_server())
        pg = stack.enter_context(postgres_server())
        env = {
            "flood_redis_url": redis.url,
            "feedback_db_url": pg.url,
            "flood_window_s": "3600",
            "drain_s": "1",
            "graceful_shutdown_s": "20",
        }
        replicas = [stack.enter_context(running_server(tiny_model_dir, logs, **env)) for _ in range(2)]
        nginx = stack.enter_context(nginx_server([r.port for r in replicas]))
        yield Cluster(redis, pg, replicas, nginx)


def score(url: str, text: str, client: httpx.Client | None = None) -> httpx.Response:
    post = client.post if client else httpx.post
    return post(f"{url}/v1/score", json={"messages": [{"text": text}]}, timeout=30)


def served_by(replica: ServerProcess, route: str = "/v1/score") -> int:
    return sum(1 for line in replica.access_lines() if line["route"] == route)


def test_scores_pass_through_the_balancer_to_both_replicas(cluster: Cluster) -> None:
    before = [served_by(r) for r in cluster.replicas]
    for text in [ADUAN, BUKAN, ISENG, SPAM] * 3:
        response = score(cluster.nginx.url, text)
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["category"] in {"aduan", "bukan_aduan", "iseng", "spam"}
    time.sleep(0.3)  # access lines are written after the answer
    after = [served_by(r) for r in cluster.replicas]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)  # round robin: both served
    assert sum(after) - sum(before) == 12


def test_a_flood_split_across_replicas_is_counted_as_one(cluster: Cluster) -> None:
    one, two = cluster.replicas

    # Copies alternating replicas (directly), then through the balancer: one campaign, 0, 1, 2, ...
    def near(url: str, text: str) -> int:
        return score(url, text).json()["results"][0]["near_duplicates"]

    direct = [near((one, two)[i % 2].url, text) for i, text in enumerate(COPIES)]
    assert direct == list(range(len(COPIES)))
    through = [near(cluster.nginx.url, text) for text in COPIES[:4]]
    assert through == list(range(len(COPIES), len(COPIES) + 4))


def test_feedback_from_both_replicas_lands_in_one_database(cluster: Cluster) -> None:
    for i, replica in enumerate(cluster.replicas * 3):
        body = {"id": f"both-{i}", "text": ADUAN, "label": "aduan"}
        response = httpx.post(f"{replica.url}/v1/feedback", json=body, timeout=30)
        assert response.status_code == 201, response.text
    assert cluster.pg.count("select count(*) from feedback where message_id like 'both-%'") == 6


def test_sigterm_one_replica_during_a_burst_loses_nothing(cluster: Cluster) -> None:
    """A bounded burst (6 clients, at most 100 calls each, scores and feedback, keep-alive through nginx);
    replica 0 gets SIGTERM once the burst runs, and the burst goes on 3 s more (past the 1 s drain).
    Every call is answered 2xx at the client: the draining replica answers what it accepted and closes
    its connections, nginx retries refused connections on the other one."""
    victim, survivor = cluster.replicas
    outcomes: list[tuple[str, int | str]] = []
    acknowledged: list[str] = []
    lock = threading.Lock()
    started = threading.Event()
    deadline = time.monotonic() + 60
    stop_at = [deadline]  # set to SIGTERM + 3 s

    def client(c: int) -> None:
        with httpx.Client(base_url=cluster.nginx.url, timeout=30) as http:
            for i in range(100):
                if time.monotonic() > stop_at[0]:
                    return
                kind = "feedback" if i % 3 == 0 else "score"
                http.headers["X-Request-Id"] = f"burst-{c}-{i}"
                try:
                    if kind == "feedback":
                        message_id = f"burst-{c}-{i}"
                        body = {"id": message_id, "text": SPAM, "label": "spam"}
                        response = http.post("/v1/feedback", json=body)
                        if response.status_code in (200, 201):
                            with lock:
                                acknowledged.append(message_id)
                    else:
                        response = http.post("/v1/score", json={"messages": [{"text": f"{ADUAN} nomor {c} {i}"}]})
                    status: int | str = response.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with lock:
                    outcomes.append((kind, status))
                    if len(outcomes) >= 30:
                        started.set()
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(6)]
    for t in threads:
        t.start()
    assert started.wait(timeout=60), "the burst never got going"
    victim.terminate()
    stop_at[0] = min(deadline, time.monotonic() + 3.0)
    for t in threads:
        t.join(timeout=90)
    victim_exit = victim.proc.wait(timeout=30)

    statuses = Counter(status for _, status in outcomes)
    sent = len(outcomes)  # every call sent, answered or not
    assert sent > 60, statuses
    assert set(statuses) <= {200, 201}, f"lost or failed at the client: {statuses}\n{cluster.nginx.error_log()[-2000:]}"
    assert victim_exit == 0
    ids = cluster.pg.count("select count(*) from feedback where message_id like 'burst-%'")
    assert ids == len(acknowledged) == sum(1 for kind, _ in outcomes if kind == "feedback")
    # Both replicas took part, and no call was read by the victim and then lost or run twice.
    logged = [
        {line["request_id"] for line in r.access_lines() if line["request_id"].startswith("burst-")}
        for r in cluster.replicas
    ]
    assert logged[0] and logged[1], [len(x) for x in logged]
    assert not logged[0] & logged[1], sorted(logged[0] & logged[1])
    assert len(logged[0] | logged[1]) == sent
    assert "refused" in cluster.nginx.error_log()  # nginx met the closed port and retried on the survivor
    assert score(cluster.nginx.url, ADUAN).status_code == 200  # the balancer serves on with one replica
