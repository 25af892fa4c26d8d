"""The model folder contract (docs/design.md section 2): reading and checking `saring.json`.

Training writes this sidecar and the service reads it; both go through this module so the
format is defined once. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from service.model.scoring import SCORES, THRESHOLDS

SIDECAR_NAME = "saring.json"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CATEGORIES = ("aduan", "bukan_aduan", "iseng", "spam")


class ModelFolderError(Exception):
    """A model folder is missing, incomplete or inconsistent; the message names the problem."""


@dataclass
class Threshold:
    """One threshold of the decision band and why it has the value it has."""

    value: float
    objective: str
    target: float
    # Figures on the validation data at this threshold (rates, precision, recall, support).
    achieved: dict[str, float] = field(default_factory=dict)


@dataclass
class Sidecar:
    """saring's own description of a model folder, stored as `saring.json`."""

    name: str
    version: str
    base_model: str
    max_length: int
    labels: list[str]
    # Which labels add up to each score: validity = sum P(l) for l in scores["validity"].
    scores: dict[str, list[str]]
    temperature: float
    accept: Threshold
    reject: Threshold
    spam: Threshold
    training_data: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str = ""
    created_at: str = ""
    # ONNX exports of these weights (`python -m training export`): files, checksums, accuracy checks.
    # Not covered by weights_sha256; the ONNX backend checks each file against its own sha256 here.
    onnx: dict[str, Any] = field(default_factory=dict)
    # The desk's raw labels -> model labels the model was trained with (`--label_map`): evaluate,
    # compare, export and POST /v1/feedback accept the desk's own labels through it.
    label_map: dict[str, str] = field(default_factory=dict)
    # Versions of the libraries that trained the folder (torch, transformers, ...).
    libraries: dict[str, str] = field(default_factory=dict)
    # A frozen-encoder model (service/model/heads.py): its head files with sha256, and the TF-IDF head's
    # files and weight in the mix. Empty: a sequence-classification folder.
    heads: dict[str, Any] = field(default_factory=dict)
    # Prepended to every text before tokenising (e5 reads "query: "); empty for most models.
    text_prefix: str = ""
    # Reduced-precision checks of these weights on the torch backend (training/precision.py):
    # {"bf16": {"accepted": bool, "sets": {...}}}. SARING_DTYPE=auto serves bf16 on a CPU with native
    # bf16 only when accepted. Empty: never checked, fp32 on CPU.
    precision: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def model_label(self, label: str) -> str | None:
        """A model label, or a raw label the folder's label map knows, as the model label; else None."""
        label = self.label_map.get(label, label)
        return label if label in self.labels else None

    def onnx_matches_weights(self) -> bool:
        """Whether the recorded ONNX export was made from these weights (True when no weights checksum)."""
        return not self.weights_sha256 or self.onnx.get("source_weights_sha256") == self.weights_sha256

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sidecar:
        data = dict(data)
        for key in THRESHOLDS:
            if not isinstance(data.get(key), dict):
                raise ModelFolderError(f"{SIDECAR_NAME}: threshold '{key}' is missing")
        try:
            for key in THRESHOLDS:
                data[key] = Threshold(**data[key])
            return cls(**data)
        except TypeError as exc:  # missing or unknown keys
            raise ModelFolderError(f"{SIDECAR_NAME}: {exc}") from exc


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_sidecar(folder: Path, sidecar: Sidecar) -> None:
    (folder / SIDECAR_NAME).write_text(sidecar.to_json() + "\n", encoding="utf-8")


