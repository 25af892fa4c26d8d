"""A user's mistakes get one clear line each and exit 2: grouped data problems, encodings, delimiters, flags."""

from __future__ import annotations

import subprocess

import pytest
from training_fixtures import (
    CATEGORIES,
    PLACES,
    PYTHON,
    ROOT,
    make_messages,
    subprocess_env,
    train_argv,
    write_csv,
)

from service.model.folder import CATEGORIES as SARING_CATEGORIES
from training.__main__ import main as cli
from training.arguments import SCRATCH_LEARNING_RATES, DataArguments
from training.data import DataValidationError, load_split, read_rows, stratified_split
from training.errors import ArgumentsError
from training.train import parse_args

DESK = {"aduan": "valid", "bukan_aduan": "chat", "iseng": "junk", "spam": "junk"}


def desk_rows(per_class: int, seed: int = 1) -> list[dict]:
    return [{"pesan": r["text"], "kategori": DESK[r["label"]]} for r in make_messages(per_class, seed, PLACES[:8])]


def test_many_rows_with_one_problem_are_one_line_with_a_count_and_no_traceback(tmp_path):
    """The issue's 486 lines of "unknown label 'chat'": now one line per label, exit 2, no traceback."""
    train = write_csv(desk_rows(30), tmp_path / "desk.csv")
    argv = train_argv(train, tmp_path / "m", "--text_column", "pesan", "--label_column", "kategori")
    proc = subprocess.run(
        [str(PYTHON), "-m", "training", "train", *argv],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("  - ")]
    # Three raw labels, each one line: the first row's place, how many rows, and where the next few are.
    assert len(lines) == 3, proc.stderr
    (chat,) = [line for line in lines if "unknown label 'chat'" in line]
    assert f"{train} line " in chat and "[30 rows like this; also lines " in chat and ", ...]" in chat
    assert 'README section "Your own labels"' in chat and "--labels" in chat and "--label_map" in chat
    assert "training data failed validation (120 problems)" in proc.stderr


def test_a_file_that_is_not_utf8_is_named_with_its_line_and_what_to_pass(tmp_path):
    path = tmp_path / "excel.csv"
    rows = "text,label\njalan rusak di bandung,aduan\nkafé di medan buka,bukan_aduan\n"
    path.write_bytes(rows.encode("cp1252"))
    with pytest.raises(DataValidationError) as info:
        read_rows(str(path))
    assert f"{path} line 3: not valid utf-8 (byte 0xe9)" in str(info.value)
    assert "--encoding cp1252" in str(info.value)
    rows_read, columns, _ = read_rows(str(path), encoding="cp1252")
    assert columns == ["text", "label"] and rows_read[1]["text"] == "kafé di medan buka"


@pytest.mark.parametrize(("delimiter", "name"), [("\t", "data.csv"), (";", "data.csv"), (",", "data.tsv")])
def test_the_delimiter_comes_from_the_header_not_the_file_name(tmp_path, delimiter, name, caplog):
    rows = make_messages(3, seed=2, places=PLACES[:3])
    path = tmp_path / name
    path.write_text(
        "\n".join([f"text{delimiter}label", *(f"{r['text']}{delimiter}{r['label']}" for r in rows)]) + "\n",
        encoding="utf-8",
    )
    split = load_split("train", [str(path)], "text", "label", CATEGORIES, {})
    assert [(e.text, e.label) for e in split.examples] == [(r["text"], r["label"]) for r in rows]
    named = "\t" if name.endswith(".tsv") else ","
    assert ("-separated" in caplog.text) == (delimiter != named)


def test_own_labels_without_their_roles_ask_for_them_and_point_to_the_readme(capsys):
    # The issue: --labels of one's own gave a ValueError about --spam_labels, with a traceback.
    argv = ["train", "--train_file", "desk.csv", "--labels", "valid", "chat", "junk", "--output_dir", "/tmp/x"]
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --labels valid chat junk: say which of your labels make the two scores")
    assert "--validity_labels" in err and "--spam_labels" in err and "Your own labels" in err
    assert "Traceback" not in err
    data = DataArguments(
        train_file=["desk.csv"], labels=["valid", "chat", "junk"], validity_labels=["valid"], spam_labels=["junk"]
    )
    assert (data.labels, data.validity_labels, data.spam_labels) == (["valid", "chat", "junk"], ["valid"], ["junk"])


def test_a_label_map_gives_the_model_the_categories_the_data_maps_onto():
    data = DataArguments(train_file=["desk.csv"], label_map='{"valid": "aduan", "chat": "bukan_aduan", "junk": "spam"}')
    assert data.labels is None  # decided from the training data
    data.resolve_labels(["valid", "junk", "chat", "valid"])
    assert data.labels == ["aduan", "bukan_aduan", "spam"]
    assert (data.validity_labels, data.spam_labels) == (["aduan"], ["spam"])
    with pytest.raises(ArgumentsError, match="fewer than two of them are saring's categories"):
        DataArguments(train_file=["x"], label_map='{"valid": "ok"}').resolve_labels(["valid", "junk"])
    assert DataArguments(train_file=["x"]).labels == list(SARING_CATEGORIES)


def test_a_class_with_one_text_is_advised_to_get_rows_not_a_larger_split(tmp_path):
    rows = [r for r in make_messages(12, seed=1, places=PLACES[:6]) if r["label"] != "iseng"]
    rows.append({"text": "lapor ada tuyul", "label": "iseng"})
    split = load_split("train", [str(write_csv(rows, tmp_path / "t.csv"))], "text", "label", CATEGORIES, {})
    with pytest.raises(DataValidationError) as info:
        stratified_split(split, 0.15, seed=0)
    assert "classes ['iseng'] need at least 2 distinct texts each" in str(info.value)
    assert "raise --validation_split" not in str(info.value)  # the issue: advice that cannot help


@pytest.mark.parametrize(
    ("base", "given", "expected"),
    [
        ("scratch:tiny", None, SCRATCH_LEARNING_RATES["tiny"]),
        ("scratch:small", None, 5e-4),
        ("some/pretrained-model", None, 5e-5),
        ("scratch:small", "1e-3", 1e-3),
    ],
)
def test_scratch_bases_get_a_learning_rate_that_learns(base, given, expected):
    argv = ["--model_name_or_path", base, "--train_file", "x.jsonl", "--output_dir", "/tmp/x", "--use_cpu", "true"]
    model_args, _, _, training_args = parse_args(argv + (["--learning_rate", given] if given else []))
    training_args.resolve_learning_rate(model_args)
    assert training_args.learning_rate == pytest.approx(expected)
