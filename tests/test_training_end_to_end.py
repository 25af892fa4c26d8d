"""Train -> folder -> transformers pipeline and `python -m training evaluate`, checked independently."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_recall_fscore_support
from training_fixtures import (
    CATEGORIES,
    PLACES,
    make_messages,
    read_jsonl,
    write_csv,
    write_jsonl,
)

from service.model.folder import read_sidecar
from service.model.loading import predict
from service.model.scoring import score_rows
from service.model.torch_backend import TorchBackend
from training.__main__ import main as cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 200 and height > 200


def test_folder_holds_every_file_of_the_contract(trained):
    folder = trained.folder
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "saring.json",
        "metrics.json",
        "README.md",
        "confusion_matrix.png",
        "pr_curves.png",
    ):
        assert (folder / name).is_file(), f"{name} missing"
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {str(i): label for i, label in enumerate(CATEGORIES)}
    assert config["label2id"] == {label: i for i, label in enumerate(CATEGORIES)}
    assert_png(folder / "confusion_matrix.png")
    assert_png(folder / "pr_curves.png")
    # A successful run leaves nothing beside the folder: no work folder, no staging folder.
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


def test_sidecar_describes_the_run(trained):
    sidecar = read_sidecar(trained.folder)  # verifies weights against the recorded checksum
    weights_sha = hashlib.sha256((trained.folder / "model.safetensors").read_bytes()).hexdigest()
    assert sidecar.weights_sha256 == weights_sha
    assert re.fullmatch(rf"\d{{8}}-{weights_sha[:8]}", sidecar.version)
    assert sidecar.name == "tiny" and sidecar.base_model == "scratch:tiny"
    assert sidecar.labels == CATEGORIES
    assert sidecar.scores == {"validity": ["aduan"], "spam": ["spam", "iseng"]}
    assert sidecar.max_length == 128
    assert 0.0 <= sidecar.reject.value <= sidecar.accept.value <= 1.0
    assert "genuine complaints" in sidecar.reject.objective and "precision" in sidecar.accept.objective
    data = sidecar.training_data
    assert data["rows"] == {"train": 160, "validation": 32, "test": 40}
    assert data["sources"]["validation"] == str(trained.data.validation)
    assert re.fullmatch(r"[0-9a-f]{16}", data["fingerprint"])
    assert sidecar.created_at


def test_metrics_and_model_card_report_the_run(trained):
    metrics = json.loads((trained.folder / "metrics.json").read_text())
    sidecar = read_sidecar(trained.folder)
    assert metrics["model"] == {"name": sidecar.name, "version": sidecar.version}
    assert metrics["validation"]["n"] == 32 and metrics["test"]["n"] == 40
    assert metrics["validation"]["macro_f1"] > 0.6  # easy synthetic classes; the tiny model is not bit-reproducible
    assert metrics["thresholds"]["accept"]["value"] == sidecar.accept.value
    card = (trained.folder / "README.md").read_text()
    assert f"# {sidecar.name} ({sidecar.version})" in card
    assert f"{metrics['test']['macro_f1']:.3f}" in card
    assert "pipeline_tag: text-classification" in card


def test_transformers_pipeline_loads_folder_and_matches_backend(trained, messages):
    from transformers import pipeline

    texts = [r["text"] for r in read_jsonl(messages.test)] + ["P", "halo min", "x" * 40]
    clf = pipeline("text-classification", model=str(trained.folder), top_k=None, device="cpu")
    outputs = clf(texts)
    by_pipeline = np.array([[{o["label"]: o["score"] for o in out}[label] for label in CATEGORIES] for out in outputs])
    by_service, _ = predict(TorchBackend(trained.folder, device="cpu", dtype="fp32"), texts)  # as pipeline runs
    np.testing.assert_allclose(by_pipeline, by_service, atol=1e-4)
    assert np.allclose(by_pipeline.sum(axis=1), 1.0, atol=1e-5)


def noisy_evaluation_rows(test_rows: list[dict]) -> list[dict]:
    """Test rows plus unseen, mislabelled and mixed messages, so the figures are not all perfect."""
    rng = random.Random(11)
    rows = list(test_rows)
    for row in make_messages(6, seed=12, places=PLACES[17:]):
        rows.append({"text": row["text"] + " tolong", "label": rng.choice(CATEGORIES)})  # label noise
    rows += [
        {"text": "P", "label": "bukan_aduan"},
        {"text": "jalan rusak slot gacor", "label": "aduan"},
        {"text": "mas pulsa dong bansos", "label": "iseng"},
    ]
    return rows


def independent_figures(folder: Path, rows: list[dict]) -> dict:
    """The figures `evaluate` should report, computed with sklearn and the service's own scoring."""
    backend = TorchBackend(folder, device="cpu")
    probs, _ = predict(backend, [r["text"] for r in rows])
    y_true = np.array([CATEGORIES.index(r["label"]) for r in rows])
    y_pred = probs.argmax(axis=1)
    ids = list(range(len(CATEGORIES)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    present = sorted(set(y_true.tolist()))
    decisions = np.array([s.decision for s in score_rows(probs, backend.sidecar)])
    is_aduan = y_true == CATEGORIES.index("aduan")
    accepted = decisions == "accept"
    return {
        "macro_f1": f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0),
        "per_class": {
            label: {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": int(support[i])}
            for i, label in enumerate(CATEGORIES)
        },
        "decision_band": {
            "aduan_rejected_rate": (decisions[is_aduan] == "reject").mean(),
            "accept_precision": is_aduan[accepted].mean() if accepted.any() else 0.0,
            "review_rate": (decisions == "review").mean(),
        },
        "n": len(rows),
    }


def assert_figures_match(reported: dict, expected: dict) -> None:
    assert reported["n"] == expected["n"]
    assert reported["macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-12)
    for label in CATEGORIES:
        for key in ("precision", "recall", "f1", "support"):
            assert reported["per_class"][label][key] == pytest.approx(expected["per_class"][label][key], abs=1e-12)
    for key, value in expected["decision_band"].items():
        assert reported["decision_band"][key] == pytest.approx(value, abs=1e-12), key


def test_evaluate_command_writes_figures_that_match_sklearn(trained, messages, tmp_path, capsys):
    rows = noisy_evaluation_rows(read_jsonl(messages.test))
    data = write_jsonl(rows, tmp_path / "eval.jsonl")
    out = tmp_path / "report"
    code = cli(["evaluate", "--model", str(trained.folder), "--data", str(data), "--output", str(out)])
    assert code == 0
    reported = json.loads((out / "metrics.json").read_text())
    expected = independent_figures(trained.folder, rows)
    assert_figures_match(reported, expected)
    assert 0.0 < reported["macro_f1"] < 1.0  # the noise really makes mistakes to count
    assert reported["model"]["version"] == read_sidecar(trained.folder).version
    assert_png(out / "confusion_matrix.png")
    assert_png(out / "pr_curves.png")
    printed = capsys.readouterr().out
    assert f"macro-F1={reported['macro_f1']:.3f}" in printed and str(out / "metrics.json") in printed


def test_evaluate_reads_csv_with_a_label_map_like_jsonl(trained, messages, tmp_path):
    rows = noisy_evaluation_rows(read_jsonl(messages.test))
    codes = {label: str(i) for i, label in enumerate(CATEGORIES)}
    csv_file = write_csv([{"pesan": r["text"], "kelas": codes[r["label"]]} for r in rows], tmp_path / "eval.csv")
    mapping = json.dumps({code: label for label, code in codes.items()})
    out = tmp_path / "csv-report"
    argv = ["evaluate", "--model", str(trained.folder), "--data", str(csv_file), "--output", str(out)]
    assert cli([*argv, "--text_column", "pesan", "--label_column", "kelas", "--label_map", mapping]) == 0
    assert_figures_match(json.loads((out / "metrics.json").read_text()), independent_figures(trained.folder, rows))


def test_evaluate_on_the_test_file_agrees_with_the_folders_metrics(trained, messages, tmp_path):
    out = tmp_path / "test-report"
    assert cli(["evaluate", "--model", str(trained.folder), "--data", str(messages.test), "--output", str(out)]) == 0
    again = json.loads((out / "metrics.json").read_text())
    recorded = json.loads((trained.folder / "metrics.json").read_text())["test"]
    assert again["macro_f1"] == pytest.approx(recorded["macro_f1"], abs=1e-12)
    assert again["decision_band"] == pytest.approx(recorded["decision_band"], abs=1e-12)
    assert again["confusion_matrix"] == recorded["confusion_matrix"]


def test_json_config_file_instead_of_flags(tmp_path):
    rows = make_messages(30, seed=21, places=PLACES[:8])
    train_csv = write_csv(rows, tmp_path / "train.csv")
    out = tmp_path / "models" / "from-config"
    config = {
        "model_name_or_path": "scratch:tiny",
        "train_file": str(train_csv),  # one file as a plain string
        "label_map": {"spam": "spam"},  # an object, as one writes it in JSON
        "output_dir": str(out),
        "model_name": "dari-config",
        "max_length": 48,
        "validation_split": 0.2,
        "num_train_epochs": 2,
        "learning_rate": 5e-3,
        "use_cpu": True,
        "early_stopping_patience": 0,
        "save_strategy": "no",
        "load_best_model_at_end": False,
        "disable_tqdm": True,
        "accept_precision": 0.9,
        "allow_weak_model": True,  # 2 epochs on 96 rows stay near chance: the sanity gate would refuse
    }
    config_file = tmp_path / "train-config.json"
    config_file.write_text(json.dumps(config), encoding="utf-8")
    assert cli(["train", str(config_file)]) == 0
    sidecar = read_sidecar(out)
    assert sidecar.name == "dari-config" and sidecar.max_length == 48
    assert sidecar.accept.target == 0.9
    assert sidecar.training_data["rows"] == {"train": 96, "validation": 24}
    assert sidecar.training_data["sources"]["train"] == str(train_csv)
    readme = (out / "README.md").read_text()
    assert "Epochs 2" in readme
