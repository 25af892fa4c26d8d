"""`python -m bench`: throughput, latency and efficiency of saring on this machine, ratios from one run.

For each model (the default model, and a BERT-base-sized random model of IndoBERT's shape) and
each backend asked for, it measures:
  1. in-process throughput (messages/s) through the service's own batching, on a realistic length mix;
  2. HTTP throughput and p50/p99 latency of /v1/score at concurrency 1, 8 and 32, single-message and
     16-message calls, with load from a separate process on 127.0.0.1 (bounded request counts);
  3. the naive baseline: `transformers.pipeline` called once per message (bench/naive.py);
  4. this machine's GEMM peak in the precision used, and the forward pass's achieved FLOP/s at batch 32;
  5. padded/real token ratio with first-come batches versus length-sorted, token-budgeted ones;
  6. p99/p50 latency at half of the measured capacity (open loop).
It prints a table and writes bench/results/bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.naive import naive_pipeline
from bench.server import wait_ready
from bench.texts import ROOT, message_mix

RESULTS = ROOT / "bench" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gemm_peak(dtype_name: str, threads: int, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a large square matmul: the most this CPU does in this precision."""
    import torch

    torch.set_num_threads(threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - started)


def forward_flops(config, batch: int, seq: int) -> float:
    """Matmul FLOPs of a BERT encoder forward (projections, FFN, attention scores and mixing)."""
    h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    tokens = batch * seq
    per_layer = 2 * tokens * (4 * h * h + 2 * h * inter) + 2 * 2 * batch * seq * seq * h
    return layers * per_layer


def padding_ratio(lengths: list[int], batches: list[list[int]]) -> float:
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return padded / sum(lengths)


