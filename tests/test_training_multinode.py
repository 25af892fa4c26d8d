"""Multi-node fine-tuning: two torchrun agents (two "machines" on 127.0.0.1) train one model folder.

Each agent runs one process (`--nnodes=2 --nproc-per-node=1`), they meet through the c10d rendezvous
and train with DDP over gloo. Global rank 0 alone writes checkpoints and the model folder, so two
nodes on a shared disk never race: the test checks one complete folder appears, with no staging,
work or checkpoint folder left, and that the service loads it and answers.
"""

from __future__ import annotations

import math
import re
import subprocess

import pytest
from fastapi.testclient import TestClient
from service_fixtures import ADUAN, free_port, make_settings
from training_fixtures import ROOT, TORCHRUN, subprocess_env, train_argv

from service.http.app import create_app
from service.model.folder import read_sidecar


@pytest.mark.slow
def test_two_torchrun_agents_write_one_complete_folder_the_service_loads(tmp_path, messages):
    out = tmp_path / "models" / "multinode"
    epochs = 10  # 30 steps: enough for scratch:tiny to beat the weak-model guard
    argv = train_argv(messages.train, out, "--validation_file", str(messages.validation), epochs=epochs)
    argv += ["--test_file", str(messages.test), "--ddp_backend", "gloo", "--logging_steps", "1"]
    argv += ["--save_strategy", "epoch", "--save_total_limit", "1"]  # checkpoints too, written by rank 0 only
    port = free_port()
    env = subprocess_env(GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1")
    agents = [
        subprocess.Popen(
            [
                str(TORCHRUN), "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=saring-multinode-test", "--local-addr=127.0.0.1",
                "-m", "training", "train", *argv,
            ],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for _ in range(2)
    ]  # fmt: skip
    logs = []
    try:
        for agent in agents:
            logs.append(agent.communicate(timeout=420)[0])
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
    for agent, log in zip(agents, logs, strict=True):
        assert agent.returncode == 0, log[-4000:]

    # One complete folder, and nothing else beside it: no work dir, checkpoints or staging folder.
    assert sorted(p.name for p in out.parent.iterdir()) == ["multinode"]
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "saring.json", "metrics.json", "README.md"} <= names
    assert read_sidecar(out).labels == ["aduan", "bukan_aduan", "iseng", "spam"]
    assert sum("model folder written" in log for log in logs) == 1  # written once, by global rank 0

    # Both nodes trained together: 160 rows in batches of 2 x 32 make 3 steps per epoch, not 5.
    steps = [len(re.findall(r"\{'loss': '", log)) for log in logs]
    assert max(steps) == epochs * math.ceil(160 / 64)

    with TestClient(create_app(make_settings(out))) as client:
        assert client.get("/readyz").status_code == 200
        response = client.post("/v1/score", json={"messages": [{"text": ADUAN}]})
        assert response.status_code == 200, response.text
        assert response.json()["model"]["version"] == read_sidecar(out).version
