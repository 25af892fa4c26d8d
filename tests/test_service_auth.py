"""API keys: /v1/* needs a configured key, probes and metrics stay open, keys never reach the logs."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_fixtures import ADUAN, assert_error_shape, json_log_lines, make_settings

from service.http.app import create_app
from service.settings import Settings

KEY1 = "sk-test-7f3a9c1e55d0"
KEY2 = "sk-test-b81d2e6a0c94"
FILE_KEY = "sk-file-4c2f9a1b7e83"
BODY = {"messages": [{"id": "a", "text": ADUAN}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def client(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    keys_file = tmp_path_factory.mktemp("secrets") / "api_keys"
    keys_file.write_text(f"# one key per line\n{FILE_KEY}\n\n", encoding="utf-8")
    settings = make_settings(tiny_model_dir, api_keys=f"{KEY1}, {KEY2}", api_keys_file=keys_file)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param(bearer("wrong-key"), id="wrong-key"),
        pytest.param(bearer(KEY1[:-1]), id="prefix-of-a-key"),
        pytest.param(bearer(KEY1 + "0"), id="key-plus-one"),
        pytest.param(bearer(f"{KEY1},{KEY2}"), id="both-keys-joined"),
        pytest.param({"Authorization": KEY1}, id="no-scheme"),
        pytest.param({"Authorization": f"Basic {KEY1}"}, id="basic-scheme"),
        pytest.param({"Authorization": "Bearer "}, id="empty-bearer"),
        pytest.param({"X-API-Key": KEY1}, id="other-header"),
    ],
)
def test_scoring_without_a_valid_key_is_401(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post("/v1/score", json=BODY, headers=headers)
    error = assert_error_shape(response, 401)
    assert error["type"] == "unauthorized"
    assert KEY1 not in response.text and KEY2 not in response.text
    assert_error_shape(client.get("/v1/model", headers=headers), 401)


@pytest.mark.parametrize("key", [KEY1, KEY2, FILE_KEY], ids=["first-key", "second-key", "key-from-file"])
def test_any_configured_key_scores(client: TestClient, key: str) -> None:
    response = client.post("/v1/score", json=BODY, headers=bearer(key))
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["id"] == "a"
    assert client.get("/v1/model", headers=bearer(key)).status_code == 200
    # The scheme is case-insensitive, as in RFC 9110.
    assert client.post("/v1/score", json=BODY, headers={"Authorization": f"bearer {key}"}).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
def test_probes_metrics_and_docs_stay_open(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 200


def test_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> None:
    monkeypatch.setenv("SARING_API_KEYS", f" {KEY1} ,{KEY2},")
    settings = Settings(_env_file=None, model_dir=tiny_model_dir, device="cpu")
    assert settings.all_api_keys() == [KEY1, KEY2]
    assert KEY1 not in repr(settings) and KEY1 not in str(settings.model_dump())


def test_without_keys_there_is_no_auth(tiny_model_dir: Path) -> None:
    with TestClient(create_app(make_settings(tiny_model_dir))) as client:
        assert client.post("/v1/score", json=BODY).status_code == 200
        # Admin endpoints need keys to exist at all.
        assert assert_error_shape(client.post("/v1/admin/reload"), 403)["type"] == "forbidden"


def test_keys_never_reach_the_logs(
    client: TestClient, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    with json_log_lines() as lines:
        client.post("/v1/score", json=BODY, headers=bearer(KEY1))
        client.post("/v1/score", json=BODY, headers=bearer(KEY2 + "x"))
        client.get("/v1/model", headers=bearer(FILE_KEY))
        client.post("/v1/score", json=BODY, headers={"Authorization": KEY1})
    statuses = [line["status"] for line in lines if line["logger"] == "saring.access"]
    assert statuses == [200, 401, 200, 401]
    captured = capsys.readouterr()
    everything = caplog.text + repr(lines) + captured.out + captured.err
    for key in (KEY1, KEY2, FILE_KEY):
        assert key not in everything


def test_reload_with_a_key_and_refused_folders(client: TestClient, tiny_model_dir: Path, tmp_path: Path) -> None:
    assert_error_shape(client.post("/v1/admin/reload", json={}), 401)
    response = client.post("/v1/admin/reload", json={}, headers=bearer(KEY1))
    assert response.status_code == 200, response.text
    version = response.json()["version"]

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "saring.json").unlink()
    response = client.post("/v1/admin/reload", json={"model_dir": str(broken)}, headers=bearer(KEY1))
    error = assert_error_shape(response, 422)
    assert "saring.json" in error["message"]
    # A path no file system can hold (lone surrogate) is refused like any other, not a 500.
    response = client.post(
        "/v1/admin/reload",
        content=b'{"model_dir": "/models/\\ud800"}',
        headers={**bearer(KEY1), "content-type": "application/json"},
    )
    assert_error_shape(response, 422)
    # The old model keeps serving and /v1/model says why the reload was refused.
    info = client.get("/v1/model", headers=bearer(KEY1)).json()
    assert info["version"] == version
    assert "saring.json" in info["last_reload_error"]
    assert client.post("/v1/score", json=BODY, headers=bearer(KEY2)).status_code == 200
