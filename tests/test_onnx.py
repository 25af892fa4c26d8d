"""The ONNX fast path: export command, int8 F1 gate, parity with the torch backend, serving.

Tolerances (stated here, checked below):
- fp32 ONNX vs torch: probabilities within 1e-4 absolute, logits within 1e-4 (abs + relative).
- int8 ONNX vs torch: the same argmax for at least 90% of texts (int8 moves probabilities a little).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.model.folder import SIDECAR_NAME, ModelFolderError, read_sidecar, sha256_file, write_sidecar
from service.model.onnx_backend import ONNX_FILES
from training.export import MAX_F1_DROP, f1_gate

ROOT = Path(__file__).resolve().parents[1]

FP32_ATOL = 1e-4
INT8_MIN_ARGMAX_AGREEMENT = 0.9

TEXTS = [
    "jalan di desa bandung rusak parah mohon diperbaiki",
    "slot gacor hari ini maxwin link daftar medan88 bonus",
    "lapor ada tuyul di rumah saya garut hihi",
    "selamat pagi admin salam hangat dari sleman",
    "banjir di kupang sudah seminggu drainase tersumbat " * 40,  # truncated to max_length
    "😀😀😀🙏🔥",  # emoji only: unknown tokens
    "!!!",
    "TES TES ini beneran dibaca gak sih",
    "pinjaman dana cepat cair tanpa jaminan wa 0812-3456-7890",
    "bansos",
]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _sidecar_json(folder: Path) -> dict:
    return json.loads((folder / SIDECAR_NAME).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def exported(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny folder after `python -m training export --int8` (the shared one stays untouched)."""
    from training.__main__ import main

    folder = _copy(tiny_model_dir, tmp_path_factory.mktemp("onnx") / "tiny")
    rc = main(["export", "--model", str(folder), "--int8", "--data", str(tiny_data["test"])])
    assert rc == 0
    return folder


@pytest.fixture(scope="module")
def torch_backend(exported: Path):
    from service.model.torch_backend import TorchBackend

    return TorchBackend(exported, device="cpu", dtype="fp32")  # the reference the export checks against


# --- the F1 gate, with crafted numbers -------------------------------------------------------------


def test_f1_gate_accepts_up_to_one_point_and_refuses_more():
    assert MAX_F1_DROP == 0.01
    assert f1_gate(0.85, 0.85)["accepted"]
    assert f1_gate(0.85, 0.84)["accepted"]  # exactly 1 point (0.85 - 0.84 is 0.0100000000000000089)
    assert f1_gate(0.80, 0.83)["accepted"]  # int8 better: fine
    refused = f1_gate(0.85, 0.8399)
    assert not refused["accepted"]
    assert refused["drop"] == pytest.approx(0.0101)
    assert not f1_gate(0.90, 0.70)["accepted"]
    assert not f1_gate(0.90, 0.895, max_drop=0.001)["accepted"]
    assert f1_gate(0.90, 0.895, max_drop=0.01) == {
        "macro_f1_torch": 0.9,
        "macro_f1_int8": 0.895,
        "drop": 0.005,
        "max_drop": 0.01,
        "accepted": True,
    }


# --- the export command ----------------------------------------------------------------------------


@pytest.mark.slow
def test_export_records_files_without_touching_the_weights_checksum(exported: Path, tiny_model_dir: Path):
    before, after = _sidecar_json(tiny_model_dir), _sidecar_json(exported)
    assert after["format_version"] == 1
    assert after["weights_sha256"] == before["weights_sha256"] == sha256_file(exported / "model.safetensors")
    assert {k: v for k, v in after.items() if k != "onnx"} == {k: v for k, v in before.items() if k != "onnx"}
    read_sidecar(exported, verify_weights=True)  # still a valid folder

    record = after["onnx"]
    assert record["source_weights_sha256"] == before["weights_sha256"]
    for variant, name in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
        assert record[variant]["file"] == name
        assert record[variant]["sha256"] == sha256_file(exported / name)
    check = record["int8"]["check"]
    assert check["accepted"] and check["drop"] <= 0.01
    assert {"macro_f1_torch", "macro_f1_int8", "max_drop", "n", "data"} <= set(check)
    assert record["fp32"]["check"]["max_abs_diff"] < 1e-3
    assert not [p.name for p in exported.iterdir() if p.name.startswith(".")]  # no temporary files left


@pytest.mark.slow
def test_int8_needs_labelled_data(exported: Path, capsys: pytest.CaptureFixture[str]):
    from training.__main__ import main

    assert main(["export", "--model", str(exported), "--int8"]) == 2
    assert "--data" in capsys.readouterr().out


