"""The frozen-encoder model (training/frozen.py -> service/model/heads.py): what is fitted is what is served."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from make_messages import PLACES, make_messages
from service_fixtures import make_settings

from service.http.app import create_app
from service.model.encoding import normalise_text, softmax64
from service.model.folder import ModelFolderError, Sidecar, Threshold, read_sidecar, sha256_file, write_sidecar
from service.model.heads import HEADS_FILE, POOLED_LAYERS
from service.model.loading import predict
from service.model.text_head import TFIDF_WEIGHTS
from service.model.torch_backend import TorchBackend
from training.finalise import version_digest
from training.frozen import embed_texts, fit_heads, stage_heads

LABELS = ["aduan", "bukan_aduan", "iseng", "spam"]
PREFIX = "query: "
POOLED = [1, 2]  # the tiny encoder's two layers: every test here serves a head that reads more than the last


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BertModel with a WordPiece vocabulary: a local stand-in for a pretrained encoder."""
    import torch
    from transformers import BertModel

    from training.scratch import scratch_config, train_wordpiece

    rows = make_messages(20, seed=11, places=PLACES)
    tokenizer = train_wordpiece([r["text"] for r in rows], 500, 48)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("base") / "encoder"
    BertModel(scratch_config("tiny", len(tokenizer), 48), add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def fitted(base_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    import torch

    torch.set_num_threads(1)
    rows = make_messages(12, seed=1, places=PLACES[:12])
    heads = fit_heads(base_dir, [r["text"] for r in rows], [r["label"] for r in rows], LABELS, 48, PREFIX, 0.5, 7,
                      progress=False, layers=POOLED)  # fmt: skip
    folder = tmp_path_factory.mktemp("models") / "frozen"
    folder.mkdir()
    record = stage_heads(heads, folder, LABELS)
    threshold = Threshold(value=0.5, objective="test", target=0.0)
    write_sidecar(
        folder,
        Sidecar(
            name="frozen-test", version="t", base_model=str(base_dir), max_length=48, labels=LABELS,
            scores={"validity": ["aduan"], "spam": ["iseng", "spam"]}, temperature=1.0,
            accept=threshold, reject=Threshold(value=0.1, objective="test", target=0.0), spam=threshold,
            weights_sha256=sha256_file(folder / "model.safetensors"), heads=record, text_prefix=PREFIX,
        ),
    )  # fmt: skip
    return heads, folder


def test_served_folder_gives_the_fitted_mixture(fitted) -> None:
    """Reloaded from disk, the folder answers mean(embedding head, scikit-learn's own TF-IDF pipeline)."""
    heads, folder = fitted
    texts = [r["text"] for r in make_messages(3, seed=5, places=PLACES[12:])] + ["ＳＬＯＴ ｇａｃｏｒ maxwin"]
    features = embed_texts(heads.model, heads.encoder, texts, progress=False)
    weight = heads.model.head.weight.detach().numpy().astype(np.float64)
    bias = heads.model.head.bias.detach().numpy().astype(np.float64)
    embedding_probs = softmax64(features @ weight.T + bias)
    tfidf_probs = heads.tfidf.predict_proba([normalise_text(t) for t in texts])
    expected = 0.5 * embedding_probs + 0.5 * tfidf_probs

    served, _ = predict(TorchBackend(folder, device="cpu"), texts)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert read_sidecar(folder).heads["text_head"] == {"kind": "tfidf_lr", "weight": 0.5}
    assert read_sidecar(folder).heads[POOLED_LAYERS] == POOLED and features.shape[1] == 2 * 32


def test_pooled_layers_are_each_normalised_then_concatenated(fitted) -> None:
    """The features are the per-layer masked means of the encoder's hidden states, as recorded."""
    import torch

    heads, _ = fitted
    texts = ["jalan rusak parah", "P"]
    padded = heads.encoder.pad(heads.encoder.encode(texts).ids, return_tensors="pt")
    with torch.no_grad():
        hidden = heads.model.encoder(**padded, output_hidden_states=True).hidden_states
    mask = padded["attention_mask"].unsqueeze(-1).float()
    parts = [torch.nn.functional.normalize((hidden[i] * mask).sum(1) / mask.sum(1), dim=-1) for i in POOLED]
    np.testing.assert_allclose(embed_texts(heads.model, heads.encoder, texts, progress=False),
                               torch.cat(parts, dim=-1).numpy(), atol=1e-6)  # fmt: skip


def test_a_folder_without_pooled_layers_reads_the_last_layer(fitted, tmp_path: Path) -> None:
    """Folders written before heads could pool several layers keep serving what they were fitted on."""
    import torch
    from safetensors.torch import load_file, save_file

    _, fitted_folder = fitted
    folder = shutil.copytree(fitted_folder, tmp_path / "last-only")
    head = load_file(str(folder / HEADS_FILE))
    save_file({"weight": head["weight"][:, 32:].contiguous(), "bias": head["bias"]}, str(folder / HEADS_FILE))
    sidecar = read_sidecar(folder, verify_weights=False)
    record = {k: v for k, v in sidecar.heads.items() if k != POOLED_LAYERS}
    record["files"] = {**record["files"], HEADS_FILE: sha256_file(folder / HEADS_FILE)}
    write_sidecar(folder, replace(sidecar, heads=record))
    backend = TorchBackend(folder, device="cpu")
    assert backend.model.layers == [2]
    padded = backend.encoder.pad(backend.encoder.encode(["jalan rusak"]).ids, return_tensors="pt")
    with torch.no_grad():
        last = backend.model.encoder(**padded).last_hidden_state.mean(1)
        served = backend.model.embed(padded["input_ids"], padded["attention_mask"])
    np.testing.assert_allclose(served.numpy(), torch.nn.functional.normalize(last, dim=-1).numpy(), atol=1e-6)


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([1, 5], r"hidden states 0\.\.2"),
        ("1,2", r"hidden states 0\.\.2"),
        ([2], r"head reads 64 features, but pooling"),
    ],
)
def test_a_head_that_does_not_fit_its_pooled_layers_is_refused(fitted, tmp_path: Path, layers, message) -> None:
    _, fitted_folder = fitted
    folder = shutil.copytree(fitted_folder, tmp_path / "bad")
    sidecar = read_sidecar(folder)
    write_sidecar(folder, replace(sidecar, heads={**sidecar.heads, POOLED_LAYERS: layers}))
    with pytest.raises(ModelFolderError, match=message):
        TorchBackend(folder, device="cpu")


