"""Helpers for the service tests: settings, edited model folders, log capture and a real server process.

Plain functions and context managers (no pytest fixtures), so each test module builds the
fixtures it needs without star imports.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from service.logs import JsonFormatter
from service.settings import Settings

REPO = Path(__file__).resolve().parent.parent

# Texts the tiny model (tests/fixtures/make_messages.py) learned, one per category.
ADUAN = "jalan di desa bandung rusak parah mohon diperbaiki"
BUKAN = "selamat pagi admin salam hangat dari medan"
ISENG = "mas wapres tolong carikan jodoh buat saya di padang"
SPAM = "slot gacor hari ini maxwin link daftar garut88 bonus"

ERROR_KEYS = {"type", "message"}


def make_settings(model_dir: Path, **overrides: Any) -> Settings:
    """Settings for tests: CPU, no .env file, and nothing from the caller's SARING_* environment."""
    values: dict[str, Any] = {"model_dir": model_dir, "device": "cpu"}
    values.update(overrides)
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("SARING_")}
    try:
        return Settings(_env_file=None, **values)
    finally:
        os.environ.update(saved)


def assert_error_shape(response: httpx.Response, status: int | None = None) -> dict[str, str]:
    """The one error shape of docs/design.md section 4; returns the inner error object."""
    if status is not None:
        assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == ERROR_KEYS, body
    assert all(isinstance(body["error"][k], str) and body["error"][k] for k in ERROR_KEYS), body
    return body["error"]


def copy_model_dir(src: Path, dst: Path, **threshold_values: float) -> Path:
    """A copy of a model folder with some of saring.json's threshold values (accept/reject/spam) replaced."""
    shutil.copytree(src, dst)
    path = dst / "saring.json"
    sidecar = json.loads(path.read_text(encoding="utf-8"))
    for name, value in threshold_values.items():
        sidecar[name]["value"] = value
    path.write_text(json.dumps(sidecar, indent=2), encoding="utf-8")
    return dst


def metric_samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus exposition text -> sample name -> [(labels, value)]."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 when there are none)."""
    return sum(v for lab, v in metric_samples(text).get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


@contextlib.contextmanager
def json_log_lines(logger_name: str = "saring") -> Iterator[list[dict[str, Any]]]:
    """Capture what `logger_name` writes through the service's JsonFormatter, parsed line by line.

    The list fills when the block ends; each line is also checked to be exactly one JSON object.
    """
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(logger_name)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    lines: list[dict[str, Any]] = []
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        lines.extend(json.loads(line) for line in stream.getvalue().splitlines())


# -- a real server process -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def access_lines(self) -> list[dict[str, Any]]:
        """The JSON lines of logger saring.access written so far."""
        lines = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    record = json.loads(line)
                    if record.get("logger") == "saring.access":
                        lines.append(record)
        return lines

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)


def _server_env(model_dir: Path, port: int, env: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SARING_")}
    base.update(
        {
            "SARING_MODEL_DIR": str(model_dir),
            "SARING_HOST": "127.0.0.1",
            "SARING_PORT": str(port),
            "SARING_DEVICE": "cpu",
            "SARING_LOG_LEVEL": "info",
            "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false",
            # Never the repository's data/feedback/: a test server writes its feedback under /tmp.
            "SARING_FEEDBACK_DB_PATH": str(Path(tempfile.gettempdir()) / f"saring-test-feedback-{port}.sqlite3"),
        }
    )
    base.update(env)
    return base


@contextlib.contextmanager
def running_server(model_dir: Path, log_dir: Path, startup_s: float = 90.0, **env: str) -> Iterator[ServerProcess]:
    """`python -m service` on a free 127.0.0.1 port, ready (/readyz 200) on entry, always killed on exit."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{port}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=REPO,
            env=_server_env(model_dir, port, {f"SARING_{k.upper()}": str(v) for k, v in env.items()}),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(proc, port, log_path)
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode} during start-up:\n{server.log()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready within {startup_s} s:\n{server.log()}")
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def post_verdicts_concurrently(url: str, n: int, prefix: str, workers: int) -> tuple[list[int], set[str]]:
    """POST n verdicts at once; every 4th repeats one (id, label), of which exactly one may create it.

    Returns the statuses and the message ids that must then be stored (the durability checks of both
    feedback databases).
    """
    from concurrent.futures import ThreadPoolExecutor

    def send(i: int) -> int:
        if i % 4 == 0:
            body = {"id": f"{prefix}same", "text": SPAM, "label": "spam"}
        else:
            body = {"id": f"{prefix}{i}", "text": f"pesan {i}", "label": ["aduan", "bukan_aduan", "iseng"][i % 4 - 1]}
        return httpx.post(f"{url}/v1/feedback", json=body, timeout=60).status_code

    with ThreadPoolExecutor(max_workers=workers) as pool:
        statuses = list(pool.map(send, range(n)))
    return statuses, {f"{prefix}{i}" for i in range(n) if i % 4} | {f"{prefix}same"}
