"""`python -m training score --engine ray`: the backlog scorer on Ray Data.

read_json / read_csv / read_parquet -> map_batches(RowNumbers), one actor that numbers rows in
order (and adds flood cluster sizes) -> map_batches(RayScorer), actors that each load the model
once and score through the same `BacklogScorer` as the local engine -> write_json / write_csv /
write_parquet into a folder, built under a staging name and renamed into place (training/atomic.py).

Ray Data keeps block order (`preserve_order`), so the output files, read in name order, hold the
rows in input order: the same rows the local engine writes. Without RAY_ADDRESS, Ray starts on this
machine with `--ray_num_cpus`; scoring actors must leave at least one CPU free, because read tasks
need one too and an actor pool that takes every CPU leaves the job waiting forever.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from training.atomic import atomic_folder
from training.score_batch import FLOOD_COLUMN, BacklogScorer, output_columns, text_problem
from training.score_input import check_columns, expand_inputs, input_format
from training.score_output import output_format, parquet_schema

logger = logging.getLogger("training.score")


def init_ray(args) -> None:
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()  # the cluster named by RAY_ADDRESS
        return
    cpus = args.ray_num_cpus or os.cpu_count() or 1
    reserved = args.ray_concurrency * args.ray_num_cpus_per_actor
    if reserved > cpus - 1:
        raise ValueError(
            f"{args.ray_concurrency} scoring actor(s) x {args.ray_num_cpus_per_actor:g} CPU leave no CPU of "
            f"{cpus} for read tasks: the job would wait forever. Lower --ray_concurrency or "
            "--ray_num_cpus_per_actor, or raise --ray_num_cpus"
        )
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)


def read_backlog(paths: list[Path], text_column: str, id_column: str | None):
    """One dataset of the text (and id) column of every input, in input order."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import ray.data

    columns = [c for c in (text_column, id_column) if c]
    parts = []
    for path in paths:  # one read per file keeps the files in the order given
        kind = input_format(path)
        if kind == "parquet":
            ds = ray.data.read_parquet(str(path), columns=columns)
        elif kind == "jsonl":
            ds = ray.data.read_json(str(path), lines=True, file_extensions=None).select_columns(columns)
        else:
            # Text, not numbers: an id like "007" stays "007", as the local engine reads it.
            ds = ray.data.read_csv(
                str(path),
                parse_options=pacsv.ParseOptions(delimiter="\t" if kind == "tsv" else ","),
                convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(columns, pa.string())),
                file_extensions=None,
            ).select_columns(columns)
        parts.append(ds)
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


class RowNumbers:
    """One actor that sees every block in order: the row number (the id without --id_column) and floods."""

    def __init__(self, id_column: str | None, flood_sizes: np.ndarray | None) -> None:
        self.id_column = id_column
        self.flood_sizes = flood_sizes
        self.next = 0

    def __call__(self, batch):
        import pyarrow as pa

        n = batch.num_rows
        numbers = np.arange(self.next, self.next + n, dtype=np.int64)
        if self.id_column is None:
            batch = batch.append_column("id", pa.array(numbers))
        else:
            batch = batch.rename_columns(["id" if c == self.id_column else c for c in batch.column_names])
        if self.flood_sizes is not None:
            sizes = self.flood_sizes[numbers]
            batch = batch.append_column(FLOOD_COLUMN, pa.array(sizes, mask=sizes < 0))
        self.next += n
        return batch


class RayScorer:
    """A scoring actor: the model is loaded once, in the constructor."""

    def __init__(self, scorer_kwargs: dict, text_column: str, floods: bool, fmt: str) -> None:
        self.scorer = BacklogScorer(**scorer_kwargs)
        self.text_column = text_column
        self.fmt = fmt
        self.columns = output_columns(floods)
        computed = [c for c in self.columns if c not in ("id", FLOOD_COLUMN)]
        self.schema = parquet_schema(computed, self.scorer.labels)

    def __call__(self, batch):
        import pyarrow as pa

        rows = self.scorer.score(batch.column(self.text_column).to_pylist())
        table = pa.Table.from_pylist(rows, schema=self.schema)
        if self.fmt == "csv":  # a CSV cell holds the probabilities as JSON, as the local engine writes them
            probabilities = [None if p is None else json.dumps(p) for p in table.column("probabilities").to_pylist()]
            index = table.column_names.index("probabilities")
            table = table.set_column(index, "probabilities", pa.array(probabilities, pa.string()))
        table = table.add_column(0, "id", batch.column("id"))
        if FLOOD_COLUMN in self.columns:
            table = table.add_column(self.columns.index(FLOOD_COLUMN), FLOOD_COLUMN, batch.column(FLOOD_COLUMN))
        return table


