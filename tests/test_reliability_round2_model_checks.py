"""Issue 14, items 1 and 2: a model answering NaN never serves; a database driver missing fails start-up.

1. A folder whose weights are NaN or random bytes, with its checksum recomputed, passes every file
   check. Its check batch (service/model/check.py) refuses it on reload (422 model_folder_invalid,
   the old model keeps serving) and at start-up (the process exits naming the problem); a forward
   that turns non-finite while serving fails its batch as 500 model_error, never a null score.
2. SARING_FEEDBACK_DB_URL naming a driver that is not installed fails start-up with a message naming
   the package (it used to start ready and answer 500 internal_error to every feedback call).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from reliability_fixtures import KEY, bearer
from service_fixtures import (
    ADUAN,
    REPO,
    SPAM,
    _server_env,
    assert_error_shape,
    free_port,
    json_log_lines,
    make_settings,
)

from service.errors import FeedbackUnavailable
from service.features.feedback import AsyncFeedbackStore, check_database_url
from service.http.app import create_app
from service.model.check import CHECK_TEXTS, ModelOutputError, check_model, output_problem
from service.model.folder import CATEGORIES, read_sidecar, sha256_file

# -- broken folders ----------------------------------------------------------------------------------


def broken_weights_copy(src: Path, dst: Path, kind: str) -> Path:
    """A copy of a model folder whose float weights are NaN ("nan") or random bytes ("random"), with the
    sidecar's checksum recomputed: every file check passes, as in the outside probe."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    tensors = load_file(weights)
    rng = np.random.default_rng(0)
    for name, tensor in tensors.items():
        if tensor.dtype.kind != "f":
            continue
        if kind == "nan":
            tensors[name] = np.full_like(tensor, np.nan)
        else:
            tensors[name] = np.frombuffer(rng.bytes(tensor.nbytes), dtype=tensor.dtype).reshape(tensor.shape).copy()
    save_file(tensors, weights, metadata={"format": "pt"})
    sidecar_path = dst / "saring.json"
    sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    sidecar["weights_sha256"] = sha256_file(weights)
    sidecar_path.write_text(json.dumps(sidecar, indent=2), encoding="utf-8")
    read_sidecar(dst)  # the file checks alone accept it
    return dst


