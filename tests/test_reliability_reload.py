"""Model swaps on a live server: POST /v1/admin/reload and SIGHUP, without a restart.

Requests in flight finish on the old model and later ones use the new; a broken or half-written
folder is refused, the old model keeps serving, and the reason is in the log and in /v1/model.
tests/test_service_auth.py covers the endpoint's auth and refusals in-process; here the swap
happens under traffic in a real process, by both routes.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from reliability_fixtures import KEY, bearer, log_records, variant_model
from service_fixtures import ADUAN, ServerProcess, assert_error_shape, metric_value, running_server

from training.atomic import atomic_folder

pytestmark = pytest.mark.slow

WAIT_MS = 2000  # a scored call waits this long for its batch: long enough to swap models under it


def score(url: str, i: int) -> tuple[dict, float]:
    response = httpx.post(
        f"{url}/v1/score", json={"messages": [{"id": f"r{i}", "text": ADUAN}]}, headers=bearer(), timeout=60
    )
    assert response.status_code == 200, response.text
    return response.json(), time.monotonic()


def model_info(url: str) -> dict:
    response = httpx.get(f"{url}/v1/model", headers=bearer(), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def swap_under_traffic(server: ServerProcess, swap) -> tuple[list[tuple[dict, float]], float, list[dict]]:
    """Start 6 calls, swap while they wait for their batch, then make 3 more calls.

    Returns the in-flight answers with the time each arrived, when the swap finished, and the later answers.
    """
    with ThreadPoolExecutor(max_workers=6) as pool:
        inflight = [pool.submit(score, server.url, i) for i in range(6)]
        wait_for(lambda: queued(server.url) == 6, "the 6 calls to be tokenised and queued", timeout=WAIT_MS / 1000)
        swap()
        swapped_at = time.monotonic()
        in_flight_answers = [f.result() for f in inflight]
    with ThreadPoolExecutor(max_workers=3) as pool:
        later = [body for body, _ in pool.map(lambda i: score(server.url, 100 + i), range(3))]
    return in_flight_answers, swapped_at, later


def queued(url: str) -> float:
    """Messages tokenised and waiting for their batch, from /metrics."""
    return metric_value(httpx.get(f"{url}/metrics", timeout=10).text, "saring_queue_depth")


def probabilities(answer: dict) -> dict[str, float]:
    return answer["results"][0]["probabilities"]


def same_model(a: dict, b: dict) -> bool:
    """Same probabilities up to float noise (a batch of 6 and a batch of 1 round differently)."""
    pa, pb = probabilities(a), probabilities(b)
    return pa.keys() == pb.keys() and all(math.isclose(pa[k], pb[k], rel_tol=1e-5, abs_tol=1e-9) for k in pa)


def wait_for(predicate, what: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = predicate()
        if info:
            return info
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_reload_under_traffic_by_endpoint_and_by_sighup_and_refusals(tiny_model_dir: Path, tmp_path: Path) -> None:
    serving = tmp_path / "models" / "current"
    shutil.copytree(tiny_model_dir, serving)
    model_b = variant_model(tiny_model_dir, tmp_path / "models" / "b", scale=0.3, name="variant-b")
    model_c = variant_model(tiny_model_dir, tmp_path / "models" / "c", scale=3.0, name="variant-c")

    with running_server(serving, tmp_path / "logs", api_keys=KEY, max_wait_ms=str(WAIT_MS)) as server:
        url = server.url
        original = model_info(url)["version"]
        ((before, _),) = [score(url, 0)]
        assert before["model"]["version"] == original

        # 1. The admin endpoint, behind the API key.
        for headers in ({}, bearer("not-the-key"), {"Authorization": KEY}):
            response = httpx.post(f"{url}/v1/admin/reload", json={"model_dir": str(model_b)}, headers=headers)
            assert_error_shape(response, 401)
        assert model_info(url)["version"] == original

        def reload_b() -> None:
            response = httpx.post(
                f"{url}/v1/admin/reload", json={"model_dir": str(model_b)}, headers=bearer(), timeout=60
            )
            assert response.status_code == 200, response.text
            assert response.json()["name"] == "variant-b"

        inflight, swapped_at, later = swap_under_traffic(server, reload_b)
        assert any(arrived > swapped_at for _, arrived in inflight), "every call finished before the swap"
        for answer, _ in inflight:  # read before the swap: scored by the old model, and say so
            assert answer["model"]["version"] == original
            assert same_model(answer, before)
        version_b = model_info(url)["version"]
        assert version_b.startswith("variant-b-")
        for answer in later:
            assert answer["model"]["version"] == version_b
            assert not same_model(answer, before)
        after_b = later[0]

        # 2. SIGHUP: the configured folder is replaced (atomically, as training writes it), then signalled.
        with atomic_folder(serving) as staging:
            shutil.copytree(model_c, staging, dirs_exist_ok=True)

        def sighup() -> None:
            server.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: model_info(url)["name"] == "variant-c", "the SIGHUP reload")

        inflight, swapped_at, later = swap_under_traffic(server, sighup)
        assert any(arrived > swapped_at for _, arrived in inflight), "every call finished before the swap"
        for answer, _ in inflight:
            assert answer["model"]["version"] == version_b
            assert same_model(answer, after_b)
        version_c = model_info(url)["version"]
        for answer in later:
            assert answer["model"]["version"] == version_c
            assert not same_model(answer, before) and not same_model(answer, after_b)

        # 3. SIGHUP on a half-written folder (a copy still in progress: weights cut short): refused.
        shutil.rmtree(serving)
        shutil.copytree(model_b, serving)
        weights = serving / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        server.proc.send_signal(signal.SIGHUP)
        info = wait_for(lambda: (i := model_info(url))["last_reload_error"] and i, "the refusal")
        assert info["version"] == version_c
        assert "checksum" in info["last_reload_error"] and str(serving) in info["last_reload_error"]

        # 4. The endpoint on what a killed training run leaves (a staging folder with the sentinel
        # checksum) and on a folder whose sidecar holds a lone surrogate: refused, not a 500.
        partial = tmp_path / "models" / ".m.partial-1234-5678"
        shutil.copytree(model_b, partial)
        sidecar = json.loads((partial / "saring.json").read_text(encoding="utf-8"))
        sidecar["weights_sha256"] = "unfinished: training was interrupted before this folder was complete"
        (partial / "saring.json").write_text(json.dumps(sidecar), encoding="utf-8")
        hostile = tmp_path / "models" / "hostile"
        shutil.copytree(model_b, hostile)
        sidecar = json.loads((hostile / "saring.json").read_text(encoding="utf-8"))
        (hostile / "saring.json").write_text(json.dumps({**sidecar, "name": "\udcff"}), encoding="utf-8")
        refusals = {}
        for folder in (partial, hostile, tmp_path / "models" / "missing"):
            response = httpx.post(
                f"{url}/v1/admin/reload", json={"model_dir": str(folder)}, headers=bearer(), timeout=60
            )
            refusals[folder.name] = assert_error_shape(response, 422)["message"]
            info = model_info(url)
            assert info["version"] == version_c and str(folder) in info["last_reload_error"]
        assert "checksum" in refusals[partial.name]
        assert "Unicode" in refusals["hostile"]
        assert "does not exist" in refusals["missing"]
        ((still_c, _),) = [score(url, 200)]
        assert still_c["model"]["version"] == version_c

        # 5. A good folder afterwards clears the error.
        reload_b()
        assert model_info(url)["last_reload_error"] is None
        records = log_records(server)

    refused = [r for r in records if r.get("msg") == "model reload refused"]
    assert len(refused) == 4, refused
    assert "checksum" in refused[0]["error"] and refused[0]["dir"] == str(serving)
    assert [r["dir"] for r in refused[1:]] == [str(partial), str(hostile), str(tmp_path / "models" / "missing")]
    served = [r["version"] for r in records if r.get("msg") == "serving model"]
    assert served == [original, version_b, version_c, version_b]
    statuses = [r["status"] for r in records if r.get("logger") == "saring.access"]
    assert max(statuses) < 500
