"""The command line: offline behaviour, local base folders, usage, and torchrun on CPU."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time

import pytest
from training_fixtures import (
    PYTHON,
    ROOT,
    TORCHRUN,
    subprocess_env,
    train_argv,
)

from service.model.folder import read_sidecar
from service.model.torch_backend import TorchBackend
from training.__main__ import main as cli

HUB_ID = "indobenchmark/indobert-base-p1"


def test_unreachable_hub_fails_fast_and_names_the_offline_options(tmp_path, messages):
    out = tmp_path / "models" / "m"
    argv = train_argv(messages.train, out, "--validation_file", str(messages.validation))
    argv[argv.index("scratch:tiny")] = HUB_ID
    started = time.monotonic()
    proc = subprocess.run(
        [str(PYTHON), "-m", "training", "train", *argv],
        cwd=ROOT,
        # An empty cache: the model cannot come from anywhere.
        env=subprocess_env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode not in (0, None)
    assert elapsed < 30, f"took {elapsed:.0f} s"
    message = proc.stderr
    assert f"could not load base model {HUB_ID!r}" in message
    assert "scratch:" in message and "local model folder" in message and "--model_name_or_path" in message
    assert "Traceback" not in message  # a sentence for the user, not a stack
    assert not out.exists() and not (out.parent / ".m.work").exists()


def test_a_local_model_folder_is_a_base_model_offline(tmp_path, trained, messages, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "models" / "again"
    argv = train_argv(messages.train, out, "--validation_file", str(messages.validation), epochs=2)
    argv[argv.index("scratch:tiny")] = str(trained.folder)
    assert cli(["train", *argv, "--save_strategy", "no", "--load_best_model_at_end", "false"]) == 0
    sidecar = read_sidecar(out)
    assert sidecar.base_model == str(trained.folder)
    # Fine-tuned from the trained folder (same vocabulary), it already knows the classes: far above
    # the 0.25 of chance after 2 epochs (the tiny model is not bit-reproducible, so no tight bound).
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation"]["macro_f1"] > 0.5
    assert (out / "tokenizer.json").read_text() == (trained.folder / "tokenizer.json").read_text()


def test_usage(capsys):
    assert cli([]) == 2
    assert cli(["--help"]) == 0
    assert cli(["nonsense"]) == 2
    printed = capsys.readouterr().out
    assert "train" in printed and "evaluate" in printed


@pytest.mark.slow
def test_torchrun_two_cpu_processes_write_the_same_kind_of_folder(tmp_path, messages):
    out = tmp_path / "models" / "ddp"
    epochs = 4
    argv = train_argv(messages.train, out, "--validation_file", str(messages.validation), epochs=epochs)
    # No --ddp_backend: gloo is chosen without CUDA. 12 steps stay near chance, so the gate is waived.
    argv += ["--test_file", str(messages.test), "--logging_steps", "1", "--allow_weak_model", "true"]
    proc = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "training", "train", *argv],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]

    names = {p.name for p in out.iterdir()}
    for name in ("config.json", "model.safetensors", "tokenizer.json", "saring.json", "metrics.json", "README.md"):
        assert name in names
    assert {"confusion_matrix.png", "pr_curves.png"} <= names
    assert sorted(p.name for p in out.parent.iterdir()) == ["ddp"]  # no work or staging folder left
    sidecar = read_sidecar(out)
    assert sidecar.labels == ["aduan", "bukan_aduan", "iseng", "spam"]
    TorchBackend(out, device="cpu")
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"validation", "test"} <= set(metrics)

    # Two processes split each batch of 2 x 32: 160 rows make 3 steps per epoch, not 5.
    losses = [float(x) for x in re.findall(r"\{'loss': '([0-9.]+)'", log)]
    assert len(losses) == epochs * math.ceil(160 / 64)
    # The first step's loss is about ln 4 for an untrained 4-way head, not a multiple of it per process.
    assert losses[0] == pytest.approx(math.log(4), abs=0.35)
