"""`python -m bench.http_cost`: what one HTTP call costs the server, in CPU, and where that CPU goes.

The figures come from the serving process itself, not from the client's clock, so the load client
sharing the same cores does not blur them:
  1. CPU seconds per call from /proc/<pid>/task/*/stat (utime + stime of every server thread), for
     single-message and 16-message calls at one concurrency: the event-loop thread (all HTTP work),
     the model thread (forward passes), the other threads, and the process as a whole;
  2. py-spy samples of the event-loop thread under the same load, split into the parts of a request
     (`bench/profile_split.py`) and scaled to that thread's CPU per call, so each part is given in
     milliseconds per call;
  3. in the same run, the in-process throughput of the same model, so HTTP/in-process ratios hold.
`--baseline-root DIR` also serves the same model from another checkout (say, the commit before a
change) and alternates short runs between the two servers, both up the whole time, so a busy
machine's drift falls on both alike. `--workers 2` (or `--compare-workers 2`, next to one) runs two
uvicorn worker processes, each with its own event loop and model copy, and sums the CPU over them.
Prints a table and writes bench/results/http_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from bench.__main__ import RESULTS, free_port, in_process, load, machine
from bench.proc_cpu import is_event_loop, server_cpu
from bench.profile_split import split
from bench.server import wait_ready
from bench.texts import ROOT, message_mix

SIZES = {"b1": 1, "b16": 16}


def forward_seconds(base: str) -> float:
    """Seconds of forward passes so far, from the server's /metrics."""
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith("saring_forward_duration_seconds_sum"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@dataclass
class Tally:
    """Sums over the runs of one server and one call size."""

    calls: int = 0
    seconds: float = 0.0
    loop: float = 0.0
    model: float = 0.0
    total: float = 0.0
    client: float = 0.0
    forward: float = 0.0
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

    def report(self, batch: int) -> dict:
        per_call = 1000 / self.calls if self.calls else float("nan")
        return {
            "calls": self.calls,
            "messages_per_s": self.calls * batch / self.seconds,
            "p50_ms": float(np.median(self.p50)),
            "p99_ms": float(np.median(self.p99)),
            "statuses": self.statuses,
            "server_cpu_ms_per_call": self.total * per_call,
            "event_loop_cpu_ms_per_call": self.loop * per_call,
            "model_thread_cpu_ms_per_call": self.model * per_call,
            "other_threads_cpu_ms_per_call": (self.total - self.loop - self.model) * per_call,
            "server_cpu_ms_per_call_excluding_model_thread": (self.total - self.model) * per_call,
            "forward_ms_per_call": self.forward * per_call,
            "server_cores_busy": self.total / self.seconds,
            "client_cpu_ms_per_call": self.client * per_call,
        }


class Server:
    """One serving process (`python -m service`, or uvicorn with workers) of a checkout."""

    def __init__(self, name: str, root: Path, model_dir: Path, backend: str, workers: int) -> None:
        self.name, self.root, self.workers = name, root, workers
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = dict(
            os.environ,
            SARING_MODEL_DIR=str(model_dir),
            SARING_PORT=str(port),
            SARING_BACKEND=backend,
            SARING_LOG_LEVEL="info",  # the access log line is part of the cost; stdout goes to /dev/null
            SARING_MAX_INFLIGHT_REQUESTS="256",
            SARING_REQUEST_TIMEOUT_S="60",
        )
        command = ["-m", "service"]
        if workers > 1:  # uvicorn's own multi-process mode: one app (and one model copy) per worker.
            # Under uvicorn's CLI saring's JSON logging is not configured: no access line (~0.04 ms a call).
            command = ["-m", "uvicorn", "--factory", "service.http.app:create_app", "--workers", str(workers)]
            command += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
        self.proc = subprocess.Popen([sys.executable, *command], env=env, stdout=subprocess.DEVNULL, cwd=root)
        self.tallies = {size: Tally() for size in SIZES}

    def wait_ready(self) -> None:
        wait_ready(self.proc, self.base, f"{self.name} server")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def measure(self, size: str, concurrency: int, requests: int) -> None:
        """One closed-loop run, with the server's CPU per thread and the load client's CPU around it."""
        single = self.workers == 1  # /metrics of one worker only, otherwise
        before, client_before = server_cpu(self.proc.pid), resource.getrusage(resource.RUSAGE_CHILDREN)
        fwd_before = forward_seconds(self.base) if single else 0.0
        run = load(
            f"{self.base}/v1/score", concurrency=concurrency, requests=requests, batch=SIZES[size], max_seconds=120
        )
        after, client_after = server_cpu(self.proc.pid), resource.getrusage(resource.RUSAGE_CHILDREN)
        delta = {k: after[k] - before.get(k, 0.0) for k in after}
        # Each process's main thread runs its event loop; its busiest other thread is its model thread
        # (tokenising big calls and flood hashing run on threads of their own).
        others: dict[str, list[float]] = {}
        for key, seconds in delta.items():
            if not is_event_loop(key):
                others.setdefault(key.split("/")[0], []).append(seconds)
        t = self.tallies[size]
        t.calls += run["statuses"].get("200", 0)
        t.seconds += run["seconds"]
        t.loop += sum(s for k, s in delta.items() if is_event_loop(k))
        t.model += sum(max(v) for v in others.values() if v)
        t.total += sum(delta.values())
        t.client += (client_after.ru_utime + client_after.ru_stime) - (client_before.ru_utime + client_before.ru_stime)
        t.forward += (forward_seconds(self.base) - fwd_before) if single else 0.0
        t.p50.append(run["p50_ms"])
        t.p99.append(run["p99_ms"])
        for status, n in run["statuses"].items():
            t.statuses[status] = t.statuses.get(status, 0) + n

    def profile(self, size: str, concurrency: int, requests: int) -> dict | None:
        """py-spy samples of the event-loop thread during one run: the share of each part of a call."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(spy).exists():
            print("py-spy not installed: no profile", flush=True)
            return None
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "samples.txt"
            command = [spy, "record", "--pid", str(self.proc.pid), "--rate", "400", "--format", "raw", "--threads"]
            recorder = subprocess.Popen([*command, "--full-filenames", "-o", str(raw)], stdout=subprocess.DEVNULL)
            time.sleep(1.0)  # attached
            url = f"{self.base}/v1/score"
            load(url, concurrency=concurrency, requests=requests, batch=SIZES[size], max_seconds=120)
            recorder.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
            recorder.wait(timeout=60)
            if not raw.exists():
                print("py-spy wrote no samples (it needs ptrace rights)", flush=True)
                return None
            text = raw.read_text(encoding="utf-8")
            shares, samples, top = split(text, self.proc.pid)
            other_shares, other_samples, other_top = split(text, self.proc.pid, others=True)
        return {
            "samples": samples,
            "parts_share": shares,
            "top_frames": top,
            # The model thread, tokenising of calls over 8 messages, the flood detector's thread.
            "other_threads": {"samples": other_samples, "parts_share": other_shares, "top_frames": other_top},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "default"))
    parser.add_argument("--backend", default="torch", help="torch or onnx")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=1500, help="single-message calls per server (a tenth for 16)")
    parser.add_argument("--rounds", type=int, default=None, help="runs per server and size (1; 3 with a baseline)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (each loads the model)")
    parser.add_argument("--baseline-root", default=None, help="another checkout to serve and compare, alternating")
    parser.add_argument("--compare-workers", type=int, default=None, help="compare with this checkout on N workers")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy runs")
    parser.add_argument("--no-in-process", action="store_true")
    parser.add_argument("--output", default=str(RESULTS / "http_cost.json"))
    args = parser.parse_args()

    from service.settings import Settings

    model_dir = Path(args.model).resolve()
    compared = args.baseline_root or args.compare_workers
    rounds = args.rounds or (3 if compared else 1)
    result: dict = {"machine": machine(), "model": str(model_dir), "backend": args.backend, "workers": args.workers}
    result["load_average_before"] = os.getloadavg()
    if not args.no_in_process:
        print("in-process ...", flush=True)
        result["in_process"] = in_process(model_dir, args.backend, Settings().threads(), message_mix(1024))
    servers = [Server("this", ROOT, model_dir, args.backend, args.workers)]
    if args.baseline_root:
        servers.append(Server("baseline", Path(args.baseline_root).resolve(), model_dir, args.backend, args.workers))
    if args.compare_workers:
        name = f"{args.compare_workers} workers"
        servers.append(Server(name, ROOT, model_dir, args.backend, args.compare_workers))
    try:
        for server in servers:
            server.wait_ready()
            load(f"{server.base}/v1/score", concurrency=8, requests=64, batch=1)  # warm connections and caches
        for r in range(rounds):
            for server in servers if r % 2 == 0 else servers[::-1]:
                print(f"round {r + 1}/{rounds}: {server.name} ...", flush=True)
                server.measure("b1", args.concurrency, args.requests // rounds)
                server.measure("b16", args.concurrency, max(32, args.requests // 10 // rounds))
        result["http"] = {s.name: {size: t.report(SIZES[size]) for size, t in s.tallies.items()} for s in servers}
        if args.workers == 1 and not args.no_profile:
            print("profiles ...", flush=True)
            profiles = {size: servers[0].profile(size, args.concurrency, args.requests // 2) for size in SIZES}
            result["profile"] = {k: v for k, v in profiles.items() if v}
    finally:
        for server in servers:
            server.stop()
    result["load_average_after"] = os.getloadavg()
    if "in_process" in result:
        ip = result["in_process"]["messages_per_s"]
        this = result["http"]["this"]
        result["ratios"] = {
            "b1_over_in_process": this["b1"]["messages_per_s"] / ip,
            "b16_over_in_process": this["b16"]["messages_per_s"] / ip,
            "b1_p99_over_p50": this["b1"]["p99_ms"] / this["b1"]["p50_ms"],
        }
    print_report(result)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"\nwrote {out}")


ROWS = [
    ("msg/s", "messages_per_s", "{:.1f}"),
    ("p50 ms", "p50_ms", "{:.1f}"),
    ("p99 ms", "p99_ms", "{:.1f}"),
    ("server CPU ms per call", "server_cpu_ms_per_call", "{:.3f}"),
    ("  event-loop thread", "event_loop_cpu_ms_per_call", "{:.3f}"),
    ("  model thread", "model_thread_cpu_ms_per_call", "{:.3f}"),
    ("  other threads", "other_threads_cpu_ms_per_call", "{:.3f}"),
    ("  all but the model thread", "server_cpu_ms_per_call_excluding_model_thread", "{:.3f}"),
    ("forward ms per call (/metrics)", "forward_ms_per_call", "{:.2f}"),
    ("server cores busy", "server_cores_busy", "{:.2f}"),
    ("load client CPU ms per call", "client_cpu_ms_per_call", "{:.3f}"),
]


def print_report(r: dict) -> None:
    before, after = r["load_average_before"][0], r["load_average_after"][0]
    print(f"\n== {r['model']} / {r['backend']} / workers {r['workers']} (load average {before:.2f} -> {after:.2f}) ==")
    if "in_process" in r:
        print(f"in-process {r['in_process']['messages_per_s']:.1f} msg/s")
    columns = [(name, size) for name in r["http"] for size in SIZES]
    print(f"{'':<34}" + "".join(f"{f'{name} {size}':>16}" for name, size in columns))
    for label, key, fmt in ROWS:
        print(f"{label:<34}" + "".join(f"{fmt.format(r['http'][name][size][key]):>16}" for name, size in columns))
    for name, size in columns:
        print(f"statuses {name} {size}: {r['http'][name][size]['statuses']}")
    for key, value in r.get("ratios", {}).items():
        print(f"ratio {key:<24} {value:.2f}")
    for size, p in r.get("profile", {}).items():
        loop_ms = r["http"]["this"][size]["event_loop_cpu_ms_per_call"]
        print(f"\nevent-loop thread, {size}: {loop_ms:.3f} ms CPU per call, {p['samples']} samples")
        for part, share in p["parts_share"].items():
            print(f"  {part:<48}{share * loop_ms:7.3f} ms {share:6.1%}")
        print("  innermost frames with the most samples (ms per call):")
        for frame, share in p["top_frames"][:12]:
            print(f"    {share * loop_ms:7.3f}  {frame[-110:]}")
        other = p.get("other_threads")
        if other and other["samples"]:
            cpu = r["http"]["this"][size]
            other_ms = cpu["model_thread_cpu_ms_per_call"] + cpu["other_threads_cpu_ms_per_call"]
            print(f"other threads, {size}: {other_ms:.3f} ms CPU per call, {other['samples']} samples")
            for part, share in other["parts_share"].items():
                print(f"  {part:<48}{share * other_ms:7.3f} ms {share:6.1%}")


if __name__ == "__main__":
    main()
