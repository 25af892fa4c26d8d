"""`python -m training score --engine ray`: Ray Data writes the rows the local engine writes.

One local Ray instance for the module (2 CPUs, as on the test machine: one scoring actor, one CPU
left for read tasks); it takes seconds to start, so every test here shares it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
from make_messages import make_messages
from training_fixtures import read_jsonl

from training.score import main as score_main
from training.score_ray import start_local_ray

FLOAT_TOLERANCE = 1e-6  # forwards batch rows differently per engine; the numbers agree far below 1e-4


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    start_local_ray(num_cpus=2)
    yield
    ray.shutdown()


def run(*argv: str) -> int:
    return score_main([*argv, "--progress", "false"])


def assert_same_rows(ray_rows: list[dict], local_rows: list[dict]) -> None:
    assert len(ray_rows) == len(local_rows)
    for got, want in zip(ray_rows, local_rows, strict=True):
        assert list(got) == list(want)
        for name, value in want.items():
            if isinstance(value, (float, dict)):
                assert got[name] == pytest.approx(value, abs=FLOAT_TOLERANCE), name
            else:
                assert got[name] == value, (name, got, want)


def write_backlog(folder: Path) -> list[Path]:
    """Two JSONL files (several Ray blocks, scored in 16-row batches), a flood campaign across them, unusable rows."""
    texts = [m["text"] for m in make_messages(40, seed=31)]
    campaign = "PROMO slot gacor hari ini maxwin {n}rb daftar di bit.ly/g{n} sekarang juga bonus new member"
    for i in range(0, len(texts), 37):
        texts.insert(i, campaign.format(n=i))
    texts[5], texts[120] = "   ", "\u200b"
    half = len(texts) // 2
    paths = []
    for name, part in (("a.jsonl", texts[:half]), ("b.jsonl", texts[half:])):
        path = folder / name
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in part), encoding="utf-8")
        paths.append(path)
    return paths


def test_ray_engine_writes_the_rows_of_the_local_engine(tmp_path, tiny_model_dir):
    (tmp_path / "in").mkdir()
    paths = write_backlog(tmp_path / "in")
    data = str(tmp_path / "in" / "*.jsonl")
    common = ["--model", str(tiny_model_dir), "--data", data, "--floods", "--batch_size", "8"]
    assert run(*common, "--output", str(tmp_path / "local.jsonl")) == 0
    assert run(*common, "--output", str(tmp_path / "ray.jsonl"), "--engine", "ray", "--chunk_size", "16") == 0
    local = read_jsonl(tmp_path / "local.jsonl")
    from_ray = read_jsonl(tmp_path / "ray.jsonl")
    assert_same_rows(from_ray, local)
    assert [r["id"] for r in from_ray] == list(range(sum(len(p.read_text().splitlines()) for p in paths)))
    campaign = [r for r in from_ray if r["category"] == "spam" and r["flood_cluster_size"] >= 5]
    assert len(campaign) >= 5  # the campaign's rows, in both files, form one cluster
    assert sum(r["error"] is not None for r in from_ray) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "local.jsonl", "ray.jsonl"]  # nothing half-written left


def test_ray_engine_reads_csv_with_ids_and_writes_parquet(tmp_path, tiny_model_dir):
    rows = [{"ref": f"00{i}", "text": m["text"]} for i, m in enumerate(make_messages(10, seed=32))]
    rows[3]["text"] = ""
    data = tmp_path / "b.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["ref", "text"])
        writer.writeheader()
        writer.writerows(rows)
    common = ["--model", str(tiny_model_dir), "--data", str(data), "--id_column", "ref"]
    assert run(*common, "--output", str(tmp_path / "local.parquet")) == 0
    assert run(*common, "--output", str(tmp_path / "ray.parquet"), "--engine", "ray") == 0
    local = pq.read_table(tmp_path / "local.parquet").to_pylist()
    from_ray = pq.read_table(tmp_path / "ray.parquet").to_pylist()
    assert_same_rows(from_ray, local)
    assert [r["id"] for r in from_ray] == [r["ref"] for r in rows]  # "000" stays text, not the number 0


def test_actors_that_take_every_cpu_are_refused_before_the_job_hangs(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "b.jsonl"
    data.write_text(json.dumps({"text": "halo"}) + "\n", encoding="utf-8")
    argv = ["--model", str(tiny_model_dir), "--data", str(data), "--output", str(tmp_path / "o.jsonl")]
    assert run(*argv, "--engine", "ray", "--ray_concurrency", "2") == 2
    assert "no CPU of 2 for read tasks" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()
