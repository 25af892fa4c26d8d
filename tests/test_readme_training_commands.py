"""Every command of the README's fine-tuning, own-labels, evaluation and feedback sections, run as written.

The commands are read from README.md, so the docs cannot drift from the code. They run in a scratch
folder laid out like a desk's checkout: `.venv` (a link to this one), the files the commands name
(tiny, made here), `models/default`, and the hub id `indobenchmark/indobert-base-p1` as a local folder
holding the session's tiny trained model (nothing is downloaded). Only what makes them fast changes:
every `train` gets few epochs of a tiny model appended (later flags win), torchrun gets 2 CPU
processes instead of 4, and `localhost:8000` is the test server's port. The chain is the issue's
path: own labels -> evaluate -> serve -> feedback in the desk's labels -> export with the desk's
columns -> retrain -> compare.
"""

from __future__ import annotations

import contextlib
import csv
import json
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from service_fixtures import free_port
from training_fixtures import ROOT, make_messages, subprocess_env, write_jsonl

from service.model.folder import read_sidecar
from service.model.torch_backend import TorchBackend

SECTIONS = ("## Fine-tuning", "## Your own labels", "## Evaluation", "## Feedback, retraining and floods")
HUB_ID = "indobenchmark/indobert-base-p1"
# Appended to every `train`: the tiny base learns the synthetic messages in a few epochs.
FAST = [
    "--num_train_epochs", "8",
    "--learning_rate", "5e-3",
    "--use_cpu", "true",
    "--disable_tqdm", "true",
    "--report_to", "none",
    "--save_strategy", "no",
    "--load_best_model_at_end", "false",
    "--early_stopping_patience", "0",
]  # fmt: skip
DESK_LABELS = {"aduan": "valid", "bukan_aduan": "chat", "iseng": "junk", "spam": "junk"}
DESK_PLACES = ["bandung", "medan", "makassar", "kupang", "jayapura", "padang", "pontianak", "ambon"]
SEED_PLACES = ["sleman", "garut", "bima", "palu", "kendari", "jambi"]
TEST_PLACES = ["bengkulu", "ternate", "sorong", "malang", "blitar", "tegal"]


@dataclass
class Command:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    background: bool = False


def readme_commands(readme: str) -> list[Command]:
    """The shell commands of the bash blocks in SECTIONS, in README order, continuation lines joined."""
    commands = []
    for section in readme.split("\n## ")[1:]:
        if not any(f"## {section}".startswith(title) for title in SECTIONS):
            continue
        for block in section.split("```bash\n")[1:]:
            text = block.split("```", 1)[0].replace("\\\n", " ")
            pending = ""
            for line in text.splitlines():
                pending += line
                try:
                    words = shlex.split(pending, comments=True)
                except ValueError:  # a quote spans lines, as JSON bodies of curl do
                    pending += "\n"
                    continue
                pending = ""
                if not words:
                    continue
                command = Command(argv=words)
                while "=" in command.argv[0] and not command.argv[0].startswith("-"):
                    name, value = command.argv.pop(0).split("=", 1)
                    command.env[name] = value
                if command.argv[-1] == "&":
                    command.argv.pop()
                    command.background = True
                commands.append(command)
    return commands


def for_the_test(command: Command, port: int) -> Command:
    argv = list(command.argv)
    if "training" in argv and argv[argv.index("training") + 1 :][:1] == ["train"]:
        argv += FAST
    argv = [a.replace("--nproc_per_node=4", "--nproc_per_node=2") for a in argv]
    if argv[0] == "curl":  # an HTTP error fails the command
        urls = [a.replace("localhost:8000", f"127.0.0.1:{port}") for a in argv[1:]]
        argv = ["curl", "--fail-with-body", "--max-time", "60", *urls]
    return Command(argv=argv, env=command.env, background=command.background)


def write_desk_csv(rows: list[dict], path: Path, delimiter: str) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(["pesan", "kategori"])
        writer.writerows([r["text"], DESK_LABELS[r["label"]]] for r in rows)
    return path


