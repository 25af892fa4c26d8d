"""`python -m training score --engine ray`: the backlog scorer on Ray Data.

read_json / read_csv / read_parquet (all files in one read) -> map_batches(RayScorer): actors that
each load the model once and score through the same `BacklogScorer` as the local engine, with
`--ray_concurrency` actors and `--ray_num_gpus` GPUs each. Ray Data hands the scored blocks back in
input order (`preserve_order`); the driver numbers the rows, adds flood cluster sizes and writes the
one output file (JSONL, CSV or Parquet) atomically, exactly as the local engine does, so both engines
write the same file. (Ray's own write_* would scatter the rows over many files whose order is not
the input's, and numbering rows inside an actor proved wrong: actors do not see blocks in order.)

Without RAY_ADDRESS, Ray starts on this machine with `--ray_num_cpus`; scoring actors must leave at
least one CPU free, because read tasks need one too and an actor pool that takes every CPU leaves
the job waiting forever.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from training.score_batch import FLOOD_COLUMN, BacklogScorer, output_columns, text_problem
from training.score_input import BacklogInputError, check_columns, expand_inputs, input_format
from training.score_output import PartialOutput, ordered, output_format, parquet_schema

logger = logging.getLogger("training.score")


class RayResourceError(ValueError):
    """The Ray options would leave the job without a CPU for its read tasks."""


def init_ray(args) -> None:
    """Join the cluster named by RAY_ADDRESS, or start Ray on this machine with CPU left for reads."""
    import ray

    if os.environ.get("RAY_ADDRESS"):
        if not ray.is_initialized():
            ray.init()  # the cluster's nodes must have saring installed (pip install -e '.[ray]')
        return
    cpus = args.ray_num_cpus or (int(ray.cluster_resources().get("CPU", 0)) if ray.is_initialized() else None)
    cpus = cpus or os.cpu_count() or 1
    reserved = args.ray_concurrency * args.ray_num_cpus_per_actor
    if args.ray_num_gpus == 0 and reserved > cpus - 1:
        raise RayResourceError(
            f"{args.ray_concurrency} scoring actor(s) x {args.ray_num_cpus_per_actor:g} CPU leave no CPU of "
            f"{cpus} for read tasks: the job would wait forever. Lower --ray_concurrency or "
            "--ray_num_cpus_per_actor, or raise --ray_num_cpus"
        )
    if not ray.is_initialized():
        start_local_ray(cpus)


def start_local_ray(num_cpus: int) -> None:
    """Ray on this machine only; its workers import saring from this checkout."""
    import ray

    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )


def read_backlog(paths: list[Path], text_column: str, id_column: str | None):
    """One dataset of the text (and id) column of every input, in input order (one read of all files)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import ray.data

    kinds = sorted({input_format(path) for path in paths})
    if len(kinds) > 1:
        # Ray Data's union interleaves its inputs' blocks, so files of several formats would lose their order.
        raise BacklogInputError(
            f"the Ray engine reads one format per run, not {' and '.join(kinds)}: "
            "convert the files to one format or use the local engine"
        )
    kind, files = kinds[0], [str(path) for path in paths]
    columns = [c for c in (text_column, id_column) if c]
    if kind == "parquet":
        return ray.data.read_parquet(files, columns=columns, include_paths=True)
    if kind == "jsonl":
        ds = ray.data.read_json(files, lines=True, file_extensions=None, include_paths=True)
        return ds.select_columns([*columns, "path"])
    # Text, not numbers: an id like "007" stays "007", as the local engine reads it.
    return ray.data.read_csv(
        files,
        parse_options=pacsv.ParseOptions(delimiter="\t" if kind == "tsv" else ","),
        convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(columns, pa.string())),
        file_extensions=None,
        include_paths=True,
    ).select_columns([*columns, "path"])


class RayScorer:
    """A scoring actor: the model is loaded once, in the constructor; the id and path columns pass through."""

    def __init__(self, scorer_kwargs: dict, text_column: str, id_column: str | None) -> None:
        self.scorer = BacklogScorer(**scorer_kwargs)
        self.text_column = text_column
        self.id_column = id_column
        computed = [c for c in output_columns(floods=False) if c != "id"]
        self.schema = parquet_schema(computed, self.scorer.labels)

    def __call__(self, batch):
        import pyarrow as pa

        rows = self.scorer.score(batch.column(self.text_column).to_pylist())
        table = pa.Table.from_pylist(rows, schema=self.schema)
        if self.id_column is not None:
            table = table.add_column(0, "id", batch.column(self.id_column))
        return table.append_column("path", batch.column("path"))


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

    from service.model.folder import read_sidecar
    from training.score import Summary, flood_figures, report_bad_row

    paths = expand_inputs(args.data)
    check_columns(paths, args.text_column, args.id_column)
    output_format(args.output)
    labels = read_sidecar(args.model, verify_weights=False).labels
    init_ray(args)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the rows come back to the driver in input order
    context.enable_progress_bars = args.progress
    started = time.perf_counter()
    ds = read_backlog(paths, args.text_column, args.id_column)
    sizes = flood_sizes(ds, args.text_column) if args.floods else None
    scorer_kwargs = {
        "model_dir": str(Path(args.model).resolve()),
        "backend": args.backend,
        "device": args.device,
        "batch_size": args.batch_size,
        "max_batch_tokens": args.max_batch_tokens,
        "num_threads": args.num_threads or max(1, int(args.ray_num_cpus_per_actor)),
    }
    scored = ds.map_batches(
        RayScorer,
        fn_constructor_kwargs={
            "scorer_kwargs": scorer_kwargs,
            "text_column": args.text_column,
            "id_column": args.id_column,
        },
        batch_format="pyarrow",
        batch_size=args.chunk_size,
        concurrency=args.ray_concurrency,
        num_cpus=args.ray_num_cpus_per_actor,
        num_gpus=args.ray_num_gpus,
    )
    # Ray Data runs reads and actors in parallel but hands blocks back in order (preserve_order): the
    # driver numbers the rows and writes the one output file exactly as the local engine does.
    columns = output_columns(args.floods)
    partial = PartialOutput(Path(args.output), {"engine": "ray"})
    partial.start(resume=False)
    summary = Summary()
    position = 0
    per_file: Counter = Counter()
    try:
        for batch in scored.iter_batches(batch_format="pyarrow", batch_size=args.chunk_size):
            rows = batch.to_pylist()
            for offset, row in enumerate(rows):
                path = row.pop("path")
                per_file[path] += 1
                if args.id_column is None:
                    row["id"] = position + offset
                if row["error"]:
                    report_bad_row(summary, f"{_local_path(path)} row {per_file[path]}", row["error"])
            rows = [ordered(row, [c for c in columns if c != FLOOD_COLUMN]) for row in rows]
            partial.append(rows)
            summary.add(rows)
            position += len(rows)
    finally:
        partial.close()
    summary.scored_now = summary.rows
    summary.seconds = time.perf_counter() - started
    flood_list = None if sizes is None else [None if s < 0 else int(s) for s in sizes]
    if flood_list is not None:
        summary.flood_clusters = flood_figures(flood_list)
    partial.finish(columns, labels, flood_list)
    return summary


def _local_path(path: str) -> str:
    return path.removeprefix("local://")
