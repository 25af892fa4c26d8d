"""`python -m bench.score`: backlog scoring throughput and memory, ratios from one run.

Measures, on one model folder (default: models/default):
  1. `python -m training score` (local engine) msg/s on a synthetic backlog, and its peak RSS;
  2. /v1/score msg/s at its best concurrency (1, 8, 32; 16-message calls; load from another process);
  3. the naive pipeline: `transformers.pipeline` called once per message;
  4. `--engine ray` on a local Ray with 2 CPUs (one scoring actor, one CPU for reads): msg/s and the
     peak RSS of the whole process tree (driver, raylet, workers), against the local engine;
  5. a 100,000-row backlog end to end with the local engine: time, peak RSS, and RSS sampled as the
     rows go by (25 %, 50 %, 100 %): flat if the backlog is streamed, not loaded whole.

The backlog is built from the written test split (data/seed/test.jsonl) with variations: casing,
repeated letters, digits and links swapped, emoji, a few copy-paste campaigns and some blank rows.
It writes bench/results/score.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench.__main__ import free_port, load, start_server
from bench.naive import naive_pipeline
from bench.texts import ROOT

RESULTS = ROOT / "bench" / "results"
EMOJI = ["🙏", "😡", "👉", "🔥", "😂"]


def vary(text: str, rng: random.Random) -> str:
    """A message as another sender might type it: casing, stretched letters, numbers, links, emoji."""
    words = text.split()
    for _ in range(rng.randint(0, 3)):
        i = rng.randrange(len(words))
        choice = rng.random()
        if choice < 0.3:
            words[i] = words[i].upper()
        elif choice < 0.5 and words[i]:
            words[i] += words[i][-1] * rng.randint(1, 3)
        elif choice < 0.7:
            words.insert(i, str(rng.randint(1, 9999)))
        elif choice < 0.85:
            words.insert(i, rng.choice(EMOJI))
        else:
            words.insert(i, f"bit.ly/{rng.randint(10**5, 10**6)}")
    return " ".join(words)


def build_backlog(path: Path, rows: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    base = [json.loads(line)["text"] for line in (ROOT / "data/seed/test.jsonl").open(encoding="utf-8")]
    campaigns = rng.sample(base, 5)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(rows):
            r = rng.random()
            if r < 0.002:
                text = " "  # reported and written with an error field
            elif r < 0.05:
                text = vary(rng.choice(campaigns), rng)
            else:
                text = vary(rng.choice(base), rng)
            fh.write(json.dumps({"id": f"bl-{i:07d}", "text": text}, ensure_ascii=False) + "\n")
    return path


def run_score(argv: list[str], partial: Path | None = None, env: dict | None = None) -> dict:
    """Run `python -m training score`; peak RSS of its process tree and RSS samples against rows done."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "training", "score", *argv, "--progress", "false"],
        cwd=ROOT,
        env=env or os.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    root = psutil.Process(proc.pid)
    peak, samples = 0, []
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            rss = sum(p.memory_info().rss for p in tree if p.is_running())
        except psutil.Error:
            rss = 0
        peak = max(peak, rss)
        if partial is not None and partial.exists():
            samples.append({"rows_done": partial.read_bytes().count(b"\n"), "rss_mb": round(rss / 2**20, 1)})
        time.sleep(0.5)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"training score failed ({proc.returncode}): {out[-2000:]}")
    summary = json.loads(out.strip().splitlines()[-1])["summary"]
    return {
        "wall_s": round(time.perf_counter() - started, 1),
        "scoring_s": round(summary["seconds"], 1),
        "rows": summary["rows"],
        "errors": summary["errors"],
        "messages_per_s": summary["messages_per_second"],
        "peak_rss_mb": round(peak / 2**20, 1),
        "samples": samples,
    }


def rss_at(samples: list[dict], share: float, rows: int) -> float | None:
    wanted = share * rows
    for sample in samples:
        if sample["rows_done"] >= wanted:
            return sample["rss_mb"]
    return samples[-1]["rss_mb"] if samples else None


