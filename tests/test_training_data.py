"""Data validation: every problem names the file and the row, and is raised before any training."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from training_fixtures import (
    CATEGORIES,
    PLACES,
    make_messages,
    read_jsonl,
    train_argv,
    write_csv,
    write_jsonl,
)

from training.arguments import DataArguments
from training.data import DataValidationError, load_split, normalise_for_dedup
from training.train import load_splits


@pytest.fixture
def rows() -> list[dict]:
    return make_messages(12, seed=5, places=PLACES[:6])


def fail_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, train: Path, *extra: str) -> str:
    """Run `train` on bad data; assert it stops with DataValidationError before building anything."""
    import training.train

    def must_not_build(*args, **kwargs):
        raise AssertionError("the base model was built although the data is invalid")

    monkeypatch.setattr(training.train, "load_base", must_not_build)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "models" / "m"
    with pytest.raises(DataValidationError) as info:
        training.train.main(train_argv(train, out, *extra))
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "validation created files"
    assert not out.exists() and not (out.parent / ".m.work").exists()
    return str(info.value)


def test_missing_column_names_file_and_found_columns(tmp_path, monkeypatch, rows):
    renamed = [{"pesan": r["text"], "kategori": r["label"]} for r in rows]
    train = write_jsonl(renamed, tmp_path / "train.jsonl")
    message = fail_before_training(tmp_path, monkeypatch, train)
    assert str(train) in message
    assert "missing column(s) ['text', 'label']" in message
    assert "found ['kategori', 'pesan']" in message


def test_missing_column_in_csv_lists_header(tmp_path, monkeypatch, rows):
    train = write_csv([{"message": r["text"], "label": r["label"]} for r in rows], tmp_path / "train.csv")
    message = fail_before_training(tmp_path, monkeypatch, train)
    assert f"{train}: missing column(s) ['text']; found ['message', 'label']" in message
    assert "--text_column" in message


def test_unknown_label_names_file_and_line(tmp_path, monkeypatch, rows):
    rows[2]["label"] = "keluhan"
    train = write_jsonl(rows, tmp_path / "train.jsonl")
    message = fail_before_training(tmp_path, monkeypatch, train)
    assert f"{train} line 3: unknown label 'keluhan'" in message
    assert "--label_map" in message


def test_empty_text_names_file_and_line(tmp_path, monkeypatch, rows):
    rows[4]["text"] = "   "
    train = write_jsonl(rows, tmp_path / "train.jsonl")
    message = fail_before_training(tmp_path, monkeypatch, train)
    assert f"{train} line 5: empty text" in message


def test_empty_text_in_csv_counts_the_header_line(tmp_path, monkeypatch, rows):
    rows[4]["text"] = ""
    train = write_csv(rows, tmp_path / "train.csv")
    message = fail_before_training(tmp_path, monkeypatch, train)
    assert f"{train} line 6: empty text" in message  # header is line 1, rows[0] is line 2


def test_every_problem_is_reported_at_once(tmp_path, monkeypatch, rows):
    rows[0]["text"] = ""
    rows[7]["label"] = "lainnya"
    train = write_jsonl(rows, tmp_path / "train.jsonl")
    message = fail_before_training(tmp_path, monkeypatch, train)
    assert "(2 problems)" in message
    assert f"{train} line 1: empty text" in message
    assert f"{train} line 8: unknown label 'lainnya'" in message


def test_invalid_json_line_is_named(tmp_path, monkeypatch, rows):
    train = write_jsonl(rows, tmp_path / "train.jsonl")
    lines = train.read_text(encoding="utf-8").splitlines()
    lines[3] = '{"text": "rusak", "label": '
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    message = fail_before_training(tmp_path, monkeypatch, train)
    assert f"{train} line 4: not valid JSON" in message


def test_class_without_examples_in_a_split_names_file_and_class(tmp_path, monkeypatch):
    train = write_jsonl(make_messages(12, seed=1, places=PLACES[:6]), tmp_path / "train.jsonl")
    no_iseng = [r for r in make_messages(4, seed=2, places=PLACES[10:]) if r["label"] != "iseng"]
    validation = write_jsonl(no_iseng, tmp_path / "validation.jsonl")
    message = fail_before_training(tmp_path, monkeypatch, train, "--validation_file", str(validation))
    assert f"{validation} (validation): class 'iseng' has no examples" in message
    assert str(train) not in message  # the training file is fine


def test_class_without_examples_in_training_data(tmp_path, monkeypatch, rows):
    train = write_jsonl([r for r in rows if r["label"] != "spam"], tmp_path / "train.jsonl")
    message = fail_before_training(tmp_path, monkeypatch, train)
    assert f"{train} (train): class 'spam' has no examples" in message


def test_leakage_names_both_rows(tmp_path, monkeypatch, rows):
    train = write_jsonl(rows, tmp_path / "train.jsonl")
    test_rows = make_messages(4, seed=3, places=PLACES[10:])
    leaked = rows[5]
    # Case, width and spacing do not make a message new.
    test_rows.insert(2, {"text": "  " + leaked["text"].upper().replace(" ", "   "), "label": leaked["label"]})
    test = write_jsonl(test_rows, tmp_path / "test.jsonl")
    message = fail_before_training(tmp_path, monkeypatch, train, "--test_file", str(test))
    assert f"{test} line 3 (test): text also in training data at {train} line 6 (leakage)" in message


def test_leakage_into_validation_file(tmp_path, monkeypatch, rows):
    train = write_jsonl(rows, tmp_path / "train.jsonl")
    validation_rows = make_messages(4, seed=3, places=PLACES[10:]) + [rows[0]]
    validation = write_jsonl(validation_rows, tmp_path / "validation.jsonl")
    message = fail_before_training(tmp_path, monkeypatch, train, "--validation_file", str(validation))
    line = len(validation_rows)
    assert f"{validation} line {line} (validation): text also in training data at {train} line 1" in message


def test_problem_in_test_file_stops_before_training(tmp_path, monkeypatch, rows):
    train = write_jsonl(rows, tmp_path / "train.jsonl")
    test_rows = make_messages(4, seed=3, places=PLACES[10:])
    test_rows[1]["label"] = "hoax"
    test = write_jsonl(test_rows, tmp_path / "test.jsonl")
    message = fail_before_training(tmp_path, monkeypatch, train, "--test_file", str(test))
    assert f"{test} line 2: unknown label 'hoax'" in message


def test_csv_and_jsonl_read_the_same_rows(tmp_path, rows):
    as_jsonl = load_split("train", [str(write_jsonl(rows, tmp_path / "a.jsonl"))], "text", "label", CATEGORIES, {})
    as_csv = load_split("train", [str(write_csv(rows, tmp_path / "a.csv"))], "text", "label", CATEGORIES, {})
    expected = [(r["text"], r["label"]) for r in rows]
    assert [(e.text, e.label) for e in as_jsonl.examples] == expected
    assert [(e.text, e.label) for e in as_csv.examples] == expected
    assert as_jsonl.examples[3].where == f"{tmp_path / 'a.jsonl'} line 4"
    assert as_csv.examples[3].where == f"{tmp_path / 'a.csv'} line 5"


def test_csv_and_jsonl_mixed_across_splits(tmp_path, rows):
    train = write_csv(rows, tmp_path / "train.csv")
    validation = write_jsonl(make_messages(4, seed=2, places=PLACES[10:]), tmp_path / "validation.jsonl")
    splits = load_splits(DataArguments(train_file=[str(train)], validation_file=str(validation)), seed=0)
    assert len(splits["train"].examples) == len(rows)
    assert len(splits["validation"].examples) == 16
    assert sorted(set(splits["validation"].labels)) == CATEGORIES


def test_several_training_files_are_concatenated(tmp_path, rows):
    first = write_jsonl(rows[:20], tmp_path / "seed.jsonl")
    second = write_csv(rows[20:], tmp_path / "feedback.csv")
    split = load_split("train", [str(first), str(second)], "text", "label", CATEGORIES, {})
    assert [e.text for e in split.examples] == [r["text"] for r in rows]
    assert split.examples[20].where == f"{second} line 2"


def numeric_rows(rows: list[dict]) -> list[dict]:
    """Raw labels as a public data set might have them: 0/1/2, with `iseng` left as text."""
    codes = {"aduan": 0, "bukan_aduan": 1, "spam": 2}
    return [{"text": r["text"], "label": codes.get(r["label"], r["label"])} for r in rows]


LABEL_MAP = {"0": "aduan", "1": "bukan_aduan", "2": "spam"}


def test_label_map_inline_maps_numeric_labels(tmp_path, rows):
    train = write_jsonl(numeric_rows(rows), tmp_path / "train.jsonl")
    assert read_jsonl(train)[0]["label"] in (0, 1, 2, "iseng")
    split = load_split(
        "train",
        [str(train)],
        "text",
        "label",
        CATEGORIES,
        DataArguments(train_file=[str(train)], label_map=json.dumps(LABEL_MAP)).parsed_label_map(),
    )
    assert split.labels == [r["label"] for r in rows]  # unmapped `iseng` passes through


def test_label_map_from_a_file_with_csv(tmp_path, rows):
    train = write_csv(numeric_rows(rows), tmp_path / "train.csv")
    mapping_file = tmp_path / "labels.json"
    mapping_file.write_text(json.dumps(LABEL_MAP), encoding="utf-8")
    data_args = DataArguments(train_file=[str(train)], label_map=str(mapping_file))
    split = load_split("train", [str(train)], "text", "label", CATEGORIES, data_args.parsed_label_map())
    assert Counter(split.labels) == Counter(r["label"] for r in rows)


def test_label_map_long_inline_object_is_not_taken_for_a_path(tmp_path):
    # Regression: Path(text).is_file() raised OSError (file name too long) for a long inline map.
    mapping = {f"kode_{i:03d}": "aduan" for i in range(60)}
    data_args = DataArguments(train_file=["x.jsonl"], label_map=json.dumps(mapping))
    assert data_args.parsed_label_map() == mapping


def test_label_map_given_as_an_object_in_a_json_config():
    assert DataArguments(train_file="x.jsonl", label_map=LABEL_MAP).parsed_label_map() == LABEL_MAP


def test_label_map_to_an_unknown_label_is_reported_with_its_line(tmp_path, monkeypatch, rows):
    train = write_jsonl(numeric_rows(rows), tmp_path / "train.jsonl")
    bad = json.dumps({**LABEL_MAP, "2": "sampah"})
    first_spam = 1 + next(i for i, r in enumerate(rows) if r["label"] == "spam")
    message = fail_before_training(tmp_path, monkeypatch, train, "--label_map", bad)
    assert f"{train} line {first_spam}: unknown label 2" in message


def test_stratified_split_keeps_classes_on_both_sides_and_texts_on_one(tmp_path):
    rows = make_messages(30, seed=4, places=PLACES)
    # Repeats that differ only in case and spacing must stay on one side of the split.
    repeats = [{"text": r["text"].upper() + "  ", "label": r["label"]} for r in rows[:40]]
    train = write_jsonl(rows + repeats, tmp_path / "train.jsonl")
    splits = load_splits(DataArguments(train_file=[str(train)], validation_split=0.2), seed=3)
    fit, held_out = splits["train"], splits["validation"]
    assert len(fit.examples) + len(held_out.examples) == len(rows) + len(repeats)
    for label in CATEGORIES:
        assert label in fit.labels and label in held_out.labels
    fit_texts = {normalise_for_dedup(t) for t in fit.texts}
    held_out_texts = {normalise_for_dedup(t) for t in held_out.texts}
    assert not fit_texts & held_out_texts
    # 20 % of the distinct texts per class, as stratification promises
    distinct = Counter(r["label"] for r in rows)
    held_out_distinct = Counter(e.label for e in held_out.examples if e.text in {r["text"] for r in rows})
    for label in CATEGORIES:
        assert held_out_distinct[label] == pytest.approx(0.2 * distinct[label], abs=1)
    # The same seed gives the same split (a resumed run trains on the same rows).
    again = load_splits(DataArguments(train_file=[str(train)], validation_split=0.2), seed=3)
    assert again["validation"].texts == held_out.texts


def test_stratified_split_too_small_is_a_validation_error_naming_the_file(tmp_path, monkeypatch):
    rows = make_messages(12, seed=1, places=PLACES[:6])
    rows = [r for r in rows if r["label"] != "iseng"] + [{"text": "lapor ada tuyul", "label": "iseng"}]
    train = write_jsonl(rows, tmp_path / "train.jsonl")
    message = fail_before_training(tmp_path, monkeypatch, train)
    assert f"{train}: cannot hold out 15% for validation" in message
    assert "'iseng': 1" in message


def test_extra_evaluation_file_is_checked_before_training(tmp_path, monkeypatch, rows):
    train = write_jsonl(rows, tmp_path / "train.jsonl")
    extra_rows = make_messages(3, seed=9, places=PLACES[12:])
    extra_rows[2]["label"] = "keluhan"
    extra = write_jsonl(extra_rows, tmp_path / "real.jsonl")
    message = fail_before_training(tmp_path, monkeypatch, train, "--extra_eval_file", f"real={extra}")
    assert f"{extra} line 3: unknown label 'keluhan'" in message
