"""Plain scoring latency with and without explanations running: do explanations starve scoring?

`python -m bench.explain_load [--layers 6 --hidden 384] [--seconds 15] [--rounds 3]` builds (once) a
random BERT folder of the given shape under build/bench/, starts `python -m service` on it with the
default request timeout, and measures in one run, `rounds` times in turn:
  1. plain single-message /v1/score latency (p50/p99) at a small concurrency, alone;
  2. the same plain load while `explain_max_inflight` (2) clients send explain=true calls of 16
     messages back to back, each from its own process;
  3. the explain calls' statuses and their slowest answer, against the request timeout.
Alternating the two phases keeps a shared machine's changing load from landing on one of them; the
ratios are per round, and their median is the figure. It prints one JSON object and writes
bench/results/explain_load.json. p99(with explain) / p99(alone) says how much an explanation delays
a plain score.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.__main__ import RESULTS, free_port, machine
from bench.bert_base import build_bert_base_folder
from bench.server import wait_ready
from bench.texts import ROOT, message_mix


def start_server(
    model_dir: Path, port: int, timeout_s: float, threads: int | None, explain_batch_tokens: int | None
) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SARING_")}
    env.update(
        SARING_MODEL_DIR=str(model_dir),
        SARING_PORT=str(port),
        SARING_DEVICE="cpu",
        SARING_LOG_LEVEL="warning",
        SARING_REQUEST_TIMEOUT_S=str(timeout_s),
        SARING_FLOOD_DETECTION="false",
        SARING_FEEDBACK_DB_PATH=f"/tmp/saring-bench-feedback-{port}.sqlite3",
    )
    if threads:
        env["SARING_NUM_THREADS"] = str(threads)
    if explain_batch_tokens:
        env["SARING_EXPLAIN_BATCH_TOKENS"] = str(explain_batch_tokens)
    proc = subprocess.Popen([sys.executable, "-m", "service"], env=env, stdout=subprocess.DEVNULL, cwd=ROOT)
    wait_ready(proc, f"http://127.0.0.1:{port}")
    return proc


def load_process(url: str, **kwargs) -> subprocess.Popen:
    args = [sys.executable, "-m", "bench.load", "--url", url]
    for key, value in kwargs.items():
        if value is True:
            args.append(f"--{key.replace('_', '-')}")
        else:
            args += [f"--{key.replace('_', '-')}", str(value)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT)


def result_of(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=900)
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--seconds", type=float, default=15, help="length of each plain-load phase")
    parser.add_argument("--rounds", type=int, default=3, help="alone / with-explain phase pairs")
    parser.add_argument("--concurrency", type=int, default=4, help="plain-score clients")
    parser.add_argument("--timeout", type=float, default=10.0, help="SARING_REQUEST_TIMEOUT_S")
    parser.add_argument("--threads", type=int, default=None, help="SARING_NUM_THREADS (default: the service's)")
    parser.add_argument(
        "--explain-batch-tokens", type=int, default=None, help="SARING_EXPLAIN_BATCH_TOKENS (default: the service's)"
    )
    parser.add_argument("--output", default=str(RESULTS / "explain_load.json"))
    args = parser.parse_args()

    folder = ROOT / "build" / "bench" / f"bert-{args.layers}x{args.hidden}"
    build_bert_base_folder(folder, message_mix(2048), vocab_size=30_000, layers=args.layers, hidden=args.hidden)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/score"
    server = start_server(folder, port, args.timeout, args.threads, args.explain_batch_tokens)
    plain = dict(concurrency=args.concurrency, requests=100_000, batch=1, max_seconds=args.seconds)
    rounds = []
    explained: list[dict] = []
    try:
        result_of(load_process(url, concurrency=4, requests=64, batch=1))  # warm connections and caches
        for r in range(args.rounds):
            alone = result_of(load_process(url, **plain, seed=100 + r))
            explainers = [
                load_process(
                    url,
                    concurrency=1,
                    requests=10_000,
                    batch=16,
                    explain=True,
                    seed=10 * r + i + 1,
                    max_seconds=args.seconds + 1,
                )  # fmt: skip
                for i in range(2)
            ]
            time.sleep(1.0)  # let the explanations start before the plain clients do
            with_explain = result_of(load_process(url, **plain, seed=200 + r))
            explained += [result_of(p) for p in explainers]
            rounds.append(
                {
                    "alone_p50_ms": alone["p50_ms"],
                    "alone_p99_ms": alone["p99_ms"],
                    "with_explain_p50_ms": with_explain["p50_ms"],
                    "with_explain_p99_ms": with_explain["p99_ms"],
                    "calls_alone_with": [alone["requests"], with_explain["requests"]],
                    "p50_ratio": with_explain["p50_ms"] / alone["p50_ms"],
                    "p99_ratio": with_explain["p99_ms"] / alone["p99_ms"],
                    "load_average": os.getloadavg()[0],
                }
            )
    finally:
        server.terminate()
        server.wait(timeout=60)
    statuses: dict[str, int] = {}
    for run in explained:
        for status, count in run["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    result = {
        "model": f"random BERT {args.layers} layers x {args.hidden}",
        "request_timeout_s": args.timeout,
        "explain_batch_tokens": args.explain_batch_tokens or "default",
        "rounds": rounds,
        "median_p50_ratio": statistics.median(r["p50_ratio"] for r in rounds),
        "median_p99_ratio": statistics.median(r["p99_ratio"] for r in rounds),
        "median_with_explain_p99_ms": statistics.median(r["with_explain_p99_ms"] for r in rounds),
        "explain_statuses": statuses,
        "explain_max_ms": max(run["max_ms"] or 0 for run in explained),
        "machine": machine(),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
