"""`python -m training export`: write ONNX models into a model folder for the CPU fast path.

    python -m training export --model models/default                      # model.onnx (fp32)
    python -m training export --model models/default --int8 --data val.jsonl [real.jsonl ...]

The fp32 export is checked against the torch model (probabilities within FP32_MAX_ABS_DIFF on
sample texts and --data). The int8 model (onnxruntime dynamic quantisation) is kept only when its
macro-F1 on every --data file is at most --max_f1_drop (default 1 point) below the torch model's; otherwise
it is discarded and the command exits 1. Accepted files are recorded, with their sha256 and the
check figures, in saring.json's `onnx` field, which the ONNX backend reads to pick what to serve
(service/model/onnx_backend.py). model.safetensors and its checksum are never touched.

Files are written under temporary names in the folder and moved into place with os.replace, and
the sidecar is rewritten (atomically) last, so a reader sees either the old or the new record.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from service.model.folder import SIDECAR_NAME, WEIGHTS_NAME, ModelFolderError, Sidecar, read_sidecar, sha256_file
from service.model.loading import predict
from service.model.onnx_backend import ONNX_FILES, OnnxBackend
from training.arguments import LabelledDataArguments
from training.errors import UserError
from training.metrics import MAX_F1_DROP, classification_figures, within_f1_drop

logger = logging.getLogger("training")

FP32_MAX_ABS_DIFF = 1e-3
OPSET = 17
# Varied texts for the fp32 check even without --data: short, long (truncated), emoji, mixed case.
SAMPLE_TEXTS = [
    "jalan di desa kami rusak parah mohon diperbaiki",
    "Assalamualaikum pak, bansos keluarga saya tidak cair padahal sudah terdaftar sejak tahun lalu. "
    "Mohon ditindaklanjuti karena kami sangat membutuhkan. " * 12,
    "😀🙏🔥",
    "SLOT GACOR MAXWIN!!! daftar sekarang bonus 100% wa 0812xxxx",
    "tes",
    "lapor mas, ada tuyul di rumah saya wkwk",
]


@dataclass
class ExportArguments:
    model: str = field(metadata={"help": "Model folder to export (written into the same folder)."})
    int8: bool = field(
        default=False,
        metadata={"help": "Also write model.int8.onnx (dynamic int8 quantisation); needs --data for the F1 check."},
    )
    data: list[str] | None = field(
        default=None,
        metadata={
            "help": "Labelled CSV/JSONL files (e.g. held-out validation data and real data) for the torch vs int8 "
            "macro-F1 check: int8 is kept only if it holds on every file.",
            "nargs": "+",
        },
    )
    max_f1_drop: float = field(
        default=MAX_F1_DROP, metadata={"help": "Largest macro-F1 drop (0.01 = 1 point) at which int8 is accepted."}
    )
    opset: int = field(default=OPSET, metadata={"help": "ONNX opset of the export."})
    batch_size: int = field(default=32, metadata={"help": "Messages per forward in the checks."})


def f1_gate(f1_torch: float, f1_int8: float, max_drop: float = MAX_F1_DROP) -> dict[str, Any]:
    """Accept a quantised model only if its macro-F1 is at most `max_drop` below the torch model's."""
    drop = f1_torch - f1_int8
    return {
        "macro_f1_torch": round(float(f1_torch), 6),
        "macro_f1_int8": round(float(f1_int8), 6),
        "drop": round(float(drop), 6),
        "max_drop": max_drop,
        "accepted": within_f1_drop(f1_torch, f1_int8, max_drop),
    }


