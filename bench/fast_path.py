"""`python -m bench.fast_path --model DIR --data FILE...`: is a faster CPU path good enough to serve by default?

For one trained model folder (with `training export --int8` already run on it), each path the
service can take — torch fp32 (today's default), torch bf16, ONNX Runtime fp32 and int8 — scores
every labelled file given (JSONL with text and label, e.g. the real mixed set of
`training real-eval-set` and the written test split) through the service's own `predict`. It
reports macro-F1 per file, argmax agreement with torch fp32, and speed in messages per CPU-second
of this process with one model thread: on a shared machine the wall clock says more about the
neighbours than about the path. The gate is the export command's: macro-F1 may drop by at most
--max-f1-drop (1 point) on every file. Writes bench/results/fast_path.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.__main__ import RESULTS, machine
from bench.texts import message_mix

PATHS = {  # name: load_backend keywords
    "torch fp32": {"kind": "torch", "dtype": "fp32"},
    "torch bf16": {"kind": "torch", "dtype": "bf16"},
    "onnx fp32": {"kind": "onnx", "onnx_variant": "fp32"},
    "onnx int8": {"kind": "onnx", "onnx_variant": "int8"},
}


def macro_f1(truth: list[str], predicted: list[str], labels: list[str]) -> float:
    from sklearn.metrics import f1_score

    present = sorted(set(truth))  # a file without pranks is judged on the classes it has
    return float(f1_score(truth, predicted, labels=[lb for lb in labels if lb in present], average="macro"))


def cpu_rate(backend, texts: list[str], repeats: int = 2) -> float:
    """Messages per CPU-second of this process (one model thread), best of `repeats`."""
    from service.model.loading import predict

    predict(backend, texts[:64])  # warm-up
    best = 0.0
    for _ in range(repeats):
        started = time.process_time()
        predict(backend, texts)
        best = max(best, len(texts) / (time.process_time() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", nargs="+", required=True, help="labelled JSONL files (text, label)")
    parser.add_argument("--messages", type=int, default=1024, help="texts of the speed run")
    parser.add_argument("--max-f1-drop", type=float, default=0.01)
    parser.add_argument("--output", default=str(RESULTS / "fast_path.json"))
    args = parser.parse_args()

    import torch

    from service.model.loading import load_backend, predict

    torch.set_num_threads(1)
    files = {}
    for path in args.data:
        rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        files[Path(path).name] = ([r["text"] for r in rows], [r["label"] for r in rows])
    speed_texts = message_mix(args.messages)
    results: dict[str, dict] = {}
    reference: dict[str, np.ndarray] = {}
    for name, keywords in PATHS.items():
        try:
            backend = load_backend(args.model, device="cpu", num_threads=1, **keywords)
        except Exception as exc:  # e.g. no int8 export in the folder
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        labels = list(backend.sidecar.labels)
        entry: dict = {"messages_per_cpu_s": cpu_rate(backend, speed_texts)}
        for file, (texts, truth) in files.items():
            probs, _ = predict(backend, texts)
            best = probs.argmax(axis=1)
            entry[file] = {"macro_f1": macro_f1(truth, [labels[i] for i in best], labels)}
            if name == "torch fp32":
                reference[file] = best
            else:
                entry[file]["argmax_agreement"] = float((best == reference[file]).mean())
        results[name] = entry
        print(name, json.dumps(entry), flush=True)
    base = results["torch fp32"]
    for entry in results.values():
        if "error" in entry:
            continue
        entry["speed_over_torch_fp32"] = entry["messages_per_cpu_s"] / base["messages_per_cpu_s"]
        drops = {file: base[file]["macro_f1"] - entry[file]["macro_f1"] for file in files}
        entry["largest_f1_drop"] = max(drops.values())
        entry["passes_gate"] = entry["largest_f1_drop"] <= args.max_f1_drop
    print(f"\n{'path':<12}{'msg/CPU-s':>11}{'x fp32':>8}" + "".join(f"{f[:22]:>24}" for f in files) + "  gate")
    for name, entry in results.items():
        if "error" in entry:
            print(f"{name:<12} {entry['error']}")
            continue
        cells = []
        for file in files:
            agree = entry[file].get("argmax_agreement")
            cells.append(f"F1 {entry[file]['macro_f1']:.4f}" + (f" ({agree:.1%})" if agree is not None else ""))
        gate = "pass" if entry["passes_gate"] else "FAIL"
        print(f"{name:<12}{entry['messages_per_cpu_s']:11.1f}{entry['speed_over_torch_fp32']:8.2f}", end="")
        print("".join(f"{c:>24}" for c in cells) + f"  {gate}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "model": args.model, "paths": results}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