def _constant_model(src: Path, dst: Path) -> dict:
    """A stand-in for a quantiser that ruins the model: every message gets the same logits."""
    import onnx
    from onnx import TensorProto, helper

    graph_inputs = [i for i in onnx.load(str(src)).graph.input]
    n_labels = 4
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [1, n_labels], [5.0] + [0.0] * (n_labels - 1))
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["mask_f", "axes"], ["rows"], keepdims=1),
        helper.make_node("Mul", ["rows", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "bias"], ["logits"]),
    ]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_labels])
    graph = helper.make_graph(nodes, "constant", graph_inputs, [output], initializer=[bias, zero, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(dst))
    return {"method": "test saboteur"}


@pytest.mark.slow
def test_export_refuses_an_int8_model_that_drops_f1(
    tiny_model_dir: Path,
    tiny_data: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    import training.export
    from service.model.onnx_backend import OnnxBackend
    from training.__main__ import main

    folder = _copy(tiny_model_dir, tmp_path / "tiny")
    monkeypatch.setattr(training.export, "quantize_int8", _constant_model)
    rc = main(["export", "--model", str(folder), "--int8", "--data", str(tiny_data["test"])])
    out = capsys.readouterr().out
    assert rc == 1
    assert "int8 model refused" in out and "not kept" in out
    assert not (folder / "model.int8.onnx").exists()
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]
    record = _sidecar_json(folder)["onnx"]
    assert "int8" not in record and record["fp32"]["file"] == "model.onnx"  # fp32 export still usable
    with pytest.raises(ModelFolderError, match="no accepted int8"):
        OnnxBackend(folder, variant="int8")
    assert OnnxBackend(folder).variant == "fp32"


def test_int8_must_hold_on_every_labelled_file(tmp_path: Path) -> None:
    """Two files: int8 equals torch on the first and loses most of the second: refused, the second decides."""
    from types import SimpleNamespace

    from training.export import _int8_verdict

    labels = ["aduan", "bukan_aduan", "iseng", "spam"]
    truth = np.array([0, 1, 2, 3] * 5)
    reference = np.eye(4)[np.concatenate([truth, truth])]  # torch is right on both files
    wrong = np.eye(4)[(truth + 1) % 4]
    int8 = np.concatenate([np.eye(4)[truth], wrong])
    args = SimpleNamespace(max_f1_drop=0.01)
    labelled = [(str(tmp_path / "held_out.jsonl"), truth), (str(tmp_path / "real.jsonl"), truth)]
    check, accepted = _int8_verdict(args, SimpleNamespace(labels=labels), reference, int8, labelled)
    assert not accepted and not check["accepted"]
    assert check["files"][labelled[0][0]]["accepted"] and not check["files"][labelled[1][0]]["accepted"]
    assert check["data"] == labelled[1][0] and check["drop"] == 1.0
    check, accepted = _int8_verdict(args, SimpleNamespace(labels=labels), reference, reference, labelled)
    assert accepted and set(check["files"]) == {path for path, _ in labelled}


# --- the backend -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_onnx_backend_tokenises_exactly_like_torch(exported: Path, torch_backend):
    from service.model.onnx_backend import OnnxBackend

    backend = OnnxBackend(exported, variant="fp32")
    assert backend.device == "cpu" and backend.sidecar == torch_backend.sidecar
    ours, theirs = backend.encode(TEXTS), torch_backend.encode(TEXTS)
    assert ours == theirs
    assert ours.truncated[4] and not any(ours.truncated[:4])
    assert len(ours.ids[4]) == backend.max_length


@pytest.mark.slow
def test_fp32_onnx_matches_torch(exported: Path, torch_backend):
    from service.model.onnx_backend import OnnxBackend

    backend = OnnxBackend(exported, variant="fp32", num_threads=1)
    ids = torch_backend.encode(TEXTS).ids
    for batch in (ids, ids[:1], ids[5:6], ids[::-1]):  # mixed lengths (padding), single rows, another order
        probs, expected = backend.forward(batch), torch_backend.forward(batch)
        assert probs.dtype == np.float64 and probs.shape == (len(batch), 4)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
        np.testing.assert_allclose(probs, expected, rtol=0, atol=FP32_ATOL)
        np.testing.assert_allclose(backend.logits(batch), torch_backend.logits(batch), rtol=1e-4, atol=1e-4)


def test_export_traces_eager_attention_and_quantises_weight_matmuls(exported: Path):
    """The CPU-fast graph shape: no per-layer SDPA masking (IsNaN); int8 matmuls against the weights."""
    import onnx

    def op_types(name: str) -> set[str]:
        return {node.op_type for node in onnx.load(str(exported / name), load_external_data=False).graph.node}

    assert "MatMul" in op_types(ONNX_FILES["fp32"]) and "IsNaN" not in op_types(ONNX_FILES["fp32"])
    assert "MatMulInteger" in op_types(ONNX_FILES["int8"])
    assert _sidecar_json(exported)["onnx"]["int8"]["quantization"]["matmul_const_b_only"] is True
    # One scale per output channel of each weight (closer to fp32 than one per tensor, same speed).
    graph = onnx.load(str(exported / ONNX_FILES["int8"]), load_external_data=False).graph
    dims = {t.name: list(t.dims) for t in graph.initializer}
    weights = [n.input[1].removesuffix("_quantized") for n in graph.node if n.op_type == "MatMulInteger"]
    scales = [dims[f"{w}_scale"] for w in weights]
    assert scales and all(len(d) == 1 and d[0] > 1 for d in scales), scales
    assert _sidecar_json(exported)["onnx"]["int8"]["quantization"]["per_channel"] is True


@pytest.mark.slow
def test_int8_onnx_agrees_with_torch_on_most_argmaxes(exported: Path, torch_backend, tiny_data: dict[str, Path]):
    from service.model.loading import predict
    from service.model.onnx_backend import OnnxBackend

    backend = OnnxBackend(exported)  # auto: the accepted int8 model
    assert backend.variant == "int8" and backend.onnx_path.name == "model.int8.onnx"
    texts = TEXTS + [json.loads(line)["text"] for line in tiny_data["test"].read_text().splitlines()]
    probs, _ = predict(backend, texts)
    expected, _ = predict(torch_backend, texts)
    agreement = (probs.argmax(axis=1) == expected.argmax(axis=1)).mean()
    assert agreement >= INT8_MIN_ARGMAX_AGREEMENT, agreement
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.slow
def test_backend_refuses_missing_stale_or_changed_exports(tiny_model_dir: Path, exported: Path, tmp_path: Path):
    from service.model.onnx_backend import OnnxBackend

    with pytest.raises(ModelFolderError, match="records no ONNX export"):
        OnnxBackend(tiny_model_dir)

    stale = _copy(exported, tmp_path / "stale")
    data = _sidecar_json(stale)
    data["onnx"]["source_weights_sha256"] = "0" * 64
    (stale / SIDECAR_NAME).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ModelFolderError, match="other weights"):
        OnnxBackend(stale)

    changed = _copy(exported, tmp_path / "changed")
    with (changed / "model.int8.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelFolderError, match="checksum"):
        OnnxBackend(changed, variant="int8")
    OnnxBackend(changed, variant="fp32")  # the other file is fine

    with pytest.raises(ValueError, match="unknown ONNX variant"):
        OnnxBackend(exported, variant="int4")


# --- the service -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["auto", "fp32", "int8"])
def test_service_scores_with_the_onnx_backend(exported: Path, variant: str):
    from fastapi.testclient import TestClient

    from service.http.app import create_app
    from service.settings import Settings

    settings = Settings(model_dir=exported, backend="onnx", onnx_variant=variant, num_threads=1)
    with TestClient(create_app(settings)) as client:
        body = {"messages": [{"id": "a", "text": TEXTS[0]}, {"id": "b", "text": TEXTS[4]}, {"text": TEXTS[5]}]}
        response = client.post("/v1/score", json=body)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r.get("id") for r in results] == ["a", "b", None]  # null ids are left out
        assert [r["truncated"] for r in results] == [False, True, False]
        assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-6 for r in results)
        info = client.get("/v1/model").json()
        assert info["backend"] == "onnx" and info["device"] == "cpu"


