"""Throughput of the CPU inference paths on a BERT-base-sized classifier, through the service's code.

    .venv/bin/python bench/backends.py [--messages 384] [--threads 1] [--batch 32]

Builds a throwaway model folder (random-init BertForSequenceClassification: vocab 50000, 12 layers,
hidden 768, 12 heads, 4 labels; a WordPiece tokenizer trained on the texts), exports it with
training/export.py, and times TorchBackend (fp32, bf16, torch dynamic int8) and OnnxBackend (fp32,
int8) on real message texts read from ../shared/datasets (never copied into the repo).

Two batching modes per row, both batch <= --batch and <= the service's default padded-token budget:
- fifo: batches in arrival order, each padded to its longest message (the service under load);
- sorted: length-sorted batches via service.model.backend.predict (evaluate, offline scoring).
msg/s includes tokenisation. Wall-clock msg/s depends on what else the machine runs, so each mode
is also given per CPU-second of this process ("cpu"), which with one thread is close to what an
otherwise idle core would do; compare rows on it when the load average is above the core count.
The weights are random, so int8 rows say nothing about accuracy (the export command's F1 gate is
what guards that); "agree" is argmax agreement with torch fp32.

Prints a table and writes bench/results/backends.json. Takes about 3-5 minutes on 2 cores.
The random-init model and texts are built in a temporary folder and removed afterwards.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bert_base import build_bert_base_folder  # noqa: E402
from service.model.batching import batch_tokens_for  # noqa: E402
from service.model.loading import predict  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
if not DATASETS.is_dir():
    DATASETS = Path("/work/shared/datasets")
SOURCES = [
    (DATASETS / "sms_spam_id" / "dataset_sms_spam_v1.csv", "Teks"),
    (DATASETS / "city_complaints_sby" / "complaints.csv", "text"),
]
MAX_LENGTH = 128
MAX_BATCH_TOKENS = batch_tokens_for("cpu")  # the service's CPU default


def read_texts() -> list[str]:
    texts = []
    for path, column in SOURCES:
        with path.open(encoding="utf-8", newline="") as fh:
            texts += [row[column].strip() for row in csv.DictReader(fh) if (row.get(column) or "").strip()]
    return texts


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """Wall seconds, CPU seconds of this process, result."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def run_fifo(backend, texts: list[str], batch: int) -> None:
    ids = backend.encode(texts).ids
    i = 0
    while i < len(ids):
        rows = ids[i : i + batch]
        while len(rows) > 1 and max(map(len, rows)) * len(rows) > MAX_BATCH_TOKENS:
            rows = rows[:-1]
        backend.forward(rows)
        i += len(rows)