def lay_out_desk(root: Path, trained_folder: Path) -> None:
    """The files the README's commands name, tiny; places never repeat between training and test files."""
    (root / ".venv").symlink_to(ROOT / ".venv")
    shutil.copytree(trained_folder, root / HUB_ID)
    shutil.copytree(trained_folder, root / "models" / "default")
    (root / "data" / "seed").mkdir(parents=True)
    write_jsonl(make_messages(20, seed=11, places=SEED_PLACES), root / "data" / "seed" / "train.jsonl")
    write_jsonl(make_messages(6, seed=12, places=TEST_PLACES), root / "data" / "seed" / "test.jsonl")
    with (root / "my_desk_data.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(make_messages(10, seed=13, places=DESK_PLACES))
    # The desk's export is semicolon-separated (Excel in an Indonesian locale): detected from the header.
    write_desk_csv(make_messages(30, seed=14, places=DESK_PLACES), root / "desk.csv", ";")
    write_desk_csv(make_messages(6, seed=15, places=TEST_PLACES), root / "desk_test.csv", ",")


@contextlib.contextmanager
def background(command: Command, cwd: Path, port: int, log: Path) -> Iterator[subprocess.Popen]:
    env = {k: v for k, v in subprocess_env().items() if not k.startswith("SARING_")}
    env.update(command.env, SARING_PORT=str(port), SARING_DEVICE="cpu")
    with log.open("wb") as out:
        proc = subprocess.Popen(command.argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_every_readme_training_command_runs_as_written(tmp_path, trained):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = readme_commands(readme)
    programs = [" ".join(c.argv[:4]) for c in commands]
    # The path of the issue, in README order: nothing of it may silently drop out of the README.
    for expected in (
        ".venv/bin/python -m training train",
        ".venv/bin/torchrun --standalone --nproc_per_node=4 -m",
        ".venv/bin/python -m training evaluate",
        ".venv/bin/python -m service",
        ".venv/bin/python -m training export-feedback",
        ".venv/bin/python -m training compare",
    ):
        assert any(p.startswith(expected) for p in programs), f"{expected!r} not in the README's commands"
    assert sum(c.argv[0] == "curl" and any("/v1/feedback" in a for a in c.argv) for c in commands) >= 2

    desk = tmp_path / "desk"
    desk.mkdir()
    lay_out_desk(desk, trained.folder)
    port = free_port()
    logs: dict[str, str] = {}
    with contextlib.ExitStack() as servers:
        for n, original in enumerate(commands):
            command = for_the_test(original, port)
            if command.background:
                servers.enter_context(background(command, desk, port, tmp_path / f"server-{n}.log"))
                continue
            proc = subprocess.run(
                command.argv,
                cwd=desk,
                env={**subprocess_env(), **command.env},
                capture_output=True,
                text=True,
                timeout=600,
            )
            shown = " ".join(original.argv)
            assert proc.returncode == 0, f"{shown}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
            logs[shown] = proc.stdout + proc.stderr

    models = desk / "models"
    for name in ("indobert", "indobert-ddp", "desk", "desk-own-labels", "desk-candidate"):
        TorchBackend(models / name, device="cpu")  # complete, checksums right, loadable by the service
    assert not [p.name for p in models.iterdir() if p.name.startswith(".")]  # no work or staging folder left

    # torchrun: one folder, written by global rank 0 alone.
    ddp_log = next(log for shown, log in logs.items() if shown.startswith(".venv/bin/torchrun"))
    assert ddp_log.count("model folder written") == 1

    # Own labels, mapped: the model has the categories the data maps onto, and keeps the map.
    mapped = read_sidecar(models / "desk")
    assert mapped.labels == ["aduan", "bukan_aduan", "spam"]
    assert mapped.label_map == {"valid": "aduan", "chat": "bukan_aduan", "junk": "spam"}
    assert mapped.scores == {"validity": ["aduan"], "spam": ["spam"]}
    # Own labels, kept: no saring category name anywhere in its card or in the training log.
    own = read_sidecar(models / "desk-own-labels")
    assert own.labels == ["valid", "chat", "junk"] and own.scores == {"validity": ["valid"], "spam": ["junk"]}
    card = (models / "desk-own-labels" / "README.md").read_text(encoding="utf-8")
    own_log = next(log for shown, log in logs.items() if "--output_dir models/desk-own-labels" in shown)
    for text in (card, own_log):
        assert "aduan" not in text and "iseng" not in text
    assert "valid rejected" in card and own.libraries["transformers"]
    # The card's commands name the folder where it is.
    assert 'model="models/desk-own-labels"' in card

    # evaluate read the desk's file through the recorded map; every message has one decision.
    figures = json.loads((desk / "runs" / "desk" / "metrics.json").read_text(encoding="utf-8"))
    assert sum(figures["decisions"].values()) == figures["n"] == 24
    assert set(figures["decisions"]) == {"accept", "review", "reject"}

    # Feedback in the desk's label was stored as the model's label, in the service's default database,
    # and exported with the desk's column names; the candidate trained on both files.
    with (desk / "build" / "feedback.csv").open(encoding="utf-8", newline="") as fh:
        exported = list(csv.DictReader(fh))
    assert {r["id"]: r["kategori"] for r in exported} == {"wa-2001": "aduan", "wa-1029": "aduan"}
    assert set(exported[0]) == {"pesan", "kategori", "id"}
    assert (desk / "data" / "feedback" / "feedback.sqlite3").is_file()
    candidate = read_sidecar(models / "desk-candidate")
    assert "build/feedback.csv" in candidate.training_data["sources"]["train"]
    compared = json.loads((desk / "runs" / "compare" / "compare.json").read_text(encoding="utf-8"))
    assert compared["n"] == 24 and compared["validity_labels"] == ["aduan"]