def test_heads_learn_the_training_messages(fitted) -> None:
    _, folder = fitted
    rows = make_messages(6, seed=9, places=PLACES[12:])
    probs, _ = predict(TorchBackend(folder, device="cpu"), [r["text"] for r in rows])
    accuracy = (np.array(LABELS)[probs.argmax(axis=1)] == np.array([r["label"] for r in rows])).mean()
    assert accuracy >= 0.9, accuracy


def test_api_scores_the_frozen_folder_like_predict(fitted) -> None:
    _, folder = fitted
    texts = ["jalan di desa sukamaju rusak parah mohon diperbaiki", "slot gacor maxwin daftar sekarang"]
    expected, _ = predict(TorchBackend(folder, device="cpu"), texts)
    with TestClient(create_app(make_settings(folder))) as client:
        response = client.post("/v1/score", json={"messages": [{"text": t} for t in texts]})
    assert response.status_code == 200, response.text
    for result, row in zip(response.json()["results"], expected, strict=True):
        assert result["probabilities"] == pytest.approx(dict(zip(LABELS, row, strict=True)), abs=1e-6)


@pytest.mark.parametrize("name", [HEADS_FILE, TFIDF_WEIGHTS])
def test_a_changed_head_file_is_refused(fitted, tmp_path: Path, name: str) -> None:
    _, folder = fitted
    copy = shutil.copytree(folder, tmp_path / "copy")
    data = bytearray((copy / name).read_bytes())
    data[-1] ^= 0xFF
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match=name):
        read_sidecar(copy)


