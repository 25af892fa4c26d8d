"""The real judges of a built model folder, scored as the service scores (its own backend, its precision).

    python -m bench.judge --model models/default [--datasets ../shared/datasets] [--backend auto] [--dtype auto]

`bench.transfer` chooses a recipe from candidates; this measures the folder that recipe built, with
its own thresholds, on the sets it never chose anything on: the independent writers, the seed's
test split, real mixed (900 public messages), 2,000 real city complaints (share called `aduan`, and
the share per decision band: accept, review, reject) and the 1,143 real SMS (normal vs fraud/promo;
a predicted prank counts as spam). Results go to bench/results/judge.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.report import write_results
from bench.texts import ROOT
from bench.transfer import macro_f1, real_sets
from service.model.loading import load_backend, predict
from service.model.scoring import decide, decision_counts, score_columns
from training.writers import load_independent, read_jsonl


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--dtype", default="auto", help="as SARING_DTYPE: auto (what the service serves), fp32, bf16")
    parser.add_argument("--backend", default="auto", help="as SARING_BACKEND: auto (as served), torch, onnx")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "judge.json")
    args = parser.parse_args(argv)

    backend = load_backend(args.model, kind=args.backend, device="cpu", num_threads=args.threads, dtype=args.dtype)
    sidecar = backend.sidecar
    real = real_sets(args.datasets)
    sets = {
        "independent": load_independent(),
        "seed_test": read_jsonl(ROOT / "data" / "seed" / "test.jsonl"),
        "real_mixed": real["real_mixed"],
        "city": real["city"],
        "sms": real["sms"],
    }
    results: dict = {"model": str(args.model), "version": sidecar.version, "backend": backend.kind}
    results["precision"] = backend.precision
    started = time.perf_counter()
    for name, rows in sets.items():
        probs, _ = predict(backend, [r["text"] for r in rows])
        aduan = np.array([r["label"] == "aduan" for r in rows])
        validity = score_columns(probs, sidecar.labels, sidecar.scores)["validity"]
        bands = decision_counts(decide(validity, sidecar.accept.value, sidecar.reject.value))
        rejected = float((validity[aduan] <= sidecar.reject.value).mean()) if aduan.any() else None
        figures = {
            "rows": len(rows),
            "decisions": {band: round(count / len(rows), 4) for band, count in bands.items()},
            "aduan_rejected": None if rejected is None else round(rejected, 4),
        }
        if name == "city":  # every row is a complaint: how many the model calls one
            figures["called_aduan"] = round(float((probs.argmax(axis=1) == sidecar.labels.index("aduan")).mean()), 4)
        else:
            figures["macro_f1"] = round(macro_f1(rows, probs, spam_for_iseng=name in ("real_mixed", "sms")), 4)
        results[name] = figures
        print(f"{name:<12} {figures}", flush=True)
    results["seconds"] = round(time.perf_counter() - started, 1)
    write_results(results, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
