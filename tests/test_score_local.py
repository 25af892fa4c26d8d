"""`python -m training score`, local engine: the API's numbers, order and ids, bad rows, formats, resume, floods."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from make_messages import make_messages
from service_fixtures import make_settings
from training_fixtures import PYTHON, ROOT, read_jsonl, subprocess_env

from service.http.app import create_app
from training.score import main as score_main

SCORES = ("validity", "spam")
# Texts the API refuses with 422 (empty, blank, invisible-only): a backlog row like these is not scored.
UNUSABLE = ["", "   \n\t", "\u200b\u200b\u200b", "\u3164"]
LONG = "jalan di desa bandung rusak parah mohon diperbaiki " * 60  # past the tiny model's max length


@pytest.fixture(scope="module")
def client(tiny_model_dir: Path):
    with TestClient(create_app(make_settings(tiny_model_dir, flood_detection=False))) as client:
        yield client


def api_results(client: TestClient, texts: list[str]) -> list[dict]:
    results = []
    for start in range(0, len(texts), 32):  # within the default messages-per-call limit
        body = {"messages": [{"id": str(i), "text": t} for i, t in enumerate(texts[start : start + 32])]}
        response = client.post("/v1/score", json=body)
        assert response.status_code == 200, response.text
        results += response.json()["results"]
    return results


def run_score(*argv: str) -> int:
    return score_main([*argv, "--progress", "false"])


def score_file(model: Path, data: Path, out: Path, *argv: str) -> int:
    return run_score("--model", str(model), "--data", str(data), "--output", str(out), *argv)


def backlog_rows(n_per_class: int = 6, seed: int = 11) -> list[dict]:
    rows = [{"ref": f"wa-{i:04d}", "text": m["text"]} for i, m in enumerate(make_messages(n_per_class, seed=seed))]
    rows.insert(3, {"ref": "wa-long", "text": LONG})
    return rows


def test_rows_are_the_api_answers_in_input_order_with_ids(tmp_path, tiny_model_dir, client):
    rows = backlog_rows()
    half = len(rows) // 2
    # Two files of two formats, named by a glob: rows come out file by file, in order.
    first = tmp_path / "in" / "a.jsonl"
    first.parent.mkdir()
    first.write_text("".join(json.dumps(r) + "\n" for r in rows[:half]), encoding="utf-8")
    with (tmp_path / "in" / "b.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["ref", "text"])
        writer.writeheader()
        writer.writerows(rows[half:])
    out = tmp_path / "scored.jsonl"
    code = run_score(
        "--model", str(tiny_model_dir), "--data", str(tmp_path / "in" / "*"), "--text-column", "text",
        "--id-column", "ref", "--output", str(out), "--batch-size", "5",
    )  # fmt: skip
    assert code == 0
    scored = read_jsonl(out)
    assert [r["id"] for r in scored] == [r["ref"] for r in rows]
    expected = api_results(client, [r["text"] for r in rows])
    version = client.get("/v1/model").json()["version"]
    for got, want in zip(scored, expected, strict=True):
        for name in SCORES:
            assert got[name] == pytest.approx(want[name], abs=1e-4)
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-4)
        for name in ("category", "decision", "is_spam", "truncated"):
            assert got[name] == want[name], (got, want)
        assert got["model_version"] == version and got["error"] is None
    assert scored[3]["truncated"] is True
    assert {r["category"] for r in scored} == {"aduan", "bukan_aduan", "iseng", "spam"}


def test_without_an_id_column_the_id_is_the_row_number(tmp_path, tiny_model_dir):
    data = tmp_path / "b.jsonl"
    data.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in backlog_rows(2)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert run_score("--model", str(tiny_model_dir), "--data", str(data), "--output", str(out)) == 0
    assert [r["id"] for r in read_jsonl(out)] == list(range(9))


def test_bad_rows_are_reported_with_file_and_line_and_written_with_an_error(tmp_path, tiny_model_dir, client, caplog):
    good = backlog_rows(1)
    lines = [json.dumps({"ref": "g0", "text": good[0]["text"]})]
    lines += [json.dumps({"ref": f"u{i}", "text": t}) for i, t in enumerate(UNUSABLE)]
    lines += [
        '{"ref": "broken", "text": ',  # not JSON
        json.dumps({"ref": "missing"}),
        json.dumps({"ref": "number", "text": 12345}),
        '{"ref": "surrogate", "text": "lapor \\ud800 jalan rusak"}',  # a lone surrogate: not Unicode text
        json.dumps({"ref": "g1", "text": good[1]["text"]}),
    ]
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    with caplog.at_level("WARNING", logger="training.score"):
        assert score_file(tiny_model_dir, data, out, "--id_column", "ref") == 0
    scored = read_jsonl(out)
    assert len(scored) == len(lines)  # nothing dropped
    assert [r["error"] is None for r in scored] == [True] + [False] * (len(lines) - 2) + [True]
    assert scored[-1]["id"] == "g1" and scored[-1]["decision"] in ("accept", "review", "reject")
    for line_number, row in enumerate(scored[1:-1], start=2):
        assert row["validity"] is None and row["decision"] is None and row["error"]
        assert f"{data} line {line_number}:" in caplog.text
    assert "not valid JSON" in scored[len(UNUSABLE) + 1]["error"]
    assert scored[len(UNUSABLE) + 2]["error"] == "no text"
    # The service refuses exactly these texts: the rule is the API's own.
    for text in UNUSABLE:
        assert client.post("/v1/score", json={"messages": [{"text": text}]}).status_code == 422


def test_csv_and_parquet_outputs_hold_the_same_rows(tmp_path, tiny_model_dir):
    data = tmp_path / "b.jsonl"
    rows = backlog_rows(2) + [{"ref": "empty", "text": " "}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    outs = {fmt: tmp_path / f"out.{fmt}" for fmt in ("jsonl", "csv", "parquet")}
    for out in outs.values():
        assert score_file(tiny_model_dir, data, out, "--id_column", "ref") == 0
    reference = read_jsonl(outs["jsonl"])
    from_parquet = pq.read_table(outs["parquet"]).to_pylist()
    assert from_parquet == reference
    with outs["csv"].open(newline="", encoding="utf-8") as fh:
        from_csv = list(csv.DictReader(fh))
    assert [r["id"] for r in from_csv] == [r["id"] for r in reference]
    for got, want in zip(from_csv, reference, strict=True):
        assert got["decision"] == (want["decision"] or "") and got["error"] == (want["error"] or "")
        if want["error"] is None:
            assert float(got["validity"]) == want["validity"]
            assert json.loads(got["probabilities"]) == want["probabilities"]


def test_a_missing_column_or_file_is_a_clear_error_and_writes_nothing(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "b.csv"
    data.write_text("message,ref\nhalo,1\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert run_score("--model", str(tiny_model_dir), "--data", str(data), "--output", str(out)) == 2
    assert "missing column(s) ['text']" in capsys.readouterr().err
    assert run_score("--model", str(tiny_model_dir), "--data", str(tmp_path / "none-*.csv"), "--output", str(out)) == 2
    assert "no file matches" in capsys.readouterr().err
    assert not any(tmp_path.glob("*out*"))


def test_floods_give_each_row_its_near_duplicate_cluster_size(tmp_path, tiny_model_dir):
    campaign = [
        "PROMO slot gacor hari ini maxwin 50rb daftar di bit.ly/gacor88 sekarang juga",
        "promo SLOT GACOR hari ini maxwin 75rb!!! daftar di bit.ly/zz99 sekarang juga",
        "Promo slot gacor hari ini maxwin 10rb 👉 daftar di www.gacor.com sekarang juga",
    ]
    unique = [m["text"] for m in make_messages(1, seed=5)]
    texts = [campaign[0], unique[0], campaign[1], "", unique[1], campaign[2], unique[2]]
    data = tmp_path / "b.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    out = tmp_path / "out.parquet"
    assert run_score("--model", str(tiny_model_dir), "--data", str(data), "--output", str(out), "--floods") == 0
    sizes = pq.read_table(out).column("flood_cluster_size").to_pylist()
    assert sizes == [3, 1, 3, None, 1, 3, 1]


# -- crash and resume ------------------------------------------------------------------------------


def cli(*argv: str) -> list[str]:
    return [str(PYTHON), "-m", "training", "score", *argv]


def test_killed_mid_run_then_resume_writes_what_an_uninterrupted_run_writes(tmp_path, tiny_model_dir):
    rows = [{"ref": f"r{i}", "text": m["text"]} for i, m in enumerate(make_messages(300, seed=21))]  # 1,200 rows
    rows[7]["text"] = "  "
    data = tmp_path / "backlog.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    argv = ["--model", str(tiny_model_dir), "--data", str(data), "--id_column", "ref", "--chunk_size", "40",
            "--batch_size", "8", "--floods", "--progress", "false"]  # fmt: skip
    env = subprocess_env()
    whole = tmp_path / "whole.jsonl"
    subprocess.run(cli(*argv, "--output", str(whole)), env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)

    out = tmp_path / "resumed.jsonl"
    partial = tmp_path / ".resumed.jsonl.partial.jsonl"
    proc = subprocess.Popen(cli(*argv, "--output", str(out)), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.exists() and partial.read_bytes().count(b"\n") >= 120:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert not out.exists()  # the output appears whole or not at all
    done_before = partial.read_bytes().count(b"\n")
    assert 120 <= done_before < len(rows)

    resumed = subprocess.run(cli(*argv, "--output", str(out), "--resume"), env=env, cwd=ROOT, capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])["summary"]
    assert summary["rows"] == len(rows) and summary["errors"] == 1
    assert summary["scored_now"] <= len(rows) - done_before // 40 * 40  # the kept rows were not scored again
    assert read_jsonl(out) == read_jsonl(whole)
    assert not partial.exists() and not (tmp_path / ".resumed.jsonl.partial.json").exists()


def test_resume_refuses_a_partial_output_of_another_run(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "b.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in backlog_rows(2)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    manifest = tmp_path / ".out.jsonl.partial.json"
    (tmp_path / ".out.jsonl.partial.jsonl").write_text("", encoding="utf-8")
    manifest.write_text(json.dumps({"text_column": "body"}), encoding="utf-8")
    assert run_score("--model", str(tiny_model_dir), "--data", str(data), "--output", str(out), "--resume") == 2
    assert "without --resume to start over" in capsys.readouterr().err
    assert not out.exists()
