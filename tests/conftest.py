"""Shared fixtures: a tiny model folder trained for real by the training package, no hub."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))

from make_messages import PLACES, make_messages, write_jsonl  # noqa: E402
from training_fixtures import session_messages, session_trained  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    return {
        "train": write_jsonl(make_messages(40, places=PLACES[:14]), root / "train.jsonl"),
        "test": write_jsonl(make_messages(10, places=PLACES[14:]), root / "test.jsonl"),
    }


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_data: dict[str, Path]) -> Path:
    """A complete saring model folder (scratch:tiny), trained once per test session."""
    from training.train import main

    out = tmp_path_factory.mktemp("models") / "tiny"
    main(
        [
            "--model_name_or_path", "scratch:tiny",
            "--train_file", str(tiny_data["train"]),
            "--test_file", str(tiny_data["test"]),
            "--output_dir", str(out),
            "--num_train_epochs", "15",
            "--learning_rate", "5e-3",
            "--use_cpu", "true",
            "--early_stopping_patience", "0",
            "--disable_tqdm", "true",
            "--save_strategy", "no",
            "--load_best_model_at_end", "false",
        ]
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def messages(tmp_path_factory: pytest.TempPathFactory):
    """Train/validation/test files of the training tests (tests/training_fixtures.py)."""
    return session_messages(tmp_path_factory)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """One trained folder shared by every training test module, trained once per session."""
    return session_trained(tmp_path_factory)
