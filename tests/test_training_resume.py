"""--resume picks up the last checkpoint of an interrupted run and still writes the folder."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from training_fixtures import (
    train_argv,
)
from transformers import TrainerCallback

import training.train
from service.model.folder import read_sidecar
from training.__main__ import main as cli
from training.errors import UserError

EPOCHS = 3
STEPS_PER_EPOCH = 5  # 160 training rows, batch 32


class Interrupted(Exception):
    pass


class InterruptAfterFirstSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        raise Interrupted(f"stopped after saving step {state.global_step}")


class RecordSteps(TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def trainer_with(monkeypatch: pytest.MonkeyPatch, callback: TrainerCallback) -> None:
    """Make training.train build its Trainer with one more callback."""

    class Trainer(training.train.Trainer):
        def __init__(self, *args, callbacks=None, **kwargs):
            super().__init__(*args, callbacks=[*(callbacks or []), callback], **kwargs)

    monkeypatch.setattr(training.train, "Trainer", Trainer)


def argv(messages, out: Path, *extra: str) -> list[str]:
    return train_argv(messages.train, out, "--validation_file", str(messages.validation), *extra, epochs=EPOCHS)


def test_resume_continues_from_the_last_checkpoint(tmp_path, messages, monkeypatch, caplog):
    out = tmp_path / "models" / "m"
    checkpoints = out.parent / ".m.work" / "checkpoints"

    with monkeypatch.context() as patch:
        trainer_with(patch, InterruptAfterFirstSave())
        with pytest.raises(Interrupted, match=f"step {STEPS_PER_EPOCH}$"):
            training.train.main(argv(messages, out))
    assert not out.exists()
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == [f"checkpoint-{STEPS_PER_EPOCH}"]

    recorder = RecordSteps()
    trainer_with(monkeypatch, recorder)
    caplog.set_level(logging.INFO, logger="training")
    assert training.train.main(argv(messages, out, "--resume", "true")) == 0

    assert f"resuming from {checkpoints / f'checkpoint-{STEPS_PER_EPOCH}'}" in caplog.text
    # Trainer state came from the checkpoint: the step counter continues instead of starting at 1.
    assert recorder.steps[0] == STEPS_PER_EPOCH + 1
    assert recorder.steps[-1] == EPOCHS * STEPS_PER_EPOCH
    assert len(recorder.steps) == (EPOCHS - 1) * STEPS_PER_EPOCH
    read_sidecar(out)
    assert not checkpoints.parent.exists()  # the work folder goes once the folder is written


def test_resume_without_a_checkpoint_starts_fresh(tmp_path, messages, monkeypatch, caplog):
    out = tmp_path / "models" / "m"
    recorder = RecordSteps()
    trainer_with(monkeypatch, recorder)
    caplog.set_level(logging.INFO, logger="training")
    extra = ("--resume", "true", "--save_strategy", "no", "--load_best_model_at_end", "false")
    assert training.train.main(argv(messages, out, *extra)) == 0
    assert "resuming from nothing: no checkpoint found, starting fresh" in caplog.text
    assert recorder.steps[0] == 1
    read_sidecar(out)


def test_a_fresh_run_refuses_an_old_runs_checkpoints_unless_told(tmp_path, messages, monkeypatch, caplog):
    out = tmp_path / "models" / "m"
    stale = out.parent / ".m.work" / "checkpoints" / "checkpoint-999"
    stale.mkdir(parents=True)
    recorder = RecordSteps()
    trainer_with(monkeypatch, recorder)
    extra = ("--save_strategy", "no", "--load_best_model_at_end", "false")
    # As transformers did for a used output_dir: an unfinished run's checkpoints are not deleted silently.
    with pytest.raises(UserError, match=r"checkpoint-999.*--resume true.*--overwrite_output_dir true"):
        training.train.main(argv(messages, out, *extra))
    assert stale.is_dir() and not recorder.steps and not out.exists()

    assert training.train.main(argv(messages, out, *extra, "--overwrite_output_dir", "true")) == 0
    assert recorder.steps[0] == 1 and not stale.exists()
    read_sidecar(out)


class CtrlCAfterFirstSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        raise KeyboardInterrupt


def test_ctrl_c_says_how_to_resume_and_keeps_the_checkpoints(tmp_path, messages, monkeypatch, capsys):
    out = tmp_path / "models" / "m"
    trainer_with(monkeypatch, CtrlCAfterFirstSave())
    assert cli(["train", *argv(messages, out)]) == 130
    printed = capsys.readouterr().err
    checkpoint = out.parent / ".m.work" / "checkpoints" / f"checkpoint-{STEPS_PER_EPOCH}"
    assert f"the last checkpoint is {checkpoint}" in printed
    assert "Run the same command with --resume true to continue" in printed
    assert "Traceback" not in printed and "KeyboardInterrupt" not in printed
    assert checkpoint.is_dir() and not out.exists()