def best_http(model_dir: Path, quick: bool) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/score"
    server = start_server(model_dir, "torch", port)
    runs = {}
    try:
        load(url, concurrency=8, requests=16, batch=16)  # warm up
        for concurrency in (1, 8, 32):
            requests = (8 if quick else 24) * max(1, concurrency // 4)
            runs[f"c{concurrency}"] = load(url, concurrency=concurrency, requests=requests, batch=16, max_seconds=90)
    finally:
        server.terminate()
        server.wait(timeout=60)
    best = max(runs, key=lambda k: runs[k]["messages_per_s"])
    return {"runs": runs, "best": best, "messages_per_s": runs[best]["messages_per_s"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "default"))
    parser.add_argument("--rows", type=int, default=4000, help="rows of the throughput comparisons")
    parser.add_argument("--big_rows", type=int, default=100_000, help="rows of the end-to-end backlog")
    parser.add_argument("--naive_rows", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="model threads (OMP_NUM_THREADS) everywhere")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "score.json"))
    args = parser.parse_args(argv)
    model = Path(args.model)
    work = RESULTS / "score_work"
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    os.environ.update(OMP_NUM_THREADS=str(args.threads))
    small = build_backlog(work / "backlog_small.jsonl", args.rows, seed=1)
    common = ["--model", str(model), "--id_column", "id", "--num_threads", str(args.threads)]
    results: dict = {"model": str(model), "rows": args.rows, "threads": args.threads, "load_before": os.getloadavg()}

    results["local"] = run_score([*common, "--data", str(small), "--output", str(work / "local.jsonl")], env=env)
    results["ray_2cpu"] = run_score(
        [*common, "--data", str(small), "--output", str(work / "ray.jsonl"), "--engine", "ray", "--ray_num_cpus", "2"],
        env=env,
    )
    results["http"] = best_http(model, args.quick)
    texts = [json.loads(line)["text"] for line in small.open(encoding="utf-8")][: args.naive_rows]
    results["naive"] = naive_pipeline(model, args.threads, [t for t in texts if t.strip()])

    big = build_backlog(work / "backlog_big.jsonl", args.big_rows, seed=2)
    big_out = work / "big.jsonl"
    results["big"] = run_score(
        [*common, "--data", str(big), "--output", str(big_out), "--floods"],
        partial=work / f".{big_out.name}.partial.jsonl",
        env=env,
    )
    samples = results["big"].pop("samples")
    results["big"]["rss_mb_at"] = {f"{int(s * 100)}%": rss_at(samples, s, args.big_rows) for s in (0.25, 0.5, 1.0)}
    results["big"]["input_mb"] = round(big.stat().st_size / 2**20, 1)
    results["local"].pop("samples"), results["ray_2cpu"].pop("samples")
    local = results["local"]["messages_per_s"]
    results["ratios"] = {
        "local_vs_http_best": round(local / results["http"]["messages_per_s"], 2),
        "local_vs_naive": round(local / results["naive"]["messages_per_s"], 2),
        "ray_2cpu_vs_local": round(results["ray_2cpu"]["messages_per_s"] / local, 2),
        "ray_wall_vs_local_wall": round(results["ray_2cpu"]["wall_s"] / results["local"]["wall_s"], 2),
    }
    results["load_after"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"{'what':<34} {'msg/s':>8} {'wall s':>8} {'peak RSS MB':>12}")
    for name in ("local", "ray_2cpu", "big"):
        r = results[name]
        print(f"{name:<34} {r['messages_per_s']:>8} {r['wall_s']:>8} {r['peak_rss_mb']:>12}")
    print(
        f"{'/v1/score best (' + results['http']['best'] + ', 16/call)':<34} {results['http']['messages_per_s']:>8.1f}"
    )
    print(f"{'naive pipeline':<34} {results['naive']['messages_per_s']:>8.1f}")
    print("ratios:", results["ratios"])
    print("100k backlog RSS as rows go by:", results["big"]["rss_mb_at"])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
