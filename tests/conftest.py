"""Shared fixtures: a tiny model folder trained for real by the training package, no hub."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from training_fixtures import session_messages, session_trained, torch_threads


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models train and score on one thread: two threads on a busy 2-core machine are ~10x slower."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The training and test files the session's tiny model was trained and tested on."""
    data = session_messages(tmp_path_factory)
    return {"train": data.train, "test": data.test}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one complete saring model folder (scratch:tiny) of the test session, trained once.

    Tests must not modify it: copy it first (shutil.copytree) to change anything.
    """
    return session_trained(tmp_path_factory).folder


@pytest.fixture(scope="session")
def messages(tmp_path_factory: pytest.TempPathFactory):
    """Train/validation/test files of the training tests (tests/training_fixtures.py)."""
    return session_messages(tmp_path_factory)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """One trained folder shared by every training test module, trained once per session."""
    return session_trained(tmp_path_factory)