def in_process(model_dir: Path, backend_kind: str, threads: int, texts: list[str], dtype: str = "auto") -> dict:
    from service.model.batching import batch_tokens_for, length_sorted_batches
    from service.model.loading import load_backend, predict
    from service.settings import Settings

    settings = Settings()
    backend = load_backend(model_dir, kind=backend_kind, device="cpu", num_threads=threads, dtype=dtype)
    predict(backend, texts[:64])  # warm-up
    started = time.perf_counter()
    predict(backend, texts, max_batch_size=settings.max_batch_size, max_batch_tokens=settings.max_batch_tokens)
    elapsed = time.perf_counter() - started
    lengths = [len(ids) for ids in backend.encode(texts).ids]
    fifo = [list(range(i, min(i + 32, len(texts)))) for i in range(0, len(texts), 32)]
    budget = batch_tokens_for(backend.device, settings.max_batch_tokens)
    sorted_batches = list(length_sorted_batches(lengths, settings.max_batch_size, budget))
    result = {
        "messages_per_s": len(texts) / elapsed,
        "threads": threads,
        "padded_per_real_tokens_fifo": padding_ratio(lengths, fifo),
        "padded_per_real_tokens_sorted": padding_ratio(lengths, sorted_batches),
        "mean_tokens": float(np.mean(lengths)),
        "kind": backend.kind,  # what `auto` resolved to (onnx where the folder holds an accepted int8 export)
        "precision": backend.precision,  # what `dtype` resolved to (auto: bf16 where the folder's gate allows)
    }
    if backend.kind == "torch":
        # Achieved FLOP/s of one forward at batch 32 (a length-sorted batch from the middle of the mix).
        encoded = backend.encode(texts)
        batch = sorted(encoded.ids, key=len)[len(texts) // 2 : len(texts) // 2 + 32]
        backend.forward(batch)
        started = time.perf_counter()
        for _ in range(3):
            backend.forward(batch)
        seconds = (time.perf_counter() - started) / 3
        seq = max(len(ids) for ids in batch)
        config = getattr(backend.model, "config", None) or backend.model.encoder.config  # frozen-encoder folders
        result["forward_flops_per_s"] = forward_flops(config, len(batch), seq) / seconds
        result["forward_batch_seq"] = seq
    return result


def start_server(model_dir: Path, backend_kind: str, port: int, dtype: str = "auto") -> subprocess.Popen:
    env = dict(
        os.environ,
        SARING_MODEL_DIR=str(model_dir),
        SARING_PORT=str(port),
        SARING_BACKEND=backend_kind,
        SARING_DTYPE=dtype,
        SARING_LOG_LEVEL="warning",
        SARING_MAX_INFLIGHT_REQUESTS="256",
        SARING_REQUEST_TIMEOUT_S="60",
    )
    proc = subprocess.Popen([sys.executable, "-m", "service"], env=env, stdout=subprocess.DEVNULL, cwd=ROOT)
    wait_ready(proc, f"http://127.0.0.1:{port}")
    return proc


def load(url: str, **kwargs) -> dict:
    args = [sys.executable, "-m", "bench.load", "--url", url]
    for key, value in kwargs.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(args, check=True, capture_output=True, text=True, cwd=ROOT, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measured_load(pid: int, url: str, **kwargs) -> dict:
    """`load`, plus the server's own CPU per answered call: its event-loop thread and all its threads."""
    from bench.proc_cpu import is_event_loop, server_cpu

    before = server_cpu(pid)
    run = load(url, **kwargs)
    delta = {k: s - before.get(k, 0.0) for k, s in server_cpu(pid).items()}
    calls = max(1, run["statuses"].get("200", 0))
    run["server_cpu_ms_per_call"] = 1000 * sum(delta.values()) / calls
    run["event_loop_cpu_ms_per_call"] = 1000 * sum(s for k, s in delta.items() if is_event_loop(k)) / calls
    return run


def http_runs(model_dir: Path, backend_kind: str, quick: bool, dtype: str = "auto") -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/score"
    server = start_server(model_dir, backend_kind, port, dtype)
    runs: dict[str, dict] = {}
    try:
        load(url, concurrency=8, requests=32, batch=1)  # warm connections and caches
        for concurrency in (1, 8, 32):
            for batch in (1, 16):
                requests = (48 if batch == 1 else 8) * (1 if quick else 3) * max(1, concurrency // 4)
                runs[f"c{concurrency}_b{batch}"] = measured_load(
                    server.pid, url, concurrency=concurrency, requests=requests, batch=batch, max_seconds=60
                )
        capacity = max(runs[f"c{c}_b1"]["requests_per_s"] for c in (1, 8, 32))
        rate = capacity / 2
        runs["half_capacity"] = load(
            url, concurrency=64, requests=int(rate * (5 if quick else 10)), batch=1, rate=rate, max_seconds=60
        )
    finally:
        server.terminate()
        server.wait(timeout=60)
    return runs


def bench_model(
    name: str,
    model_dir: Path,
    backend_kind: str,
    threads: int,
    quick: bool,
    dtype: str = "auto",
    naive: dict | None = None,
) -> dict:
    """One model on one backend; `naive` (the per-message pipeline, measured once per model) gives the ratios."""
    texts = message_mix(256 if quick else 512)
    print(f"[{name}/{backend_kind}] in-process ...", flush=True)
    result: dict = {
        "model": name,
        "backend": backend_kind,
        "dtype": dtype,
        "in_process": in_process(model_dir, backend_kind, threads, texts, dtype),
    }
    if naive is not None:
        result["naive"] = naive
    if result["in_process"]["kind"] == "torch":
        # The peak of the precision the forward runs in: bf16 GEMMs peak several times higher on AMX.
        result["precision"] = result["in_process"]["precision"]
        result["gemm_peak_flops_per_s"] = gemm_peak(result["precision"], threads)
    print(f"[{name}/{backend_kind}] HTTP ...", flush=True)
    result["http"] = http_runs(model_dir, backend_kind, quick, dtype)
    ip = result["in_process"]["messages_per_s"]
    http32 = max(result["http"]["c32_b1"]["messages_per_s"], result["http"]["c32_b16"]["messages_per_s"])
    half = result["http"]["half_capacity"]
    result["ratios"] = {
        "http_c32_over_in_process": http32 / ip,
        "p99_over_p50_at_half_capacity": half["p99_ms"] / half["p50_ms"],
    }
    if "naive" in result:
        result["ratios"]["in_process_over_naive"] = ip / result["naive"]["messages_per_s"]
        result["ratios"]["http_c32_over_naive"] = http32 / result["naive"]["messages_per_s"]
    if "forward_flops_per_s" in result["in_process"]:
        result["ratios"]["forward_over_gemm_peak"] = (
            result["in_process"]["forward_flops_per_s"] / result["gemm_peak_flops_per_s"]
        )
    return result


def print_table(results: list[dict]) -> None:
    for r in results:
        ip = r["in_process"]
        print(f"\n== {r['model']} / {r['backend']}: {ip['kind']} / {ip['precision']} (threads {ip['threads']}) ==")
        print(f"in-process            {ip['messages_per_s']:8.1f} msg/s   mean {ip['mean_tokens']:.0f} tokens")
        print(
            f"padding (padded/real) first-come {ip['padded_per_real_tokens_fifo']:.2f} -> "
            f"sorted+budget {ip['padded_per_real_tokens_sorted']:.2f}"
        )
        if "naive" in r:
            print(f"naive pipeline        {r['naive']['messages_per_s']:8.1f} msg/s")
        if "gemm_peak_flops_per_s" in r:
            print(
                f"forward at batch 32   {ip['forward_flops_per_s'] / 1e9:8.1f} GFLOP/s of "
                f"{r['gemm_peak_flops_per_s'] / 1e9:.1f} {r['precision']} GEMM peak"
            )
        print(f"{'HTTP run':<16}{'msg/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/call':>13}{'loop ms':>9}  statuses")
        for key, run in r["http"].items():
            cpu = (
                f"{run['server_cpu_ms_per_call']:13.2f}{run['event_loop_cpu_ms_per_call']:9.2f}"
                if "server_cpu_ms_per_call" in run
                else " " * 22
            )
            print(
                f"{key:<16}{run['messages_per_s']:9.1f}{run['p50_ms']:9.1f}{run['p99_ms']:9.1f}{cpu}  {run['statuses']}"
            )
        for key, value in r["ratios"].items():
            print(f"ratio {key:<32} {value:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "default"))
    parser.add_argument("--bert-base", action="store_true", help="also bench a BERT-base-sized random model")
    parser.add_argument("--skip-default", action="store_true", help="only the BERT-base-sized model")
    parser.add_argument("--backends", default="auto", help="comma-separated: auto (as served), torch, onnx")
    parser.add_argument("--threads", type=int, default=None, help="model threads (default: the service's)")
    parser.add_argument("--dtype", default="auto", help="torch backend precision: auto, fp32, bf16 (naive stays fp32)")
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--output", default=str(RESULTS / "bench.json"))
    args = parser.parse_args()

    from service.settings import Settings

    threads = args.threads or Settings().threads()
    models: list[tuple[str, Path]] = []
    if not args.skip_default:
        models.append(("default", Path(args.model)))
    if args.bert_base:
        from bench.bert_base import build_bert_base_folder

        models.append(("bert-base-random", build_bert_base_folder(RESULTS / "bert-base-random", message_mix(4000))))
    results = []
    for name, folder in models:
        print(f"[{name}] naive pipeline ...", flush=True)
        naive = naive_pipeline(folder, threads, message_mix(256 if args.quick else 512)[: 48 if args.quick else 96])
        for kind in args.backends.split(","):
            results.append(bench_model(name, folder, kind, threads, args.quick, args.dtype, naive))
    print_table(results)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "results": results}, indent=2), encoding="utf-8")
    print(f"\nwrote {out}")


def machine() -> dict:
    import platform

    import torch

    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


if __name__ == "__main__":
    main()
