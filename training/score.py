"""`python -m training score`: score a backlog (CSV, TSV, JSONL, Parquet; several files or a glob).

One output row per input row, in input order, with the input's id (or its row number), the scores,
decision and flags `/v1/score` answers for the same text, and the model's name and version. Rows
with no usable text are reported (file and line) and written with an `error` field. The local
engine streams the backlog through one model in fixed chunks (flat memory, resumable after a
crash); `--engine ray` runs the same scorer on Ray Data actors (training/score_ray.py).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

from transformers import HfArgumentParser

from training.arguments import BackendArguments
from training.score_batch import BacklogScorer, output_columns, text_problem
from training.score_input import BacklogInputError, InputRow, check_columns, count_rows, expand_inputs, iter_rows
from training.score_output import PartialOutput, ResumeError, ordered, output_format
from training.score_ray import RayResourceError

logger = logging.getLogger("training.score")
MAX_REPORTED = 100  # bad rows listed one by one; the rest are counted


@dataclass
class ScoreArguments(BackendArguments):  # --backend, --device, --batch_size: shared with evaluate and compare
    # Required, but given defaults because the shared fields before them have defaults (checked below).
    model: str = field(default="", metadata={"help": "Model folder to score with (the service's folder format)."})
    data: list[str] = field(
        default_factory=list,
        metadata={"help": "Backlog files: CSV, TSV, JSONL or Parquet; several files or glob patterns ('dump/*.csv')."},
    )
    output: str = field(
        default="",
        metadata={"help": "Where to write one file: its extension (.jsonl, .csv or .parquet) names the format."},
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the message text."})
    id_column: str | None = field(
        default=None, metadata={"help": "Column holding each message's id; without it, the row number (from 0)."}
    )
    engine: str = field(default="local", metadata={"help": "local (one process, resumable) or ray (Ray Data)."})
    max_batch_tokens: int | None = field(
        default=None, metadata={"help": "Most padded tokens per forward (default: 512 on CPU, 16384 on a GPU)."}
    )
    num_threads: int | None = field(default=None, metadata={"help": "Torch/ONNX threads per model (default: all)."})
    floods: bool = field(
        default=False,
        metadata={
            "help": "Add flood_cluster_size: how many rows of the whole backlog are near-duplicates of each row "
            "(itself included), with the service's MinHash/LSH normalisation."
        },
    )
    resume: bool = field(
        default=False, metadata={"help": "Local engine: keep the rows a crashed run already wrote and go on."}
    )
    chunk_size: int = field(
        default=2048, metadata={"help": "Local engine: rows scored and written at a time (the unit of --resume)."}
    )
    progress: bool = field(default=True, metadata={"help": "Show a progress bar with messages per second."})
    ray_concurrency: int = field(default=1, metadata={"help": "Ray: scoring actors (each loads the model once)."})
    ray_num_gpus: float = field(default=0.0, metadata={"help": "Ray: GPUs per scoring actor (e.g. 1)."})
    ray_num_cpus_per_actor: float = field(default=1.0, metadata={"help": "Ray: CPUs reserved per scoring actor."})
    ray_num_cpus: int | None = field(
        default=None,
        metadata={
            "help": "Ray without RAY_ADDRESS: CPUs of the local Ray instance (default: all). Actors must leave at "
            "least one CPU for read tasks, or the job waits for a CPU forever."
        },
    )

    def __post_init__(self) -> None:
        missing = [name for name in ("model", "data", "output") if not getattr(self, name)]
        if missing:
            raise ValueError("--" + ", --".join(missing) + " required")
        if isinstance(self.data, str):
            self.data = [self.data]
        if self.engine not in ("local", "ray"):
            raise ValueError(f"--engine must be local or ray, not {self.engine!r}")
        if self.engine == "ray" and self.resume:
            raise ValueError("--resume applies to the local engine; Ray retries failed tasks by itself")
        for name in ("batch_size", "max_batch_tokens", "chunk_size", "ray_concurrency"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1")
        output_format(self.output)


@dataclass
class Summary:
    rows: int = 0
    errors: int = 0
    decisions: Counter = field(default_factory=Counter)
    categories: Counter = field(default_factory=Counter)
    first_errors: list[str] = field(default_factory=list)
    scored_now: int = 0
    seconds: float = 0.0
    flood_clusters: dict[str, int] | None = None

    def add(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self.rows += 1
            if row.get("error"):
                self.errors += 1
            else:
                self.decisions[row["decision"]] += 1
                self.categories[row["category"]] += 1

    def as_dict(self) -> dict:
        out = asdict(self)
        out["decisions"], out["categories"] = dict(self.decisions), dict(self.categories)
        out["messages_per_second"] = round(self.scored_now / self.seconds, 1) if self.seconds else None
        return out

    def text(self, output: str) -> str:
        rate = f"{self.scored_now / self.seconds:,.0f} msg/s" if self.seconds else "-"
        lines = [
            f"scored {self.rows:,} rows into {output} ({self.scored_now:,} in this run, {self.seconds:.1f} s, {rate})",
            "decisions:  " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.decisions.items())),
            "categories: " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.categories.items())),
            f"not scored: {self.errors:,} rows (written with an error field)",
        ]
        if self.flood_clusters is not None:
            lines.append(
                f"floods: {self.flood_clusters['clusters']:,} near-duplicate clusters of 2 or more rows holding "
                f"{self.flood_clusters['rows']:,} rows; largest {self.flood_clusters['largest']:,}"
            )
        return "\n".join(lines)


def flood_figures(sizes: list[int | None]) -> dict[str, int]:
    """Clusters of two or more rows: how many, how many rows they hold, the largest."""
    clustered = [s for s in sizes if s and s > 1]
    return {
        "clusters": round(sum(1 / s for s in clustered)),
        "rows": len(clustered),
        "largest": max(clustered, default=1),
    }


def _chunks(rows: Iterator[InputRow], size: int) -> Iterator[list[InputRow]]:
    while chunk := list(islice(rows, size)):
        yield chunk


def _manifest(args: ScoreArguments, paths: list[Path], model_version: str) -> dict:
    """What makes two runs the same run: a partial output is only resumed by an identical one."""
    return {
        "inputs": [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in paths],
        "text_column": args.text_column,
        "id_column": args.id_column,
        "model_version": model_version,
        "backend": args.backend,
        "chunk_size": args.chunk_size,
        "batch_size": args.batch_size,
        "max_batch_tokens": args.max_batch_tokens,
    }


def report_bad_row(summary: Summary, where: str, error: str) -> None:
    if len(summary.first_errors) < MAX_REPORTED:
        summary.first_errors.append(f"{where}: {error}")
        logger.warning("%s: %s (written with an error field)", where, error)


def score_local(args: ScoreArguments) -> Summary:
    paths = expand_inputs(args.data)
    check_columns(paths, args.text_column, args.id_column)
    scorer = BacklogScorer(
        args.model, args.backend, args.device, args.batch_size, args.max_batch_tokens, num_threads=args.num_threads
    )
    columns = output_columns(args.floods)
    output = Path(args.output)
    partial = PartialOutput(output, _manifest(args, paths, scorer.model_version))
    done = partial.start(resume=args.resume)
    summary = Summary()
    if done:
        summary.add(partial.rows())
        logger.info("resuming: %d rows already in %s", done, partial.rows_path)
    from training.score_floods import BacklogFloods

    floods = BacklogFloods() if args.floods else None
    bar = None
    if args.progress:
        from tqdm import tqdm

        bar = tqdm(total=count_rows(paths), initial=done, unit="msg", desc="scoring", smoothing=0.1)
    started = time.perf_counter()
    position = 0
    try:
        for chunk in _chunks(iter_rows(paths, args.text_column, args.id_column), args.chunk_size):
            problems = [row.problem or text_problem(row.text) for row in chunk]
            if floods is not None:
                usable = [row.text if problem is None else None for row, problem in zip(chunk, problems, strict=True)]
                floods.add(usable)
            if position + len(chunk) <= done:  # already in the partial output (whole chunks only)
                position += len(chunk)
                continue
            scored = scorer.score([row.text for row in chunk], problems)
            out = []
            for offset, (row, result) in enumerate(zip(chunk, scored, strict=True)):
                result["id"] = row.id if args.id_column else position + offset
                if result["error"]:
                    report_bad_row(summary, row.where, result["error"])
                out.append(ordered(result, [c for c in columns if c != "flood_cluster_size"]))
            partial.append(out)
            summary.add(out)
            summary.scored_now += len(out)
            position += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
        partial.close()
    summary.seconds = time.perf_counter() - started
    sizes = floods.cluster_sizes() if floods is not None else None
    if sizes is not None:
        summary.flood_clusters = flood_figures(sizes)
    partial.finish(columns, scorer.labels, sizes)
    return summary


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        (args,) = HfArgumentParser(ScoreArguments).parse_args_into_dataclasses(args=argv)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.engine == "ray":
            from training.score_ray import score_ray

            summary = score_ray(args)
        else:
            summary = score_local(args)
    except (BacklogInputError, ResumeError, RayResourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary.text(args.output))
    if summary.errors > len(summary.first_errors):
        print(f"(the first {len(summary.first_errors)} bad rows are listed above)")
    print(json.dumps({"summary": summary.as_dict()}, ensure_ascii=False))
    return 0