def measure(name: str, make: Callable[[], object], texts: list[str], args, reference: np.ndarray | None) -> dict:
    row: dict = {"backend": name}
    try:
        t0 = time.perf_counter()
        backend = make()
        row["load_s"] = round(time.perf_counter() - t0, 2)
        backend.forward(backend.encode(texts[: args.batch]).ids)  # warm-up: allocations, kernel choice
        fifo_s, fifo_cpu, _ = timed(lambda: run_fifo(backend, texts, args.batch))
        sorted_s, sorted_cpu, (probs, _) = timed(
            lambda: predict(backend, texts, max_batch_size=args.batch, max_batch_tokens=MAX_BATCH_TOKENS)
        )
    except Exception as exc:  # a path that does not work here is a finding, not a crash
        row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        print(f"{name:<24} failed: {row['error']}")
        return row
    n = len(texts)
    row["fifo_msg_s"], row["fifo_msg_cpu_s"] = round(n / fifo_s, 1), round(n / fifo_cpu, 1)
    row["sorted_msg_s"], row["sorted_msg_cpu_s"] = round(n / sorted_s, 1), round(n / sorted_cpu, 1)
    if reference is not None:
        row["agree"] = round(float((probs.argmax(1) == reference.argmax(1)).mean()), 4)
        row["max_abs_dp"] = float(np.abs(probs - reference).max())
    row["probs"] = probs
    print(
        f"{name:<20} fifo {row['fifo_msg_s']:6.1f} msg/s ({row['fifo_msg_cpu_s']:6.1f} per CPU-s)   "
        f"sorted {row['sorted_msg_s']:6.1f} msg/s ({row['sorted_msg_cpu_s']:6.1f} per CPU-s)",
        flush=True,
    )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=192, help="messages timed per row and mode")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (service default: cores - 1)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import logging
    import warnings

    import onnxruntime
    import torch
    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore")  # deprecation notes of torch.ao and the TorchScript exporter
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger().setLevel(logging.ERROR)

    from service.model.onnx_backend import OnnxBackend
    from service.model.torch_backend import TorchBackend
    from training.export import export_fp32, quantize_int8

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    all_texts = read_texts()
    texts = random.Random(args.seed).sample(all_texts, args.messages)
    results: dict = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_average_at_start": os.getloadavg(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "settings": {**vars(args), "max_length": MAX_LENGTH, "max_batch_tokens": MAX_BATCH_TOKENS},
    }

    with tempfile.TemporaryDirectory(prefix="saring-bench-") as tmp:
        folder = build_bert_base_folder(Path(tmp) / "bert-base", all_texts)
        t0 = time.perf_counter()
        export_fp32(folder, folder / "model.onnx")
        export_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        quantize_int8(folder / "model.onnx", folder / "model.int8.onnx")
        quantize_s = time.perf_counter() - t0
        sizes = {p.name: round(p.stat().st_size / 2**20, 1) for p in folder.glob("model*")}
        print(f"export {export_s:.0f}s, int8 quantisation {quantize_s:.0f}s; sizes (MiB): {sizes}")

        torch_fp32 = TorchBackend(folder, device="cpu", num_threads=args.threads, dtype="fp32")
        lengths = [len(ids) for ids in torch_fp32.encode(texts).ids]
        results["messages"] = {
            "n": len(texts),
            "tokens_mean": round(float(np.mean(lengths)), 1),
            "tokens_p50": int(np.percentile(lengths, 50)),
            "tokens_p95": int(np.percentile(lengths, 95)),
            "truncated_share": round(float(np.mean([n >= MAX_LENGTH for n in lengths])), 3),
        }
        results["export"] = {"export_s": round(export_s, 1), "quantize_s": round(quantize_s, 1), "size_mib": sizes}
        print(f"messages: {results['messages']}")

        def torch_bf16():
            backend = TorchBackend(folder, device="cpu", num_threads=args.threads, dtype="fp32")
            backend.model = backend.model.to(torch.bfloat16)
            return backend

        def torch_dynamic_int8():
            backend = TorchBackend(folder, device="cpu", num_threads=args.threads, dtype="fp32")
            backend.model = torch.ao.quantization.quantize_dynamic(backend.model, {torch.nn.Linear}, dtype=torch.qint8)
            return backend

        def onnx(name: str):
            return lambda: OnnxBackend(folder, num_threads=args.threads, onnx_path=folder / name)

        rows = [measure("torch fp32", lambda: torch_fp32, texts, args, None)]
        reference = rows[0].get("probs")
        rows += [
            measure("torch bf16", torch_bf16, texts, args, reference),
            measure("torch dynamic int8", torch_dynamic_int8, texts, args, reference),
            measure("onnxruntime fp32", onnx("model.onnx"), texts, args, reference),
            measure("onnxruntime int8", onnx("model.int8.onnx"), texts, args, reference),
        ]
    for row in rows:
        row.pop("probs", None)
    results["rows"] = rows
    results["total_s"] = round(time.perf_counter() - started, 1)
    results["machine"]["load_average_at_end"] = os.getloadavg()

    load = results["machine"]["load_average_at_start"][0]
    print(f"\nmsg/s, batch {args.batch}, {args.threads} thread(s), load average {load:.1f} on {os.cpu_count()} cores")
    head = f"{'backend':<20} {'fifo':>7} {'fifo/cpu':>9} {'sorted':>7} {'sorted/cpu':>10} {'agree':>6} {'max|dp|':>8}"
    print(head)
    for row in rows:
        if "error" in row:
            print(f"{row['backend']:<20} error: {row['error'][:80]}")
            continue
        agree = f"{row['agree']:.3f}" if "agree" in row else "ref"
        dp = f"{row['max_abs_dp']:.1e}" if "max_abs_dp" in row else ""
        print(
            f"{row['backend']:<20} {row['fifo_msg_s']:>7.1f} {row['fifo_msg_cpu_s']:>9.1f} "
            f"{row['sorted_msg_s']:>7.1f} {row['sorted_msg_cpu_s']:>10.1f} {agree:>6} {dp:>8}"
        )
    out = ROOT / "bench" / "results" / "backends.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\n{results['total_s']:.0f}s in all; wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