def flood_sizes(ds, text_column: str) -> np.ndarray:
    """Cluster sizes over the whole backlog (-1: no usable text), from one streamed pass on the driver."""
    from training.score_floods import BacklogFloods

    floods = BacklogFloods()
    for batch in ds.select_columns([text_column]).iter_batches(batch_format="pyarrow", batch_size=4096):
        texts = batch.column(text_column).to_pylist()
        floods.add([t if text_problem(t) is None else None for t in texts])
    return np.array([-1 if s is None else s for s in floods.cluster_sizes()], dtype=np.int64)


def score_ray(args):
    import ray.data

    from training.score import Summary, flood_figures, report_bad_row

    paths = expand_inputs(args.data)
    check_columns(paths, args.text_column, args.id_column)
    fmt = output_format(args.output)
    init_ray(args)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = args.progress
    started = time.perf_counter()
    ds = read_backlog(paths, args.text_column, args.id_column)
    sizes = flood_sizes(ds, args.text_column) if args.floods else None
    ds = ds.map_batches(
        RowNumbers,
        fn_constructor_kwargs={"id_column": args.id_column, "flood_sizes": sizes},
        batch_format="pyarrow",
        batch_size=None,
        concurrency=1,
        num_cpus=0,  # bookkeeping only: it must not take the CPU the read tasks need
    )
    scorer_kwargs = {
        "model_dir": str(Path(args.model).resolve()),
        "backend": args.backend,
        "device": args.device,
        "batch_size": args.batch_size,
        "max_batch_tokens": args.max_batch_tokens,
        "num_threads": args.num_threads or max(1, int(args.ray_num_cpus_per_actor)),
    }
    ds = ds.map_batches(
        RayScorer,
        fn_constructor_kwargs={
            "scorer_kwargs": scorer_kwargs,
            "text_column": args.text_column,
            "floods": args.floods,
            "fmt": fmt,
        },
        batch_format="pyarrow",
        batch_size=args.chunk_size,
        concurrency=args.ray_concurrency,
        num_cpus=args.ray_num_cpus_per_actor,
        num_gpus=args.ray_num_gpus,
    )
    with atomic_folder(args.output) as staging:
        if fmt == "jsonl":
            ds.write_json(str(staging), double_precision=15, force_ascii=False)
        elif fmt == "csv":
            ds.write_csv(str(staging))
        else:
            ds.write_parquet(str(staging))
    summary = Summary(seconds=time.perf_counter() - started)
    _summarise(summary, args.output, fmt, report_bad_row)
    summary.scored_now = summary.rows
    if sizes is not None:
        summary.flood_clusters = flood_figures([None if s < 0 else int(s) for s in sizes])
    return summary


def read_output_folder(folder: str | Path, fmt: str, columns: list[str] | None = None) -> list[dict]:
    """The rows of a Ray output folder, in input order (its files read in name order)."""
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")):
        if fmt == "parquet":
            table = pq.read_table(path, columns=columns)
        elif fmt == "csv":
            table = pacsv.read_csv(path)
        else:
            table = pajson.read_json(path)
        rows += table.select(columns).to_pylist() if columns else table.to_pylist()
    return rows


def _summarise(summary, output: str, fmt: str, report_bad_row) -> None:
    decisions, categories = Counter(), Counter()
    for row in read_output_folder(output, fmt, ["id", "decision", "category", "error"]):
        summary.rows += 1
        if row["error"]:
            summary.errors += 1
            report_bad_row(summary, f"id {row['id']}", row["error"])
        else:
            decisions[row["decision"]] += 1
            categories[row["category"]] += 1
    summary.decisions, summary.categories = decisions, categories
