"""Fixtures and helpers for the training package's tests (tests/test_training_*.py).

tests/conftest.py belongs to the whole suite, so these live here and each training test module
imports what it uses. The model folder is trained once per session (a module-level cache) by the real
`training.train.main` with `scratch:tiny`, so nothing touches the hub.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from make_messages import PLACES, make_messages, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv" / "bin" / "python"
TORCHRUN = ROOT / ".venv" / "bin" / "torchrun"
CATEGORIES = ["aduan", "bukan_aduan", "iseng", "spam"]


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_argv(train: Path | list[Path], out: Path, *extra: str, epochs: int = 15) -> list[str]:
    """Flags for a fast scratch:tiny run that learns the synthetic messages."""
    files = [str(p) for p in (train if isinstance(train, list) else [train])]
    return [
        "--model_name_or_path", "scratch:tiny",
        "--train_file", *files,
        "--output_dir", str(out),
        "--num_train_epochs", str(epochs),
        "--learning_rate", "5e-3",
        "--use_cpu", "true",
        "--early_stopping_patience", "0",
        "--disable_tqdm", "true",
        "--report_to", "none",
        "--seed", "7",
        *extra,
    ]  # fmt: skip


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for `python -m training` children: repo importable, hub switched off, quiet."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def write_csv(rows: list[dict], path: Path) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass(frozen=True)
class Messages:
    """Three disjoint labelled files: places never repeat between them, so no text leaks."""

    train: Path
    validation: Path
    test: Path


@dataclass(frozen=True)
class Trained:
    folder: Path
    data: Messages


def write_messages(root: Path) -> Messages:
    root.mkdir(parents=True, exist_ok=True)
    return Messages(
        train=write_jsonl(make_messages(40, seed=1, places=PLACES[:10]), root / "train.jsonl"),
        validation=write_jsonl(make_messages(8, seed=2, places=PLACES[10:15]), root / "validation.jsonl"),
        test=write_jsonl(make_messages(10, seed=3, places=PLACES[15:]), root / "test.jsonl"),
    )


_CACHE: dict[str, object] = {}


def session_messages(tmp_path_factory: pytest.TempPathFactory) -> Messages:
    """The session's data files, written once (call from a session-scoped fixture)."""
    if "messages" not in _CACHE:
        _CACHE["messages"] = write_messages(tmp_path_factory.mktemp("training-data"))
    return _CACHE["messages"]  # type: ignore[return-value]


def session_trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A complete model folder trained once per session with a validation and a test file.

    Each test module wraps this in its own fixture (fixtures imported into several modules would
    run once per module); the cache here makes it one training per session. Tests must not
    modify the folder: copy it first (shutil.copytree) to change anything.
    """
    if "trained" not in _CACHE:
        from training.train import main

        data = session_messages(tmp_path_factory)
        out = tmp_path_factory.mktemp("training-models") / "tiny"
        argv = train_argv(
            data.train,
            out,
            "--validation_file", str(data.validation),
            "--test_file", str(data.test),
            "--save_strategy", "no",
            "--load_best_model_at_end", "false",
        )  # fmt: skip
        with torch_threads(1):  # session fixtures are set up before module ones
            assert main(argv) == 0
        _CACHE["trained"] = Trained(folder=out, data=data)
    return _CACHE["trained"]  # type: ignore[return-value]


class SimulatedKill(BaseException):
    """Stands in for SIGKILL in-process: nothing after the raise point runs."""


def folder_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def model_like_folders(root: Path) -> list[Path]:
    """Every folder under root that holds model files, i.e. one someone might point the service at."""
    return sorted({p.parent for p in root.rglob("*") if p.name in ("config.json", "model.safetensors", "saring.json")})
