"""ONNX Runtime backend: the CPU fast path, serving an export made by `python -m training export`.

Which file is served is decided by the sidecar, not by what happens to lie in the folder:
`saring.json` field `onnx` records each export that was built and accepted, e.g.

    "onnx": {
      "source_weights_sha256": "<sha256 of model.safetensors the export was made from>",
      "fp32": {"file": "model.onnx", "sha256": "...", "check": {...}},
      "int8": {"file": "model.int8.onnx", "sha256": "...", "check": {"macro_f1_torch": ..., ...}}
    }

An int8 file is only recorded after it passed the macro-F1 check against the torch model, so
`variant="auto"` (int8 when recorded, else fp32) never serves an unchecked quantisation. A folder
whose export was made from other weights, or whose file does not match its checksum, is refused.
Tokenisation is the torch backend's (service.model.encoding), so both backends see identical ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.model.encoding import Encoded, TextEncoder, softmax64
from service.model.folder import SIDECAR_NAME, ModelFolderError, Sidecar, read_sidecar, sha256_file
from service.model.text_head import TextMix

ONNX_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
VARIANTS = ("auto", *ONNX_FILES)


def resolve_variant(folder: Path, sidecar: Sidecar, variant: str = "auto", verify: bool = True) -> tuple[str, Path]:
    """The (variant, file) to serve from a model folder, or ModelFolderError naming the problem."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ONNX variant {variant!r}: use one of {', '.join(VARIANTS)}")
    record = sidecar.onnx
    hint = f"run `python -m training export --model {folder}` (add --int8 --data FILE for int8)"
    if not record:
        raise ModelFolderError(f"{folder}: {SIDECAR_NAME} records no ONNX export; {hint}")
    if not sidecar.onnx_matches_weights():
        raise ModelFolderError(f"{folder}: the ONNX export was made from other weights than {SIDECAR_NAME}'s; {hint}")
    if variant == "auto":
        variant = "int8" if "int8" in record else "fp32"
    entry = record.get(variant)
    if not entry:
        raise ModelFolderError(f"{folder}: {SIDECAR_NAME} records no accepted {variant} ONNX model; {hint}")
    path = folder / entry["file"]
    if not path.is_file():
        raise ModelFolderError(f"{folder}: {entry['file']} is recorded in {SIDECAR_NAME} but missing")
    if verify and sha256_file(path) != entry.get("sha256"):
        raise ModelFolderError(
            f"{path} does not match the checksum in {SIDECAR_NAME}: it is half-written or was changed after export"
        )
    return variant, path


def make_session(path: str | Path, num_threads: int | None = None) -> ort.InferenceSession:
    """A CPU session tuned for one model thread: full graph optimisation, sequential, inter-op 1."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = num_threads or 0  # 0: ONNX Runtime's default (physical cores)
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class OnnxBackend:
    """Loads a model folder's ONNX export once and runs forwards on CPU, never concurrently.

    variant: "auto" (int8 when the sidecar records an accepted one, else fp32), "fp32" or "int8".
    verify_weights: check model.safetensors and the served ONNX file against their sha256.
    onnx_path: serve this file instead of the recorded one (the export command uses it to check a
    candidate before accepting it); the sidecar's record is then not consulted.
    """

    kind = "onnx"

    def __init__(
        self,
        model_dir: str | Path,
        num_threads: int | None = None,
        verify_weights: bool = True,
        variant: str = "auto",
        onnx_path: str | Path | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.sidecar = read_sidecar(self.model_dir, verify_weights=verify_weights)
        self.device = "cpu"
        if onnx_path is None:
            self.variant, self.onnx_path = resolve_variant(self.model_dir, self.sidecar, variant, verify_weights)
        else:
            self.variant, self.onnx_path = "file", Path(onnx_path)
        self.precision = self.variant  # fp32 or int8; "file" for an ONNX file given by path
        self.encoder = TextEncoder(self.model_dir, self.sidecar.max_length, prefix=self.sidecar.text_prefix)
        self.max_length = self.encoder.max_length
        # A frozen-encoder folder: the graph gives the encoder head's logits; the text head mixes in here.
        self.text_mix = TextMix(self.model_dir, self.sidecar.heads) if self.sidecar.heads else None
        self.session = make_session(self.onnx_path, num_threads)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def encode(self, texts: Sequence[str]) -> Encoded:
        encoded = self.encoder.encode(texts)
        if self.text_mix is not None:
            encoded.ids = self.text_mix.attach(encoded.ids, texts)
        return encoded

    def inputs(self, batch: Sequence[Sequence[int]]) -> dict[str, Any]:
        padded = self.encoder.pad(batch, return_tensors="np")
        missing = [name for name in self.input_names if name not in padded]
        if "token_type_ids" in missing:  # a single-segment text: all zeros
            padded["token_type_ids"] = np.zeros_like(padded["input_ids"])
            missing.remove("token_type_ids")
        if missing:
            raise ModelFolderError(f"{self.onnx_path} needs inputs {missing} that the tokenizer does not produce")
        return {name: np.asarray(padded[name], dtype=np.int64) for name in self.input_names}

    def logits(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        (logits,) = self.session.run(["logits"], self.inputs(batch))
        logits = logits.astype(np.float64)
        return logits if self.text_mix is None else self.text_mix.mix(logits, batch)

    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        return softmax64(self.logits(batch))