@pytest.fixture(scope="module", params=["nan", "random"])
def broken_dir(request: pytest.FixtureRequest, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return broken_weights_copy(tiny_model_dir, tmp_path_factory.mktemp("broken") / request.param, request.param)


def test_the_check_batch_has_written_texts_of_every_category() -> None:
    assert set(CHECK_TEXTS) == set(CATEGORIES)
    assert all(len(texts) >= 2 and all(t.strip() for t in texts) for texts in CHECK_TEXTS.values())


@pytest.mark.parametrize(
    ("probs", "words"),
    [
        pytest.param([[0.25, 0.25, 0.25, 0.25]], None, id="uniform"),
        pytest.param([[1.0, 0.0, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]], None, id="two-rows"),
        pytest.param([[np.nan, 0.5, 0.25, 0.25]], "not finite", id="nan"),
        pytest.param([[np.inf, 0.0, 0.0, 0.0]], "not finite", id="infinity"),
        pytest.param([[0.5, 0.5, 0.5, 0.5]], "sum to 1", id="sums-to-2"),
        pytest.param([[1.5, -0.5, 0.0, 0.0]], "outside", id="negative"),
        pytest.param([0.25, 0.25, 0.25, 0.25], "shape", id="one-dimensional"),
    ],
)
def test_output_problem(probs: list, words: str | None) -> None:
    problem = output_problem(np.array(probs, dtype=np.float64))
    assert problem is None if words is None else words in problem


def test_check_model_refuses_broken_weights_and_accepts_the_real_model(tiny_model_dir: Path, broken_dir: Path) -> None:
    from service.model.torch_backend import TorchBackend

    check_model(TorchBackend(tiny_model_dir, device="cpu"))  # no error
    with pytest.raises(ModelOutputError, match="not finite"):
        check_model(TorchBackend(broken_dir, device="cpu"))


def test_reload_refuses_a_folder_answering_nan_and_keeps_serving(tiny_model_dir: Path, broken_dir: Path) -> None:
    settings = make_settings(tiny_model_dir, api_keys=KEY)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        before = client.get("/v1/model", headers=bearer()).json()
        refused = client.post("/v1/admin/reload", json={"model_dir": str(broken_dir)}, headers=bearer())
        error = assert_error_shape(refused, 422)
        assert error["type"] == "model_folder_invalid"
        assert "not finite" in error["message"]
        info = client.get("/v1/model", headers=bearer()).json()
        assert info["version"] == before["version"] and info["model_dir"] == str(tiny_model_dir)
        assert "not finite" in info["last_reload_error"]
        scored = client.post("/v1/score", json={"messages": [{"text": SPAM}]}, headers=bearer())
    assert scored.status_code == 200
    result = scored.json()["results"][0]
    assert result["category"] == "spam" and math.isfinite(result["spam"]) and math.isfinite(result["validity"])


def test_start_up_with_a_folder_answering_nan_fails_with_the_reason(broken_dir: Path) -> None:
    app = create_app(make_settings(broken_dir))
    with json_log_lines() as lines, pytest.raises(ModelOutputError, match="not finite"), TestClient(app):
        pass
    refused = [line for line in lines if line["msg"] == "start-up refused"]
    assert refused and "not finite" in refused[0]["error"]


@pytest.mark.slow
def test_python_m_service_exits_when_its_folder_answers_nan(broken_dir: Path, tmp_path: Path) -> None:
    env = _server_env(broken_dir, free_port(), {})
    done = subprocess.run(
        [sys.executable, "-m", "service"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "start-up refused" in done.stdout and "not finite" in done.stdout, done.stdout[-2000:]


# -- serving: a forward that turns non-finite --------------------------------------------------------

MARKER = "lapor lapor lapor lapor"


class TurnsNan:
    """The real backend, except that it answers NaN (as an fp16 overflow would) for a scored batch holding
    MARKER, and for explanation rows (logits of a batch holding the unknown token that occlusion puts in)."""

    def __init__(self, real) -> None:
        self.real = real
        self.sidecar = real.sidecar
        self.device, self.precision, self.kind = real.device, real.precision, real.kind
        self.encoder = real.encoder
        self.marker_ids = list(real.encode([MARKER]).ids[0])
        self.unk_id = real.encoder.tokenizer.unk_token_id

    def encode(self, texts: Sequence[str]):
        return self.real.encode(texts)

    @staticmethod
    def _nan_if(poisoned: bool, out: np.ndarray) -> np.ndarray:
        return np.full_like(out, np.nan) if poisoned else out

    def logits(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        return self._nan_if(any(self.unk_id in ids for ids in batch), self.real.logits(batch))

    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        return self._nan_if(any(list(ids) == self.marker_ids for ids in batch), self.real.forward(batch))


@pytest.fixture(scope="module")
def nan_client(tiny_model_dir: Path):
    from service.model.torch_backend import TorchBackend

    settings = make_settings(tiny_model_dir, max_batch_size=1)
    app = create_app(settings, backend_factory=lambda folder: TurnsNan(TorchBackend(folder, device="cpu")))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_a_non_finite_forward_fails_its_batch_as_model_error(nan_client: TestClient) -> None:
    response = nan_client.post("/v1/score", json={"messages": [{"text": MARKER}]})
    error = assert_error_shape(response, 500)
    assert error["type"] == "model_error" and "not finite" in error["message"]
    assert "null" not in response.text
    # The next batch is scored as usual.
    ok = nan_client.post("/v1/score", json={"messages": [{"text": ADUAN}]})
    assert ok.status_code == 200 and ok.json()["results"][0]["category"] == "aduan"


def test_a_non_finite_explanation_is_a_model_error_too(nan_client: TestClient) -> None:
    """The text scores fine; the occluded variants (unknown tokens in place of a word) answer NaN."""
    response = nan_client.post("/v1/score", json={"messages": [{"text": ADUAN}], "explain": True})
    error = assert_error_shape(response, 500)
    assert error["type"] == "model_error" and "not finite" in error["message"]
    assert nan_client.post("/v1/score", json={"messages": [{"text": ADUAN}]}).status_code == 200


# -- item 2: a database driver that is not installed -------------------------------------------------

PG_URL = "postgresql+psycopg://saring:s3cret-pw@127.0.0.1:1/saring"


@pytest.fixture
def psycopg_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python's own way to make an import fail: a None entry in sys.modules (whether or not it is installed)."""
    monkeypatch.setitem(sys.modules, "psycopg", None)


def test_the_check_names_the_missing_package_and_hides_the_password(psycopg_missing: None) -> None:
    with pytest.raises(FeedbackUnavailable) as refused:
        check_database_url(PG_URL)
    assert "'psycopg'" in refused.value.message and "pip install psycopg" in refused.value.message
    assert "s3cret-pw" not in refused.value.message
    check_database_url(None)  # SQLite: nothing to check


def test_start_up_fails_naming_the_package(psycopg_missing: None, tiny_model_dir: Path) -> None:
    app = create_app(make_settings(tiny_model_dir, feedback_db_url=PG_URL))
    with json_log_lines() as lines, pytest.raises(FeedbackUnavailable, match="psycopg"), TestClient(app):
        pass
    (refused,) = [line for line in lines if line["msg"] == "start-up refused"]
    assert "psycopg" in refused["error"] and "s3cret-pw" not in json.dumps(lines)


def test_a_driver_lost_after_start_up_is_feedback_unavailable_not_a_500(psycopg_missing: None) -> None:
    store = AsyncFeedbackStore(PG_URL, "unused.sqlite3")
    with pytest.raises(FeedbackUnavailable, match="ModuleNotFoundError"):
        asyncio.run(store.record(message_id="m1", label="aduan", text="jalan rusak"))


@pytest.mark.slow
def test_python_m_service_exits_naming_the_missing_driver(tiny_model_dir: Path) -> None:
    driver = next((d for d in ("pg8000", "psycopg", "psycopg2") if importlib.util.find_spec(d) is None), None)
    if driver is None:
        pytest.skip("every PostgreSQL driver tried is installed here; the in-process tests still cover the check")
    env = _server_env(
        tiny_model_dir, free_port(), {"SARING_FEEDBACK_DB_URL": f"postgresql+{driver}://u:pw@127.0.0.1/x"}
    )
    done = subprocess.run(
        [sys.executable, "-m", "service"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "start-up refused" in done.stdout and f"'{driver}'" in done.stdout, done.stdout[-2000:]