def test_train_method_frozen_heads_writes_a_served_folder(base_dir: Path, tmp_path: Path) -> None:
    """`python -m training train --method frozen_heads`: validation, thresholds, metrics, card, sidecar."""
    import json

    from make_messages import write_jsonl

    from training.train import main

    train = write_jsonl(make_messages(12, seed=1, places=PLACES[:10]), tmp_path / "train.jsonl")
    validation = write_jsonl(make_messages(5, seed=2, places=PLACES[10:15]), tmp_path / "validation.jsonl")
    out = tmp_path / "model"
    argv = [
        "--model_name_or_path", str(base_dir), "--method", "frozen_heads", "--text_prefix", PREFIX,
        "--train_file", str(train), "--validation_file", str(validation), "--output_dir", str(out),
        "--max_length", "48", "--use_cpu", "true", "--disable_tqdm", "true", "--report_to", "none",
        "--pooled_layers", "1", "2",
    ]  # fmt: skip
    assert main(argv) == 0
    sidecar = read_sidecar(out)
    assert sidecar.heads["kind"] == "mean_pool_linear" and sidecar.text_prefix == PREFIX
    assert sidecar.heads[POOLED_LAYERS] == [1, 2]
    # The frozen encoder's bytes are the base's: the version also names the heads fitted on it.
    assert sidecar.version.split("-")[1] == version_digest(sidecar.weights_sha256, sidecar.heads)[:8]
    assert sidecar.version.split("-")[1] != sidecar.weights_sha256[:8]
    assert sidecar.calibration["method"] == "none"
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["validation"]["macro_f1"] >= 0.9
    assert (out / "README.md").is_file() and not (out.parent / ".model.work").exists()
    probs, _ = predict(TorchBackend(out, device="cpu"), ["slot gacor maxwin daftar sekarang"])
    assert probs.shape == (1, 4) and abs(probs.sum() - 1) < 1e-9


def test_onnx_export_serves_a_frozen_folder_like_torch(fitted, tmp_path: Path) -> None:
    """The encoder half goes into the ONNX graph; the ONNX backend mixes the text head in as torch does."""
    import json

    from service.model.onnx_backend import OnnxBackend
    from training.__main__ import main

    _, fitted_folder = fitted
    folder = shutil.copytree(fitted_folder, tmp_path / "frozen")
    rows = make_messages(4, seed=5, places=PLACES[:6])
    data = tmp_path / "check.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    rc = main(["export", "--model", str(folder), "--int8", "--data", str(data)])
    record = read_sidecar(folder).onnx
    assert record["fp32"]["check"]["max_abs_diff"] <= 1e-3
    assert (rc == 0) == ("int8" in record)  # int8 is kept exactly when its macro-F1 gate passed
    texts = [r["text"] for r in rows] + ["SLOT GACOR maxwin daftar sekarang", "P"]
    torch_probs, _ = predict(TorchBackend(folder, device="cpu", dtype="fp32"), texts)
    onnx = OnnxBackend(folder, variant="fp32", num_threads=1)
    assert onnx.text_mix is not None and onnx.encoder.prefix == PREFIX
    onnx_probs, _ = predict(onnx, texts)
    np.testing.assert_allclose(onnx_probs, torch_probs, atol=1e-4)
    with TestClient(create_app(make_settings(folder, backend="onnx", onnx_variant="fp32"))) as client:
        answer = client.post("/v1/score", json={"messages": [{"id": "1", "text": texts[-2]}]}).json()
        assert client.get("/v1/model").json()["precision"] == "fp32"
    assert answer["results"][0]["probabilities"]["spam"] == pytest.approx(
        torch_probs[-2][LABELS.index("spam")], abs=1e-4
    )


def test_the_naive_baseline_is_the_same_model(fitted) -> None:
    """bench's per-message baseline rebuilds a multi-layer head from the folder's files and agrees with the service."""
    from bench.naive import naive_pipeline

    _, folder = fitted
    texts = ["jalan di desa sukamaju rusak parah", "slot gacor maxwin", "P"]
    assert naive_pipeline(folder, 1, texts)["max_abs_diff_vs_service_fp32"] <= 1e-5
