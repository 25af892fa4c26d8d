"""The naive baseline: the same model folder scored one message per call with `transformers.pipeline`.

A sequence-classification folder is one `pipeline("text-classification")` call per message. A
frozen-encoder folder (service/model/heads.py) has no classification head `pipeline` knows, so its
naive form is what a user would write from the folder's files: `pipeline("feature-extraction")` on
the encoder per message, the mean of its token states, L2-normalised, through `heads.safetensors`,
mixed with the TF-IDF head's answer for that one message. A head that reads several layers needs
hidden states the pipeline does not return, so there the per-message call is the tokenizer and
`AutoModel(..., output_hidden_states=True)`, as the model card shows (no batching either way). Both
run in fp32, as `pipeline` does.
Each result says how far the naive answers are from the service's own (`predict`), so a ratio is
never taken against a different model.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

# Largest difference from the service's fp32 answers at which the naive path counts as the same model.
MAX_DIFFERENCE = 1e-3


def _frozen_scorer(model_dir: Path):
    import torch
    from safetensors.numpy import load_file
    from transformers import pipeline

    from service.model.encoding import softmax64
    from service.model.folder import read_sidecar
    from service.model.heads import HEADS_FILE, POOLED_LAYERS, pooled_layers
    from service.model.text_head import TfidfHead

    sidecar = read_sidecar(model_dir)
    extractor = pipeline("feature-extraction", model=str(model_dir), device="cpu")
    depth = extractor.model.config.num_hidden_layers
    layers = pooled_layers(sidecar.heads.get(POOLED_LAYERS), depth)
    head = load_file(str(model_dir / HEADS_FILE))
    weight, bias = head["weight"].astype(np.float64), head["bias"].astype(np.float64)
    text_head = TfidfHead(model_dir) if sidecar.heads.get("text_head") else None
    text_weight = float(sidecar.heads.get("text_head", {}).get("weight", 0.0))
    # max_length only through tokenize_kwargs: the pipeline drops it silently as a plain keyword.
    tokenize = {"truncation": True, "max_length": sidecar.max_length}

    def token_states(text: str) -> list[np.ndarray]:
        if layers == [depth]:
            return [np.asarray(extractor(sidecar.text_prefix + text, tokenize_kwargs=tokenize)[0], dtype=np.float64)]
        inputs = extractor.tokenizer(sidecar.text_prefix + text, return_tensors="pt", **tokenize)
        with torch.inference_mode():
            hidden = extractor.model(**inputs, output_hidden_states=True).hidden_states
        return [hidden[layer][0].double().numpy() for layer in layers]

    def score(text: str) -> np.ndarray:
        pooled = [states.mean(axis=0) for states in token_states(text)]
        features = np.concatenate([p / np.linalg.norm(p) for p in pooled])
        probs = softmax64((features @ weight.T + bias)[None, :])[0]
        if text_head is not None:
            probs = (1 - text_weight) * probs + text_weight * text_head.probabilities([text])[0]
        return probs

    return score


def _classifier_scorer(model_dir: Path):
    from transformers import pipeline

    from service.model.folder import read_sidecar

    sidecar = read_sidecar(model_dir)
    classifier = pipeline("text-classification", model=str(model_dir), top_k=None, device="cpu")

    def score(text: str) -> np.ndarray:
        answer = {d["label"]: d["score"] for d in classifier(text, truncation=True, max_length=sidecar.max_length)}
        return np.array([answer[label] for label in sidecar.labels])

    return score


def naive_pipeline(model_dir: Path, threads: int, texts: list[str]) -> dict:
    """Messages per second of the per-message pipeline, and its largest difference from the service's answer."""
    import torch

    from service.model.folder import read_sidecar
    from service.model.loading import load_backend, predict

    torch.set_num_threads(threads)
    model_dir = Path(model_dir)
    score = _frozen_scorer(model_dir) if read_sidecar(model_dir).heads else _classifier_scorer(model_dir)
    score(texts[0])  # warm-up
    started = time.perf_counter()
    naive = np.stack([score(text) for text in texts])
    elapsed = time.perf_counter() - started
    served, _ = predict(load_backend(model_dir, kind="torch", device="cpu", num_threads=threads, dtype="fp32"), texts)
    difference = float(np.abs(naive - served).max())
    if difference > MAX_DIFFERENCE:
        raise RuntimeError(f"the naive pipeline is not the served model: probabilities differ by {difference:.2e}")
    return {"messages_per_s": len(texts) / elapsed, "threads": threads, "max_abs_diff_vs_service_fp32": difference}
