"""A model folder is complete or absent: killed runs leave nothing the service would load."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from training_fixtures import (
    PYTHON,
    ROOT,
    SimulatedKill,
    folder_digest,
    model_like_folders,
    subprocess_env,
    train_argv,
)

import training.atomic
import training.finalise
import training.train
from service.model.folder import ModelFolderError, read_sidecar
from service.model.torch_backend import TorchBackend
from training.atomic import atomic_folder


def assert_refused(folder: Path) -> None:
    with pytest.raises(ModelFolderError):
        read_sidecar(folder)
    with pytest.raises(ModelFolderError):
        TorchBackend(folder, device="cpu")


def fast_argv(messages, out: Path, *extra: str) -> list[str]:
    return train_argv(
        messages.train,
        out,
        "--validation_file", str(messages.validation),
        "--save_strategy", "no",
        "--load_best_model_at_end", "false",
        *extra,
        epochs=3,
    )  # fmt: skip


def test_atomic_folder_publishes_on_success_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "m"
    with atomic_folder(target) as staging:
        (staging / "a.txt").write_text("one")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError), atomic_folder(target) as staging:
        (staging / "a.txt").write_text("two")
        raise RuntimeError("boom")
    assert (target / "a.txt").read_text() == "one"
    with atomic_folder(target) as staging:
        (staging / "b.txt").write_text("three")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no staging or retired folder left


def test_sigkill_during_training_leaves_no_folder(tmp_path, messages):
    out = tmp_path / "models" / "m"
    work = out.parent / ".m.work"
    argv = train_argv(messages.train, out, "--validation_file", str(messages.validation), epochs=400)
    log = (tmp_path / "train.log").open("w")
    proc = subprocess.Popen(
        [str(PYTHON), "-m", "training", "train", *argv], cwd=ROOT, env=subprocess_env(), stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 120
        while not list((work / "checkpoints").glob("checkpoint-*")):
            assert proc.poll() is None, (tmp_path / "train.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        log.close()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    leftovers = model_like_folders(out.parent)
    assert leftovers, "expected checkpoints in the work folder"
    for folder in leftovers:
        assert folder.is_relative_to(work) or folder.name.startswith(".m."), folder
        assert_refused(folder)


@pytest.mark.parametrize(
    "kill_point",
    # after the first sidecar write, after the thresholds' sidecar write, after metrics.json
    ["calibrate", "evaluate_probabilities", "write_model_card"],
)
def test_kill_inside_finalise_leaves_only_a_refused_staging_folder(tmp_path, messages, monkeypatch, kill_point):
    def killed(*args, **kwargs):
        raise SimulatedKill(kill_point)

    monkeypatch.setattr(training.finalise, kill_point, killed)
    # SIGKILL runs no cleanup: keep the staging folder that atomic_folder would otherwise remove.
    monkeypatch.setattr(training.atomic, "shutil", SimpleNamespace(rmtree=lambda *a, **k: None))
    out = tmp_path / "models" / "m"
    with pytest.raises(SimulatedKill):
        training.train.main(fast_argv(messages, out))
    assert not out.exists()
    (staging,) = out.parent.glob(".m.partial-*")
    # The staging folder has weights, config, tokenizer and a sidecar, yet must not load.
    for name in ("model.safetensors", "config.json", "tokenizer.json", "saring.json"):
        assert (staging / name).is_file()
    assert_refused(staging)
    with pytest.raises(ModelFolderError, match="checksum"):
        read_sidecar(staging)


def test_failure_inside_finalise_keeps_the_previous_folder(tmp_path, trained, messages, monkeypatch):
    out = tmp_path / "models" / "m"
    shutil.copytree(trained.folder, out)
    before = folder_digest(out)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full while writing the model card")

    monkeypatch.setattr(training.finalise, "write_model_card", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        training.train.main(fast_argv(messages, out))
    assert folder_digest(out) == before
    read_sidecar(out)
    assert not list(out.parent.glob(".m.partial-*")) and not list(out.parent.glob(".m.old-*"))


KILL_IN_FINALISE = """
import os, signal, sys
import training.finalise as f, training.train as t
f.write_model_card = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
sys.exit(t.main(sys.argv[1:]))
"""


def test_sigkill_while_replacing_an_existing_folder_keeps_the_old_one(tmp_path, trained, messages):
    out = tmp_path / "models" / "m"
    shutil.copytree(trained.folder, out)
    before = folder_digest(out)
    proc = subprocess.run(
        [str(PYTHON), "-c", KILL_IN_FINALISE, *fast_argv(messages, out)],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert folder_digest(out) == before
    assert read_sidecar(out).version == read_sidecar(trained.folder).version
    (staging,) = out.parent.glob(".m.partial-*")
    assert (staging / "metrics.json").is_file()  # it got as far as the model card
    assert_refused(staging)


def test_published_files_are_readable_by_the_serving_user(tmp_path):
    """safetensors writes 0600; a service running as another user must still read a built folder."""
    import numpy as np
    from safetensors.numpy import save_file

    target = tmp_path / "model"
    with atomic_folder(target) as staging:
        save_file({"w": np.zeros(2, dtype=np.float32)}, str(staging / "model.safetensors"))
    assert (target / "model.safetensors").stat().st_mode & 0o777 == 0o644
