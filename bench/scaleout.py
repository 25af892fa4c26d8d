"""Scale-out figures, each a comparison made in one run on this machine.

`python -m bench.scaleout [--model DIR] [--requests 300] [--concurrency 8]` starts real servers on
127.0.0.1 only (redis-server, PostgreSQL, nginx from Debian's packages, saring replicas; the helpers
of tests/engine_fixtures.py and tests/service_fixtures.py) and measures:
  - throughput: one replica called directly, the same replica through nginx, and two replicas through
    nginx, the same closed-loop load (`bench.load` in its own process), rounds alternated;
  - flood detection in-process vs in Redis: messages/s and per-call latency (p50, p99) added to a
    score call, single-message and 32-message calls; Redis memory per tracked message;
  - the replica-kill burst: a bounded load through nginx while one of two replicas gets SIGTERM:
    requests sent, answered 2xx, lost.
Every loop is bounded in count and time. Without --model, a tiny model is trained once into
build/bench-tiny (the tests' scratch:tiny recipe). Writes bench/results/scaleout.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests", ROOT / "tests" / "fixtures"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from engine_fixtures import nginx_server, postgres_server, redis_server  # noqa: E402
from service_fixtures import running_server  # noqa: E402

from bench.flood import build_stream  # noqa: E402
from bench.report import write_results  # noqa: E402
from service.features.flood import FloodDetector  # noqa: E402
from service.features.flood_redis import RedisFloodDetector  # noqa: E402


def ensure_model(path: Path | None) -> Path:
    """The given folder, or a tiny scratch model trained once (about half a minute on one core)."""
    if path is not None:
        return path
    out = ROOT / "build" / "bench-tiny"
    if (out / "saring.json").exists():
        return out
    from make_messages import PLACES, make_messages, write_jsonl

    from training.train import main as train

    data = ROOT / "build" / "bench-tiny-data"
    data.mkdir(parents=True, exist_ok=True)
    train_file = write_jsonl(make_messages(40, places=PLACES[:14]), data / "train.jsonl")
    test_file = write_jsonl(make_messages(10, places=PLACES[14:]), data / "test.jsonl")
    train(
        ["--model_name_or_path", "scratch:tiny", "--train_file", str(train_file), "--test_file", str(test_file),
         "--output_dir", str(out), "--num_train_epochs", "15", "--learning_rate", "5e-3", "--use_cpu", "true",
         "--early_stopping_patience", "0", "--disable_tqdm", "true", "--save_strategy", "no",
         "--load_best_model_at_end", "false"]
    )  # fmt: skip
    return out


def load(url: str, requests: int, concurrency: int, max_seconds: float = 120) -> dict:
    """bench.load in its own process (the load generator never shares the servers' interpreter)."""
    args = [sys.executable, "-m", "bench.load", "--url", f"{url}/v1/score", "--requests", str(requests)]
    args += ["--concurrency", str(concurrency), "--max-seconds", str(max_seconds)]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=max_seconds + 60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def replica_env(**extra: str) -> dict[str, str]:
    return {"num_threads": "1", "drain_s": "1", "flood_window_s": "3600", **extra}


def throughput(model: Path, logs: Path, args: argparse.Namespace) -> dict:
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(redis_server())
        env = replica_env(flood_redis_url=redis.url)
        replicas = [stack.enter_context(running_server(model, logs, **env)) for _ in range(2)]
        one_nginx = stack.enter_context(nginx_server([replicas[0].port]))
        two_nginx = stack.enter_context(nginx_server([r.port for r in replicas]))
        targets = {
            "1_replica_direct": replicas[0].url,
            "1_replica_nginx": one_nginx.url,
            "2_replicas_nginx": two_nginx.url,
        }
        for url in targets.values():
            load(url, 40, args.concurrency)  # warm every path
        runs: dict[str, list[dict]] = {name: [] for name in targets}
        for _ in range(args.rounds):  # alternated, so every configuration sees the same neighbours
            for name, url in targets.items():
                runs[name].append(load(url, args.requests, args.concurrency))
    summary = {
        name: {
            "messages_per_s": statistics.median(r["messages_per_s"] for r in results),
            "p50_ms": statistics.median(r["p50_ms"] for r in results),
            "p99_ms": statistics.median(r["p99_ms"] for r in results),
            "statuses": [r["statuses"] for r in results],
        }
        for name, results in runs.items()
    }
    base = summary["1_replica_direct"]["messages_per_s"]
    for name in summary:
        summary[name]["ratio_to_1_replica_direct"] = summary[name]["messages_per_s"] / base
    return summary


def _timed(observe, calls: list[list[str]], now0: float) -> np.ndarray:
    spent = np.empty(len(calls))
    for i, texts in enumerate(calls):
        started = time.perf_counter()
        counts = observe(texts, now0 + i * 0.01)
        spent[i] = time.perf_counter() - started
        if counts is None:
            raise RuntimeError("Redis did not answer within the bench's timeout")
    return spent


def flood(args: argparse.Namespace) -> dict:
    texts, _ = build_stream(args.flood_messages, campaigns=10, copies=300, seed=11)
    out: dict = {"messages": len(texts)}
    with redis_server() as redis:
        detectors = {
            "in_process": FloodDetector(window_s=1e9, max_tracked=100_000),
            # A generous timeout: this measures what Redis costs, not an outage (the service's is 0.25 s).
            "redis": RedisFloodDetector(redis.url, window_s=1e9, max_tracked=100_000, timeout_s=10),
        }
        now0 = time.time()
        for size in (1, 32):
            calls = [texts[k : k + size] for k in range(0, len(texts), size)]
            half = len(calls) // 2
            timings = {name: [] for name in detectors}
            # Alternate halves so neither store gets the quieter moments of a shared machine.
            for part in (calls[:half], calls[half:]):
                for name, detector in detectors.items():
                    timings[name].append(_timed(lambda t, n, d=detector: d.observe(t, now=n), part, now0))
            for name, parts in timings.items():
                spent = np.concatenate(parts)
                out.setdefault(name, {})[f"{size}_per_call"] = {
                    "messages_per_s": len(texts) / spent.sum(),
                    "p50_ms_per_call": float(np.percentile(spent, 50) * 1000),
                    "p99_ms_per_call": float(np.percentile(spent, 99) * 1000),
                }
            # Fresh stores for the next call size.
            redis.client().flushall()
            detectors["in_process"] = FloodDetector(window_s=1e9, max_tracked=100_000)
        # Redis memory per tracked message: unique messages, one scope, nothing expired.
        client = redis.client()
        client.flushall()
        base = client.info("memory")["used_memory"]
        tracked = RedisFloodDetector(redis.url, window_s=1e9, max_tracked=100_000, timeout_s=10)
        unique, _ = build_stream(20_000, campaigns=0, copies=0, seed=12)
        for k in range(0, len(unique), 64):
            tracked.observe(unique[k : k + 64])
        used = client.info("memory")["used_memory"] - base
        out["redis_bytes_per_tracked_message"] = used / len(unique)
        out["redis_keys"] = client.dbsize()
        out["redis_tracked"] = client.zcard("saring:flood:shared:all")
    out["redis_over_in_process_p99_single"] = (
        out["redis"]["1_per_call"]["p99_ms_per_call"] / out["in_process"]["1_per_call"]["p99_ms_per_call"]
    )
    return out


def kill_burst(model: Path, logs: Path, args: argparse.Namespace) -> dict:
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(redis_server())
        pg = stack.enter_context(postgres_server())
        env = replica_env(flood_redis_url=redis.url, feedback_db_url=pg.url)
        replicas = [stack.enter_context(running_server(model, logs, **env)) for _ in range(2)]
        nginx = stack.enter_context(nginx_server([r.port for r in replicas]))
        load(nginx.url, 40, args.concurrency)
        cmd = [sys.executable, "-m", "bench.load", "--url", f"{nginx.url}/v1/score", "--requests", str(args.requests)]
        # Open loop over 4 s, so the burst spans the SIGTERM, the 1 s drain and the closed port after it.
        cmd += ["--concurrency", str(args.concurrency), "--rate", str(args.requests / 4), "--max-seconds", "120"]
        burst = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        time.sleep(args.kill_after_s)
        replicas[0].terminate()
        stdout, _ = burst.communicate(timeout=200)
        result = json.loads(stdout.strip().splitlines()[-1])
        exit_code = replicas[0].proc.wait(timeout=60)
    answered = sum(v for k, v in result["statuses"].items() if k.startswith("2"))
    return {
        "sent": result["requests"],
        "answered_2xx": answered,
        "lost": result["requests"] - answered,
        "statuses": result["statuses"],
        "seconds": result["seconds"],
        "sigterm_after_s": args.kill_after_s,
        "killed_replica_exit_code": exit_code,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flood-messages", type=int, default=6000)
    parser.add_argument("--kill-after-s", type=float, default=1.0)
    parser.add_argument("--only", choices=["throughput", "flood", "kill"], default=None)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "scaleout.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logs = ROOT / "build" / "bench-scaleout-logs"
    result: dict = {"load_average_at_start": os.getloadavg(), "cores": os.cpu_count()}
    if args.only in (None, "flood"):
        result["flood"] = flood(args)
    if args.only in (None, "throughput", "kill"):
        model = ensure_model(args.model)
        result["model"] = str(model)
        if args.only in (None, "throughput"):
            result["throughput"] = throughput(model, logs, args)
        if args.only in (None, "kill"):
            result["kill_burst"] = kill_burst(model, logs, args)
    result["load_average_at_end"] = os.getloadavg()
    write_results(result, args.output, show=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
