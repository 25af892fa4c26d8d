"""schemathesis against the OpenAPI schema of a live `python -m service`: no input gets a 5xx.

The CLI (`python -m schemathesis.cli run`) rather than the pytest plugin: its lazy fixture loader
does not run under pytest 9 (`Function` has no `_nodeid`), and the CLI runs every phase (explicit
examples, coverage of boundaries and invalid values, fuzzing) in positive and negative modes.
Bounded: the coverage phase (boundary and invalid values of every field, positive and negative: a
fixed ~165 calls for this schema) plus a few fuzzed examples per operation, under 200 calls in all
and a few seconds; one worker and a fixed seed, so that a failure reproduces (change SEED to explore).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from reliability_fixtures import KEY, log_records
from service_fixtures import running_server

pytestmark = pytest.mark.slow

SEED = 20240917
MAX_EXAMPLES = 6  # fuzzed examples per operation, on top of the coverage phase


def test_schemathesis_finds_no_server_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    with running_server(tiny_model_dir, tmp_path / "logs", api_keys=KEY) as server:
        proc = subprocess.run(
            [
                sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
                "--checks", "not_a_server_error",
                "--header", f"Authorization: Bearer {KEY}",
                "--phases", "coverage,fuzzing",
                "--max-examples", str(MAX_EXAMPLES),
                "--seed", str(SEED),
                "--workers", "1",
                "--request-timeout", "30",
                "--no-color",
            ],
            cwd=tmp_path,  # its .schemathesis cache goes here, not into the repository
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip
        records = log_records(server)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", output)
    assert generated, output[-3000:]
    assert generated.group(1) == generated.group(2), output[-3000:]
    assert 50 <= int(generated.group(1)) <= 200, generated.group(0)
    # The server's own view: every call answered below 500, nothing logged at error level.
    statuses = [r["status"] for r in records if r.get("logger") == "saring.access"]
    assert len(statuses) >= 50
    assert max(statuses) < 500, sorted(set(statuses))
    assert not [r for r in records if r.get("level") == "error" and r.get("msg") != "model reload refused"]
    operations = re.search(r"Tested: (\d+)", output)
    assert operations and int(operations.group(1)) >= 4, output[-3000:]  # score, model, reload, probes