def _check_values(data: object, path: Path) -> None:
    """Refuse a JSON file whose values would break serving later: wrong types, text UTF-8 cannot carry.

    A folder is data from outside the service; a wrong type here would otherwise surface as a 500 on
    every answer that quotes the sidecar, after the folder had been swapped in.
    """
    if not isinstance(data, dict):
        raise ModelFolderError(f"{path}: expected a JSON object, found {type(data).__name__}")
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ModelFolderError(f"{path}: holds text that is not valid Unicode (a lone surrogate)") from None
    if path.name != SIDECAR_NAME:
        return

    def number(value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    def strings(value: object) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    checks = {
        "name": lambda v: isinstance(v, str),
        "version": lambda v: isinstance(v, str),
        "base_model": lambda v: isinstance(v, str),
        "created_at": lambda v: isinstance(v, str),
        "weights_sha256": lambda v: isinstance(v, str),
        "max_length": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "labels": strings,
        "scores": lambda v: isinstance(v, dict) and all(strings(m) for m in v.values()),
        "temperature": lambda v: number(v) and v > 0,
        "training_data": lambda v: isinstance(v, dict),
        "calibration": lambda v: isinstance(v, dict),
        "onnx": lambda v: isinstance(v, dict),
        "heads": lambda v: isinstance(v, dict),
        "text_prefix": lambda v: isinstance(v, str),
        "precision": lambda v: isinstance(v, dict) and all(isinstance(x, dict) for x in v.values()),
        "label_map": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
        "libraries": lambda v: isinstance(v, dict),
    }
    for key in THRESHOLDS:
        checks[key] = lambda v: isinstance(v, dict) and number(v.get("value")) and 0.0 <= v["value"] <= 1.0
    wrong = [key for key, ok in checks.items() if key in data and not ok(data[key])]
    if wrong:
        raise ModelFolderError(f"{path}: wrong type or value for {', '.join(wrong)}")


def read_sidecar(folder: str | Path, verify_weights: bool = True) -> Sidecar:
    """Load and check a model folder's sidecar against its config and weights.

    Raises ModelFolderError naming the first problem found, so a half-written or mismatched
    folder is refused before any weights are loaded.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"model folder {folder} does not exist")
    sidecar_path = folder / SIDECAR_NAME
    config_path = folder / "config.json"
    weights_path = folder / WEIGHTS_NAME
    for path, what in (
        (config_path, "config.json"),
        (sidecar_path, f"sidecar {SIDECAR_NAME}"),
        (weights_path, f"weights {WEIGHTS_NAME}"),
    ):
        if not path.is_file():
            raise ModelFolderError(f"model folder {folder} has no {what}")
    if not any((folder / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        raise ModelFolderError(f"model folder {folder} has no tokenizer files")
    try:
        raw = json.loads(sidecar_path.read_text(encoding="utf-8"))
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFolderError(f"model folder {folder}: unreadable JSON ({exc})") from exc
    _check_values(raw, sidecar_path)
    _check_values(config, config_path)
    if raw.get("format_version") != FORMAT_VERSION:
        raise ModelFolderError(
            f"{sidecar_path}: format_version {raw.get('format_version')!r} is not supported "
            f"(this saring reads {FORMAT_VERSION})"
        )
    sidecar = Sidecar.from_dict(raw)

    id2label = config.get("id2label")
    if not id2label:
        raise ModelFolderError(f"{config_path} has no id2label: the labels cannot be named")
    if not isinstance(id2label, dict) or sorted(id2label) != sorted(str(i) for i in range(len(id2label))):
        raise ModelFolderError(f"{config_path}: id2label must map '0'..'{len(id2label) - 1}' to label names")
    config_labels = [id2label[str(i)] for i in range(len(id2label))]
    if config_labels != sidecar.labels:
        raise ModelFolderError(
            f"{folder}: labels in config.json {config_labels} differ from {SIDECAR_NAME} {sidecar.labels}"
        )
    for score in SCORES:
        members = sidecar.scores.get(score)
        if not members:
            raise ModelFolderError(f"{sidecar_path}: score '{score}' names no labels")
        unknown = sorted(set(members) - set(sidecar.labels))
        if unknown:
            raise ModelFolderError(f"{sidecar_path}: score '{score}' uses unknown labels {unknown}")
    if not 0.0 <= sidecar.reject.value <= sidecar.accept.value <= 1.0:
        raise ModelFolderError(
            f"{sidecar_path}: thresholds must satisfy 0 <= reject <= accept <= 1 "
            f"(reject={sidecar.reject.value}, accept={sidecar.accept.value})"
        )
    for name, digest in sidecar.heads.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise ModelFolderError(f"model folder {folder} has no {name} (listed in {SIDECAR_NAME} heads)")
        if verify_weights and sha256_file(path) != digest:
            raise ModelFolderError(f"{path} does not match its checksum in {SIDECAR_NAME}: the folder was changed")
    if verify_weights and sidecar.weights_sha256:
        actual = sha256_file(weights_path)
        if actual != sidecar.weights_sha256:
            raise ModelFolderError(
                f"{weights_path} does not match the checksum in {SIDECAR_NAME}: "
                "the folder is half-written or was changed after training"
            )
    return sidecar