def _fsync(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def publish(tmp: Path, final: Path) -> None:
    """Move a finished temporary file into place: readers see the old file or the new one."""
    _fsync(tmp)
    os.replace(tmp, final)


def write_sidecar_atomic(folder: Path, sidecar: Sidecar) -> None:
    tmp = folder / f".{SIDECAR_NAME}.tmp-{os.getpid()}"
    tmp.write_text(sidecar.to_json() + "\n", encoding="utf-8")
    publish(tmp, folder / SIDECAR_NAME)


def export_fp32(folder: Path, out: Path, opset: int = OPSET, attention: str = "eager") -> list[str]:
    """torch.onnx.export of the folder's classifier to `out`; returns the graph's input names.

    A frozen-encoder folder exports its encoder and linear head (service/model/heads.py); its TF-IDF
    head reads the text outside the graph and is mixed in by the ONNX backend, as by the torch one.

    The TorchScript exporter (dynamo=False) is used: the dynamo exporter needs onnxscript, which
    this project does not install. Batch and sequence axes are dynamic; the trace input is padded
    so the attention-mask path is the one recorded. Attention is traced in its eager form by default:
    the SDPA trace adds IsNaN/Where masking nodes that cost 5 % of an int8 forward on CPU, and ONNX
    Runtime's fused (Q)Attention kernels measured slower than the plain graph at one thread
    (`python -m bench.onnx_graph`, which also passes attention="sdpa" to measure the difference).
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    from service.model.encoding import TextEncoder
    from service.model.heads import POOLED_LAYERS, MeanPoolClassifier

    sidecar = read_sidecar(folder, verify_weights=False)
    if sidecar.heads:  # a frozen-encoder folder: the graph is the encoder and its linear head
        model = MeanPoolClassifier.from_folder(folder, layers=sidecar.heads.get(POOLED_LAYERS)).float().eval()
        accepted = {"input_ids", "attention_mask"}
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder).float().eval()
        accepted = set(inspect.signature(model.forward).parameters)
    _set_attention(model, attention)
    encoder = TextEncoder(folder, sidecar.max_length, prefix=sidecar.text_prefix)
    sample = encoder.pad(encoder.encode(SAMPLE_TEXTS[:2]).ids, return_tensors="pt")
    if "token_type_ids" in accepted and "token_type_ids" not in sample:
        sample["token_type_ids"] = torch.zeros_like(sample["input_ids"])
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample and n in accepted]

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            out = self.model(**dict(zip(names, tensors, strict=True)))
            return out if isinstance(out, torch.Tensor) else out.logits

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python branches
        torch.onnx.export(
            Logits(),
            tuple(sample[n] for n in names),
            str(out),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return names


def _set_attention(model: Any, attention: str) -> None:
    """Set the attention implementation of every transformers module inside `model` (same weights, same maths)."""
    for module in model.modules():
        if hasattr(module, "set_attn_implementation") and getattr(module, "config", None) is not None:
            module.set_attn_implementation(attention)


def quantize_int8(
    src: Path, dst: Path, const_b_only: bool = True, per_channel: bool = True, extra_options: dict | None = None
) -> dict[str, Any]:
    """Dynamic int8 quantisation (weights int8 ahead of time, activations at run time).

    Only matmuls with constant weights are quantised by default: quantising the attention products
    (query x key, weights x value) too measured no faster at the CPU batch budget (bench.onnx_graph)
    and adds error. Weights get one scale per output channel: on the default model's held-out writers
    that halved the median distance to fp32 (0.0017 against 0.0033; 99th percentile 0.14 against 0.19)
    at the same speed, and one scale per tensor had cost 0.7 points of real city complaints called `aduan`.
    `extra_options`: more of the quantiser's options (bench.onnx_graph types fused graphs with them).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # the quantiser logs every tensor at INFO on the root logger
    try:
        quantize_dynamic(
            src,
            dst,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            extra_options={"MatMulConstBOnly": const_b_only, **(extra_options or {})},
        )
    finally:
        root.setLevel(level)
    return {
        "method": "onnxruntime.quantization.quantize_dynamic",
        "weight_type": "QInt8",
        "per_channel": per_channel,
        "matmul_const_b_only": const_b_only,
    }


def _check_figures(reference: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    return {
        "n": int(len(probs)),
        "max_abs_diff": float(np.abs(reference - probs).max()) if len(probs) else 0.0,
        "argmax_agreement": float((reference.argmax(1) == probs.argmax(1)).mean()) if len(probs) else 1.0,
    }


def _check_texts(args: ExportArguments, sidecar: Sidecar, columns: LabelledDataArguments):
    """The texts both models are compared on (labelled files first, when given) and, per file, its rows' true
    label ids: [(path, ids)] in the order the files' texts come."""
    if not args.data:
        return list(SAMPLE_TEXTS), []
    from training.evaluate import load_labelled

    index = {label: i for i, label in enumerate(sidecar.labels)}
    texts: list[str] = []
    labelled = []
    for path in args.data:
        split = load_labelled("check", path, sidecar, columns)
        texts += split.texts
        labelled.append((path, np.array([index[label] for label in split.labels])))
    return texts + list(SAMPLE_TEXTS), labelled


def _int8_verdict(args: ExportArguments, sidecar: Sidecar, reference: np.ndarray, probs: np.ndarray, labelled):
    """The int8 check against torch on each labelled file: (check record, accepted?).

    The record's top-level figures are the file with the largest macro-F1 drop (the one that decides);
    `files` holds every file's.
    """
    files: dict[str, dict[str, Any]] = {}
    start = 0
    for path, y_true in labelled:
        rows = slice(start, start + len(y_true))
        start += len(y_true)
        f1_torch = classification_figures(y_true, reference[rows].argmax(1), sidecar.labels)["macro_f1"]
        f1_int8 = classification_figures(y_true, probs[rows].argmax(1), sidecar.labels)["macro_f1"]
        gate = f1_gate(f1_torch, f1_int8, args.max_f1_drop)
        files[path] = {"data": path, **_check_figures(reference[rows], probs[rows]), **gate}
        if Path(path).is_file():
            files[path]["data_sha256"] = sha256_file(Path(path))
        print(
            f"int8 vs torch on {path} (n={len(y_true)}): macro-F1 {gate['macro_f1_torch']:.4f} -> "
            f"{gate['macro_f1_int8']:.4f} (drop {gate['drop']:+.4f}, allowed {args.max_f1_drop}); "
            f"argmax agreement {files[path]['argmax_agreement']:.1%}"
        )
    deciding = max(files.values(), key=lambda f: f["drop"])
    accepted = all(f["accepted"] for f in files.values())
    return {**deciding, "accepted": accepted, "files": files}, accepted


def _publish_export(
    args: ExportArguments,
    folder: Path,
    sidecar: Sidecar,
    names: list[str],
    fp32_check: dict[str, Any],
    tmp: tuple[Path, Path],
    int8_entry: dict[str, Any] | None,
) -> tuple[Path, Path]:
    """Files first, the sidecar record last; an int8 file is kept only when it is (still) recorded."""
    tmp_fp32, tmp_int8 = tmp
    final_fp32, final_int8 = folder / ONNX_FILES["fp32"], folder / ONNX_FILES["int8"]
    publish(tmp_fp32, final_fp32)
    weights_sha = sidecar.weights_sha256 or sha256_file(folder / WEIGHTS_NAME)
    previous = sidecar.onnx if sidecar.onnx.get("source_weights_sha256") == weights_sha else {}
    record: dict[str, Any] = {
        "source_weights_sha256": weights_sha,
        "opset": args.opset,
        "inputs": names,
        "exporter": f"torch.onnx.export (TorchScript, dynamo=False), torch {_torch_version()}",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "fp32": {"file": ONNX_FILES["fp32"], "sha256": sha256_file(final_fp32), "check": fp32_check},
    }
    if int8_entry:
        publish(tmp_int8, final_int8)
        record["int8"] = {**int8_entry, "sha256": sha256_file(final_int8)}
    elif not args.int8 and "int8" in previous and final_int8.is_file():
        record["int8"] = previous["int8"]  # same weights: the accepted int8 model still holds
    else:
        final_int8.unlink(missing_ok=True)  # never leave an unrecorded int8 file behind
    sidecar.onnx = record
    write_sidecar_atomic(folder, sidecar)
    return final_fp32, final_int8


def run_export(args: ExportArguments, columns: LabelledDataArguments | None = None) -> int:
    """Export fp32 (checked against torch), optionally int8 (kept only if macro-F1 holds), then record both."""
    from service.model.torch_backend import TorchBackend

    folder = Path(args.model)
    if args.int8 and not args.data:
        print("--int8 needs --data FILE: the int8 model is only kept if its macro-F1 on labelled data holds up")
        return 2
    try:
        sidecar = read_sidecar(folder)
    except ModelFolderError as exc:
        raise UserError(str(exc)) from None
    texts, labelled = _check_texts(args, sidecar, columns or LabelledDataArguments())

    def score(backend: Any) -> np.ndarray:
        return predict(backend, texts, max_batch_size=args.batch_size)[0]

    reference = score(TorchBackend(folder, device="cpu", verify_weights=False, dtype="fp32"))
    pid = os.getpid()
    tmp_fp32, tmp_int8 = folder / f".model.onnx.tmp-{pid}", folder / f".model.int8.onnx.tmp-{pid}"
    try:
        names = export_fp32(folder, tmp_fp32, args.opset)
        fp32_check = _check_figures(reference, score(OnnxBackend(folder, onnx_path=tmp_fp32, verify_weights=False)))
        print(f"fp32 ONNX vs torch on {fp32_check['n']} texts: max |dp| = {fp32_check['max_abs_diff']:.2e}")
        if fp32_check["max_abs_diff"] > FP32_MAX_ABS_DIFF:
            print(f"export refused: fp32 ONNX differs from torch by more than {FP32_MAX_ABS_DIFF}; nothing written")
            return 1
        int8_entry, refused = None, None
        if args.int8:
            quantization = quantize_int8(tmp_fp32, tmp_int8)
            probs = score(OnnxBackend(folder, onnx_path=tmp_int8, verify_weights=False))
            check, accepted = _int8_verdict(args, sidecar, reference, probs, labelled)
            if accepted:
                int8_entry = {"file": ONNX_FILES["int8"], "quantization": quantization, "check": check}
            else:
                refused = check
        final_fp32, final_int8 = _publish_export(
            args, folder, sidecar, names, fp32_check, (tmp_fp32, tmp_int8), int8_entry
        )
    finally:
        tmp_fp32.unlink(missing_ok=True)
        tmp_int8.unlink(missing_ok=True)

    print(f"wrote {final_fp32}" + (f" and {final_int8}" if int8_entry else "") + f"; recorded in {SIDECAR_NAME}")
    if refused:
        print(
            f"int8 model refused: macro-F1 dropped by {refused['drop']:.4f} (> {args.max_f1_drop}); "
            f"{ONNX_FILES['int8']} was not kept. Serve fp32 (SARING_ONNX_VARIANT=fp32) or the torch backend."
        )
        return 1
    return 0


def _torch_version() -> str:
    import torch

    return torch.__version__


def main(argv: list[str]) -> int:
    from transformers import HfArgumentParser

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    args, columns = HfArgumentParser((ExportArguments, LabelledDataArguments)).parse_args_into_dataclasses(args=argv)
    return run_export(args, columns)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
