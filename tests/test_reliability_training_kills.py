"""Kill a training run anywhere: no state ever leaves a folder that would load as complete but is not.

tests/test_training_atomic.py kills at a checkpoint and at three named steps of finalise. Here:

- in-process, a kill before every single file operation that finalise performs (each file it opens
  for writing, each safetensors and tokenizer save, each rename, removal and directory creation,
  found by recording one clean run with an audit hook), and a torn write of the weights and of the
  final sidecar, with a previous complete folder in place;
- SIGKILL of real `python -m training train` processes at random moments of training and of the
  save, three at once.

After each kill, every folder holding model files is either refused by `read_sidecar` (as the
service refuses it) or is complete; the target is the previous complete folder or the new one.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import signal
import subprocess
import sys
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
import training.train
from service.model.folder import ModelFolderError, read_sidecar

pytestmark = pytest.mark.slow

# Files a finished folder has; a folder holding all of them that passes read_sidecar is complete.
COMPLETE = {"config.json", "model.safetensors", "saring.json", "tokenizer.json", "metrics.json", "README.md"}


def loads(folder: Path) -> bool:
    try:
        read_sidecar(folder)
    except ModelFolderError:
        return False
    return True


def check_leftovers(
    parent: Path, target: Path, previous: dict[str, str] | None, new_sha: str | None, where: str
) -> str:
    """The invariant after a kill; returns what the target holds: 'previous', 'new' or 'absent'.

    Every folder that loads is whole: the previous one, or a finished new one (all files, and the
    weights of this run when `new_sha` is known).
    """
    for folder in model_like_folders(parent):
        if loads(folder):
            names = {p.name for p in folder.iterdir()}
            assert names >= COMPLETE, f"{where}: {folder.name} loads but lacks {COMPLETE - names}"
            if folder_digest(folder) != previous and new_sha is not None:
                assert read_sidecar(folder).weights_sha256 == new_sha, f"{where}: {folder.name} holds other weights"
    if not target.exists():
        # Only where the OS cannot exchange two folders in one step: the old one waits as .<name>.old-*.
        retired = parent.glob(f".{target.name}.old-*")
        assert previous is None or any(folder_digest(f) == previous for f in retired), where
        return "absent"
    if previous is not None and folder_digest(target) == previous:
        return "previous"
    assert loads(target), f"{where}: the target is neither the previous folder nor a complete new one"
    return "new"


def exchange_works(tmp: Path) -> bool:
    a, b = tmp / "exchange-a", tmp / "exchange-b"
    a.mkdir()
    b.mkdir()
    return training.atomic._exchange(a, b)


# -- every file operation of finalise ------------------------------------------------------------

_HOOK: dict[str, object] = {"on_op": None, "root": None}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
EVENTS = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate", "os.symlink"}


def _audit(event: str, args: tuple) -> None:
    on_op, root = _HOOK["on_op"], _HOOK["root"]
    if on_op is None:
        return
    if event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE_FLAGS)
        if not writing or not isinstance(path, str | bytes | os.PathLike):
            return
    elif event not in EVENTS:
        return
    path = os.fsdecode(args[0]) if isinstance(args[0], str | bytes | os.PathLike) else ""
    if path.startswith(str(root)):
        _report(event, path)


def _report(event: str, path: str) -> None:
    on_op = _HOOK["on_op"]
    if on_op is None:
        return
    _HOOK["on_op"] = None  # what on_op itself writes (a torn file) is not an operation of finalise
    try:
        on_op(event, path)
    finally:
        _HOOK["on_op"] = on_op


if not getattr(sys, "_saring_audit_installed", False):  # audit hooks cannot be removed: install once
    sys.addaudithook(_audit)
    sys._saring_audit_installed = True


def _reported(name: str, real, path_arg: int, path_kwarg: str):
    """Saves done in Rust (safetensors, tokenizers) and the ctypes exchange, which no audit hook sees."""

    def call(*args, **kwargs):
        _report(name, os.fspath(args[path_arg] if len(args) > path_arg else kwargs[path_kwarg]))
        return real(*args, **kwargs)

    return call


@pytest.fixture(scope="module")
def finalise_call(trained, tmp_path_factory):
    """The arguments of one real finalise call (trainer, tokenizer, data, options), to replay it."""
    captured = {}
    real = training.train.finalise

    def capture(run):
        captured["run"] = run
        return real(run)

    out = tmp_path_factory.mktemp("finalise") / "first"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training.train, "finalise", capture)
        argv = train_argv(
            trained.data.train,
            out,
            "--validation_file", str(trained.data.validation),
            "--save_strategy", "no",
            "--load_best_model_at_end", "false",
            "--allow_weak_model", "true",  # 2 epochs may stay near chance; the save is what is tested
            epochs=2,
        )  # fmt: skip
        assert training.train.main(argv) == 0
    return captured["run"], read_sidecar(out).weights_sha256


@pytest.fixture
def instrumented(monkeypatch, tmp_path):
    """File operations under tmp_path reach `_HOOK['on_op']`; cleanup after a kill is disabled."""
    import transformers.modeling_utils
    import transformers.tokenization_utils_tokenizers as tok

    safetensors_save = transformers.modeling_utils.safe_save_file
    monkeypatch.setattr(
        transformers.modeling_utils, "safe_save_file", _reported("safetensors", safetensors_save, 1, "filename")
    )
    tok_save = _reported(
        "tokenizers", tok.TokenizersBackend._save_pretrained, 1, "save_directory"
    )  # (self, save_directory, ...)
    monkeypatch.setattr(tok.TokenizersBackend, "_save_pretrained", tok_save)
    monkeypatch.setattr(training.atomic, "_exchange", _reported("exchange", training.atomic._exchange, 1, "b"))
    monkeypatch.setattr(training.atomic, "shutil", SimpleNamespace(rmtree=lambda *a, **k: None))
    _HOOK["root"] = tmp_path
    yield
    _HOOK["on_op"] = None
    _HOOK["root"] = None


def run_finalise(run, target: Path, on_op) -> None:
    _HOOK["on_op"] = on_op
    try:
        training.train.finalise(dataclasses.replace(run, final_dir=target))
    finally:
        _HOOK["on_op"] = None


def test_a_kill_before_any_file_operation_of_finalise_leaves_no_false_folder(
    finalise_call, trained, instrumented, tmp_path
) -> None:
    args, new_sha = finalise_call
    # 1. Record the operations of one clean run that replaces an existing folder.
    recorded: list[tuple[str, str]] = []
    parent = tmp_path / "record"
    shutil.copytree(trained.folder, parent / "m")
    run_finalise(args, parent / "m", lambda event, path: recorded.append((event, Path(path).name)))
    previous = folder_digest(trained.folder)
    assert check_leftovers(parent, parent / "m", previous, new_sha, "clean run") == "new"
    kinds = {event for event, _ in recorded}
    assert {"open", "safetensors", "tokenizers", "exchange"} <= kinds, recorded
    assert len(recorded) >= 10, recorded

    outcomes: dict[str, int] = {}
    # 2. Kill before each of them in turn; then a torn (half-written) weights file and final sidecar.
    torn = [i for i, (event, name) in enumerate(recorded) if name in ("model.safetensors", "saring.json")]
    plans = [(i, None) for i in range(len(recorded) + 1)] + [(i, "torn") for i in (torn[0], torn[-1])]
    for index, kind in plans:
        parent = tmp_path / f"kill-{index}-{kind}"
        shutil.copytree(trained.folder, parent / "m")
        seen: list[tuple[str, str]] = []

        def on_op(event: str, path: str, index=index, kind=kind, seen=seen) -> None:
            if kind == "torn" and len(seen) == index + 1:  # the write at `index` got halfway
                written = Path(seen[-1][1])
                written.write_bytes(written.read_bytes()[: written.stat().st_size // 2])
                raise SimulatedKill(f"torn {written.name}")
            if kind is None and len(seen) == index:
                raise SimulatedKill(f"before {event} {Path(path).name}")
            seen.append((event, path))

        where = f"kill {kind or 'before'} op {index}: {recorded[index] if index < len(recorded) else 'done'}"
        try:
            run_finalise(args, parent / "m", on_op)
        except SimulatedKill:
            pass
        else:
            assert index >= len(recorded), f"{where}: finalise finished"
        state = check_leftovers(parent, parent / "m", previous, new_sha, where)
        outcomes[state] = outcomes.get(state, 0) + 1
        if index < len(recorded) - 2:  # before the publishing rename or exchange: the old folder serves
            assert state == "previous", where
    print(f"{len(recorded)} operations: {recorded}; outcomes {outcomes}")
    assert outcomes.get("absent", 0) == 0 or not exchange_works(tmp_path), outcomes
    assert outcomes["previous"] >= len(recorded) - 2 and outcomes["new"] >= 1, outcomes


def test_exchange_swaps_two_folders_in_one_step(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("b")
    if not training.atomic._exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("this file system has no RENAME_EXCHANGE: atomic_folder uses two renames here")
    assert (tmp_path / "a" / "x").read_text() == "b" and (tmp_path / "b" / "x").read_text() == "a"


# -- SIGKILL of real training processes at random moments ----------------------------------------


def test_sigkill_at_random_moments_of_training_and_save(trained, tmp_path) -> None:
    """Three runs at once, each replacing a complete folder, each SIGKILLed at a random moment.

    One moment falls in training (0-1 s after the work folder appears), two in the save (once the
    staging folder holds a random number of files, plus 0-0.1 s), so the kills land inside the save
    whatever the machine's speed. The seed is in every failure message (SARING_KILL_SEED replays it).
    A run that finishes before its moment is checked the same way.
    """
    # The global random module is seeded by training (seed 7): draw the seed from the OS.
    seed = int(os.environ.get("SARING_KILL_SEED", random.SystemRandom().randrange(1_000_000)))
    rng = random.Random(seed)
    previous = folder_digest(trained.folder)
    runs = []
    moments = [("training", 0, rng.uniform(0.0, 1.0))]
    moments += [("save", rng.randint(1, 9), rng.uniform(0.0, 0.1)) for _ in range(2)]
    for n, (phase, files, delay) in enumerate(moments):
        parent = tmp_path / f"run{n}"
        shutil.copytree(trained.folder, parent / "m")
        argv = train_argv(
            trained.data.train,
            parent / "m",
            "--validation_file", str(trained.data.validation),
            "--save_strategy", "no",
            "--load_best_model_at_end", "false",
            "--allow_weak_model", "true",  # a near-chance run must still reach the save to be killed in it
            epochs=3,
        )  # fmt: skip
        log = (tmp_path / f"run{n}.log").open("w")
        proc = subprocess.Popen(
            [str(PYTHON), "-m", "training", "train", *argv], cwd=ROOT, env=subprocess_env(), stdout=log, stderr=log
        )
        runs.append(
            SimpleNamespace(proc=proc, parent=parent, phase=phase, files=files, delay=delay, log=log, killed_at=None)
        )
    try:
        deadline = time.monotonic() + 240
        pending = list(runs)
        started: dict[int, float] = {}
        while pending and time.monotonic() < deadline:
            for run in list(pending):
                if run.proc.poll() is not None:
                    pending.remove(run)
                    continue
                if id(run) not in started:
                    marker = list(run.parent.glob(".m.work" if run.phase == "training" else ".m.partial-*"))
                    if marker and (run.phase == "training" or len(list(marker[0].iterdir())) >= run.files):
                        started[id(run)] = time.monotonic()
                if id(run) in started and time.monotonic() >= started[id(run)] + run.delay:
                    os.kill(run.proc.pid, signal.SIGKILL)
                    run.proc.wait(timeout=60)
                    if run.proc.returncode == -signal.SIGKILL:  # not already finished
                        run.killed_at = f"{run.delay:.2f} s into {run.phase}" + (
                            f", with {run.files}+ files written" if run.phase == "save" else ""
                        )
                    pending.remove(run)
            time.sleep(0.005)
        assert not pending, f"seed {seed}: runs still going after 240 s"
    finally:
        for run in runs:
            if run.proc.poll() is None:
                run.proc.kill()
            run.proc.wait(timeout=60)
            run.log.close()

    for run in runs:
        where = f"seed {seed}, run killed {run.killed_at or 'never (finished)'}"
        print(where, sorted(p.name for p in run.parent.iterdir()))
        if run.killed_at is None:
            assert run.proc.returncode == 0, (where, Path(run.log.name).read_text()[-3000:])
        state = check_leftovers(run.parent, run.parent / "m", previous, None, where)
        assert state in ("previous", "new") or (state == "absent" and run.killed_at), where
    assert any(run.killed_at for run in runs), f"seed {seed}: every run finished before its kill"