def _with_onnx_record(tiny_model_dir: Path, tmp_path: Path, record: dict) -> Path:
    folder = _copy(tiny_model_dir, tmp_path / "model")
    sidecar = read_sidecar(folder)
    sidecar.onnx = record
    write_sidecar(folder, sidecar)
    return folder


@pytest.mark.parametrize(
    ("variants", "same_weights", "device", "expected"),
    [
        (("fp32", "int8"), True, "cpu", "onnx"),  # an accepted int8 export of these weights: the CPU fast path
        (("fp32",), True, "cpu", "torch"),  # fp32 ONNX alone is not faster than torch bf16
        (("fp32", "int8"), False, "cpu", "torch"),  # exported from other weights
        (("fp32", "int8"), True, "cuda", "torch"),  # ONNX Runtime here is CPU-only
        ((), True, "cpu", "torch"),
    ],
)
def test_auto_backend_serves_int8_onnx_only_where_it_was_accepted_for_these_weights(
    tiny_model_dir: Path, tmp_path: Path, variants, same_weights: bool, device: str, expected: str
) -> None:
    from service.model.loading import pick_kind

    sha = read_sidecar(tiny_model_dir).weights_sha256
    record = {v: {"file": ONNX_FILES[v], "sha256": "x"} for v in variants}
    if variants:
        record["source_weights_sha256"] = sha if same_weights else "0" * 64
    assert pick_kind(_with_onnx_record(tiny_model_dir, tmp_path, record), device) == expected


def test_auto_backend_serves_the_accepted_int8_export(exported: Path) -> None:
    from service.model.loading import load_backend

    backend = load_backend(exported, kind="auto", device="cpu", num_threads=1)
    recorded = "int8" in read_sidecar(exported).onnx
    assert (backend.kind, backend.precision) == (("onnx", "int8") if recorded else ("torch", backend.precision))
