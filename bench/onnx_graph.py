"""`python -m bench.onnx_graph [--model DIR]`: which ONNX graph and which batch budget are fastest on this CPU.

For one model folder, re-exports its classifier in each graph shape the export command could
produce and times the graph alone (ONNX Runtime session.run, one thread, inputs tokenised once) on
the bench message mix, batched as the service batches them (length-sorted, bounded by padded
tokens) under several token budgets:

- int8, SDPA trace, weights-only quantisation (the export before this bench existed);
- int8, eager-attention trace, weights-only quantisation (what `training export --int8` makes now);
- int8, eager trace, attention products (query x key, weights x value) quantised too;
- int8 after ONNX Runtime's BERT fusions (Attention, SkipLayerNorm, BiasGelu), when they apply;
- fp32, eager trace (the reference for the logit differences).

It says how each graph choice and `SARING_MAX_BATCH_TOKENS` were made, with the numbers; the F1
gate of the export command, not this bench, judges accuracy. Writes bench/results/onnx_graph.json;
about 3 minutes on 2 cores for e5-small.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.__main__ import RESULTS, machine
from bench.report import write_results
from bench.texts import ROOT, message_mix
from service.model.batching import length_sorted_batches, padded_tokens

BUDGETS = (256, 512, 1024, 4096)


def build_graphs(folder: Path, tmp: Path) -> dict[str, Path]:
    from training.export import export_fp32, quantize_int8

    fp32, sdpa = tmp / "eager.onnx", tmp / "sdpa.onnx"
    export_fp32(folder, fp32, attention="eager")
    export_fp32(folder, sdpa, attention="sdpa")
    graphs = {"fp32 eager": fp32}
    for name, src, const_b_only in (
        ("int8 sdpa, weights only", sdpa, True),
        ("int8 eager, weights only (export default)", fp32, True),
        ("int8 eager, attention products too", fp32, False),
    ):
        graphs[name] = tmp / f"{len(graphs)}.onnx"
        quantize_int8(src, graphs[name], const_b_only=const_b_only)
    fused = fused_graph(folder, fp32, tmp)
    if fused is not None:
        graphs["int8 after BERT fusions"] = fused
    return graphs


def fused_graph(folder: Path, fp32: Path, tmp: Path) -> Path | None:
    """ONNX Runtime's offline BERT optimiser, then int8; None when its patterns do not match this model."""
    from onnx import TensorProto
    from onnxruntime.transformers import optimizer
    from transformers import AutoConfig

    from training.export import quantize_int8

    config = AutoConfig.from_pretrained(folder)
    logging.disable(logging.WARNING)
    try:
        model = optimizer.optimize_model(
            str(fp32), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size
        )
    finally:
        logging.disable(logging.NOTSET)
    if not model.get_fused_operator_statistics().get("Attention"):
        return None
    model.save_model_to_file(str(tmp / "fused.onnx"))
    # Fused nodes are in ONNX Runtime's own domain, which the quantiser's shape inference cannot type.
    quantize_int8(tmp / "fused.onnx", tmp / "fused.int8.onnx", extra_options={"DefaultTensorType": TensorProto.FLOAT})
    return tmp / "fused.int8.onnx"


def measure(path: Path, feeds: dict[int, list[dict]], messages: int) -> tuple[dict[int, float], np.ndarray]:
    """One session per graph: messages/s over each budget's batches (best of two passes, after a warm-up),
    and the logits of the first budget's batches (for the difference from fp32)."""
    from service.model.onnx_backend import make_session

    session = make_session(path, num_threads=1)
    names = {i.name for i in session.get_inputs()}
    rates, outputs = {}, {}
    for budget, batches in feeds.items():
        runs = [{k: v for k, v in feed.items() if k in names} for feed in batches]
        outputs[budget] = np.concatenate([session.run(["logits"], feed)[0] for feed in runs])  # also the warm-up
        best = float("inf")
        for _ in range(2):
            started = time.perf_counter()
            for feed in runs:
                session.run(["logits"], feed)
            best = min(best, time.perf_counter() - started)
        rates[budget] = messages / best
    return rates, outputs[BUDGETS[0]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--messages", type=int, default=256)
    parser.add_argument("--output", type=Path, default=RESULTS / "onnx_graph.json")
    args = parser.parse_args(argv)

    from service.model.onnx_backend import OnnxBackend

    texts = message_mix(args.messages)
    with tempfile.TemporaryDirectory(prefix="saring-onnx-graph-") as tmp:
        print("exporting and quantising each graph ...", flush=True)
        graphs = build_graphs(args.model, Path(tmp))
        tokeniser = OnnxBackend(args.model, verify_weights=False, onnx_path=graphs["fp32 eager"], num_threads=1)
        ids = tokeniser.encode(texts).ids
        lengths = [len(i) for i in ids]
        feeds, padding = {}, {}
        for budget in BUDGETS:
            batches = list(length_sorted_batches(lengths, args.messages, budget))
            feeds[budget] = [tokeniser.inputs([ids[i] for i in batch]) for batch in batches]
            padding[budget] = sum(padded_tokens([lengths[i] for i in b]) for b in batches) / sum(lengths)
        rows, reference = {}, None
        for name, path in graphs.items():  # fp32 first: the reference
            print(f"timing {name} ...", flush=True)
            rates, out = measure(path, feeds, len(texts))
            reference = out if reference is None else reference
            difference = float(np.abs(out - reference).max())
            rows[name] = {
                "messages_per_s": {str(b): round(r, 1) for b, r in rates.items()},
                "max_abs_logit_diff_vs_fp32": difference,
            }

    print(f"\nmessages/s of the graph alone, 1 thread, {len(texts)} messages, mean {np.mean(lengths):.0f} tokens")
    print(f"{'graph':46s}" + "".join(f"{'budget ' + str(b):>13s}" for b in BUDGETS) + "   max |dlogit| vs fp32")
    for name, row in rows.items():
        cells = "".join(f"{row['messages_per_s'][str(b)]:13.1f}" for b in BUDGETS)
        print(f"{name:46s}{cells}   {row['max_abs_logit_diff_vs_fp32']:.3f}")
    print("padded/real tokens" + " " * 28 + "".join(f"{padding[b]:13.2f}" for b in BUDGETS))
    results = {"model": str(args.model), "machine": machine(), "messages": len(texts), "budgets": list(BUDGETS)}
    results |= {"padding_per_real_tokens": {str(b): padding[b] for b in BUDGETS}, "graphs": rows}
    write_results(results, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
