"""Fine-tuning throughput on this CPU: samples/s for forward + backward + AdamW step.

Two random-init BERT encoders with a 4-way classification head (the shape `training train`
fine-tunes): the scratch "small" preset and a BERT-base-sized model (vocab 50000, 12 layers,
hidden 768, 12 heads, intermediate 3072). Messages are real Indonesian texts read by path from
the shared public data (SMS spam and city complaints, half each), tokenised by a WordPiece
vocabulary learnt from them, truncated to max_length and padded per batch as Trainer's
DataCollatorWithPadding does. Each model runs warm-up steps, then timed steps until --steps or
--seconds is reached. Results go to bench/results/train_throughput.json.

    .venv/bin/python bench/train_throughput.py              # about 3-4 minutes on 2 cores
    .venv/bin/python bench/train_throughput.py --seconds 20 # quicker, noisier
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import sys
import time
from pathlib import Path

from bench.report import write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402

from training.scratch import PRESETS, train_wordpiece  # noqa: E402

DATASETS = Path("/work/shared/datasets")
SOURCES = {
    "sms_spam_id": (DATASETS / "sms_spam_id" / "dataset_sms_spam_v1.csv", "Teks"),
    "city_complaints_sby": (DATASETS / "city_complaints_sby" / "complaints.csv", "text"),
}
MODELS = {
    "scratch-small": PRESETS["small"],  # (vocab, hidden, layers, heads, intermediate)
    "bert-base-size": (50000, 768, 12, 12, 3072),
}
NUM_LABELS = 4


def read_texts(per_source: int, seed: int) -> list[str]:
    """Up to `per_source` non-empty texts from each public file (read in place, never copied)."""
    rng = random.Random(seed)
    texts: list[str] = []
    for path, column in SOURCES.values():
        with path.open(encoding="utf-8", newline="") as fh:
            rows = [r[column].strip() for r in csv.DictReader(fh) if (r.get(column) or "").strip()]
        rng.shuffle(rows)
        texts += rows[:per_source]
    rng.shuffle(texts)
    return texts


def build_model(shape: tuple[int, int, int, int, int], max_length: int) -> BertForSequenceClassification:
    vocab, hidden, layers, heads, intermediate = shape
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max(512, max_length),
        num_labels=NUM_LABELS,
    )
    torch.manual_seed(0)
    return BertForSequenceClassification(config)


def batches(tokenizer, texts: list[str], batch_size: int, max_length: int, seed: int):
    """Endless shuffled batches, padded to their longest row like DataCollatorWithPadding."""
    rng = random.Random(seed)
    order = list(range(len(texts)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            chunk = [texts[i] for i in order[start : start + batch_size]]
            enc = tokenizer(chunk, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            enc["labels"] = torch.tensor([rng.randrange(NUM_LABELS) for _ in chunk])
            yield enc


def bench_model(name, shape, tokenizer, texts, args) -> dict:
    model = build_model(shape, args.max_length)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    stream = batches(tokenizer, texts, args.batch_size, args.max_length, args.seed)

    def step(batch) -> float:
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as Trainer does (max_grad_norm 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach().item()

    for _ in range(args.warmup):
        step(next(stream))
    times: list[float] = []
    padded_lengths: list[int] = []
    real_tokens = 0
    started = time.perf_counter()
    while len(times) < args.steps and (time.perf_counter() - started < args.seconds or len(times) < args.min_steps):
        batch = next(stream)
        t0 = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - t0)
        padded_lengths.append(int(batch["input_ids"].shape[1]))
        real_tokens += int(batch["attention_mask"].sum())
    total = sum(times)
    samples = len(times) * args.batch_size
    result = {
        "model": name,
        "shape": dict(zip(("vocab", "hidden", "layers", "heads", "intermediate"), shape, strict=True)),
        "parameters_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "timed_steps": len(times),
        "seconds_timed": round(total, 2),
        "samples_per_second": round(samples / total, 2),
        "real_tokens_per_second": round(real_tokens / total, 1),
        "seconds_per_step": {
            "mean": round(float(np.mean(times)), 3),
            "median": round(float(np.median(times)), 3),
            "min": round(float(np.min(times)), 3),
            "max": round(float(np.max(times)), 3),
        },
        "mean_padded_length": round(float(np.mean(padded_lengths)), 1),
        "minutes_per_epoch_of_3000_messages": round(3000 / (samples / total) / 60, 1),
    }
    print(
        f"{name:<15} {result['parameters_millions']:>6.1f}M params  {result['samples_per_second']:>8.2f} samples/s  "
        f"{result['seconds_per_step']['median']:.3f} s/step (median of {len(times)}, batch {args.batch_size}, "
        f"padded length {result['mean_padded_length']:.0f})",
        flush=True,
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch_size", type=int, default=32, help="per step (training's default per device)")
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40, help="most timed steps per model")
    parser.add_argument("--min_steps", type=int, default=3, help="fewest timed steps per model")
    parser.add_argument("--seconds", type=float, default=60.0, help="time budget per model for timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (allocator, threads)")
    parser.add_argument("--texts_per_source", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "train_throughput.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.time()
    load_before = os.getloadavg()
    texts = read_texts(args.texts_per_source, args.seed)
    tokenizer = train_wordpiece(texts, PRESETS["small"][0], args.max_length)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]]
    print(
        f"{len(texts)} texts, tokens per text (max {args.max_length}): mean {np.mean(lengths):.1f}, "
        f"median {np.median(lengths):.0f}, truncated {np.mean(np.array(lengths) >= args.max_length):.1%}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )
    results = [bench_model(name, MODELS[name], tokenizer, texts, args) for name in args.models]
    report = {
        "benchmark": "fine-tuning throughput (forward + backward + clip + AdamW step), random-init BERT, fp32 CPU",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": round(time.time() - started, 1),
        "environment": {
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            # Other processes on the machine slow this down; the load average says how busy it was.
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "data": {
            "sources": {name: str(path) for name, (path, _) in SOURCES.items()},
            "texts": len(texts),
            "tokenizer": f"WordPiece learnt from these texts, vocab {len(tokenizer)}",
            "tokens_per_text": {
                "mean": round(float(np.mean(lengths)), 1),
                "median": float(np.median(lengths)),
                "p90": float(np.percentile(lengths, 90)),
                "truncated_share": round(float(np.mean(np.array(lengths) >= args.max_length)), 3),
            },
        },
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "results": results,
    }
    write_results(report, args.output)
    print(f"wrote {args.output}")
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
