"""Hostile input (issue 18): each case stops at config loading or ingest with one sentence naming the culprit.

Every test here is fast and offline: tiny files, plain functions (locate_source, ingest_reviews,
load_config) or the CLI's `config` command, and no model is ever trained.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import ConfigError, DataConfig, load_config
from tasks.ingest import IngestError, ingest_reviews, locate_source, read_imdb
from tasks.store import read_json
from tests.helpers import make_imdb_archive


def _ingest(tmp_path: Path, **data) -> tuple[dict, Path]:
    cfg = DataConfig(**data)
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    return ingest_reviews(cfg, locate_source(cfg), out), out


def _table(n: int = 20, labels: list | None = None) -> pd.DataFrame:
    labels = labels or ["neg", "pos"]
    return pd.DataFrame({"text": [f"review number {i} says things" for i in range(n)], "label": [labels[i % len(labels)] for i in range(n)]})


def _archive_with(path: Path, name: str, data: bytes) -> Path:
    """A small aclImdb archive plus one extra member `name` holding data."""
    make_imdb_archive(path, per_class=3)
    with tarfile.open(path, "r:gz") as source:
        members = [(info, source.extractfile(info).read() if info.isreg() else None) for info in source.getmembers()]
    with tarfile.open(path, "w:gz") as archive:
        for info, content in members:
            archive.addfile(info, io.BytesIO(content) if content is not None else None)
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


# --------------------------------------------------------------------------- 1. the folder fingerprint follows contents


def test_unpacked_folder_fingerprint_changes_when_a_review_is_rewritten_at_the_same_size(tmp_path: Path):
    folder = tmp_path / "unpacked"
    with tarfile.open(make_imdb_archive(tmp_path / "a.tar.gz", per_class=3)) as archive:
        archive.extractall(folder, filter="data")
    cfg = DataConfig(path=str(folder))
    before = locate_source(cfg)["fingerprint"]
    assert locate_source(cfg)["fingerprint"] == before, "the same folder gives the same fingerprint"

    review = sorted(folder.rglob("*.txt"))[0]
    stat = review.stat()
    text = review.read_bytes()
    review.write_bytes(text.swapcase())  # other text, the same size
    os.utime(review, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same modification time
    assert review.stat().st_size == stat.st_size
    assert locate_source(cfg)["fingerprint"] != before


# --------------------------------------------------------------------------- 2. a bound on what one review may hold


def test_max_review_bytes_defaults_to_ten_mebibytes_and_must_be_positive():
    assert DataConfig().max_review_bytes == 10_485_760
    with pytest.raises(ConfigError, match=r"'data.max_review_bytes'"):
        load_config(overrides=["data.max_review_bytes=0"])


def test_archive_member_over_max_review_bytes_is_refused_by_name(tmp_path: Path):
    archive = _archive_with(tmp_path / "bomb.tar.gz", "aclImdb/train/pos/1_10.txt", b"x" * 2000)
    message = (
        f"aclImdb/train/pos/1_10.txt in {archive} is 2,000 bytes, more than data.max_review_bytes (1,000): "
        "remove it or raise data.max_review_bytes."
    )
    with pytest.raises(IngestError, match=re.escape(message)) as caught:
        _ingest(tmp_path, path=str(archive), max_review_bytes=1000)
    assert not caught.value.retryable
    # Without the bound the same archive reads.
    summary, _ = _ingest(tmp_path / "ok", path=str(archive))
    assert summary["n"]["train"] + summary["n"]["val"] == 7


def test_folder_review_over_max_review_bytes_is_refused_by_name(tmp_path: Path):
    folder = tmp_path / "unpacked"
    with tarfile.open(make_imdb_archive(tmp_path / "a.tar.gz", per_class=3)) as archive:
        archive.extractall(folder, filter="data")
    limit = max(p.stat().st_size for p in folder.rglob("*.txt"))  # every real review fits
    big = folder / "aclImdb" / "test" / "neg" / "7_2.txt"
    big.write_bytes(b"y" * (limit + 1))
    message = f"{big} is {limit + 1:,} bytes, more than data.max_review_bytes ({limit:,}): remove it or raise data.max_review_bytes."
    with pytest.raises(IngestError, match=re.escape(message)):
        read_imdb(folder, max_review_bytes=limit)
    assert len(read_imdb(folder, max_review_bytes=limit + 1)["test"]) == 7


def test_table_text_over_max_review_bytes_is_refused_by_row(tmp_path: Path):
    frame = _table()
    frame.loc[2, "text"] = "é" * 60  # 60 characters, 120 bytes of UTF-8
    path = tmp_path / "long.parquet"
    frame.to_parquet(path, index=False)
    message = f"Row 3 of {path} holds a text of 120 bytes in column 'text', more than data.max_review_bytes (100): shorten or drop that row, or raise data.max_review_bytes."
    with pytest.raises(IngestError, match=re.escape(message)):
        _ingest(tmp_path, source="table", path=str(path), max_review_bytes=100)


# --------------------------------------------------------------------------- 3. silently wrong models


def test_parquet_text_column_of_numbers_is_refused(tmp_path: Path):
    path = tmp_path / "ids.parquet"
    pd.DataFrame({"review": list(range(20)), "label": ["neg", "pos"] * 10}).to_parquet(path, index=False)
    message = f"Text column 'review' of {path} holds int64, not text: point data.text_column at the column of review texts."
    with pytest.raises(IngestError, match=re.escape(message)):
        _ingest(tmp_path, source="table", path=str(path), text_column="review")


def test_json_lines_text_column_of_numbers_is_refused(tmp_path: Path):
    path = tmp_path / "ids.jsonl"
    path.write_text("".join(json.dumps({"text": i, "label": ["neg", "pos"][i % 2]}) + "\n" for i in range(20)))
    message = f"Text column 'text' of {path} holds int64, not text: point data.text_column at the column of review texts."
    with pytest.raises(IngestError, match=re.escape(message)):
        _ingest(tmp_path, source="table", path=str(path))


def test_json_lines_number_among_texts_is_refused_by_row(tmp_path: Path):
    path = tmp_path / "mixed.jsonl"
    rows = [{"text": f"review {i}", "label": ["neg", "pos"][i % 2]} for i in range(20)]
    rows[4]["text"] = 5
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    message = f"Text column 'text' of {path} holds the int 5 at row 5, not text: quote it, or point data.text_column at the column of review texts."
    with pytest.raises(IngestError, match=re.escape(message)):
        _ingest(tmp_path, source="table", path=str(path))


def test_label_case_and_spaces_fold_into_one_class_and_ingest_json_says_which(tmp_path: Path, caplog):
    path = tmp_path / "cased.csv"
    _table(40, ["Positive", "positive", "NEGATIVE", "negative"]).to_csv(path, index=False)
    with caplog.at_level(logging.INFO, logger="rnnflow"):
        summary, out = _ingest(tmp_path, source="table", path=str(path))
    assert summary["labels"] == ["negative", "positive"]
    info = read_json(out / "ingest.json")
    assert info["label_spellings_merged"] == {"negative": ["NEGATIVE", "negative"], "positive": ["Positive", "positive"]}
    assert info["label_counts"]["test"] == {"negative": 4, "positive": 4}
    lines = [r.getMessage() for r in caplog.records if "spellings" in r.getMessage()]
    assert len(lines) == 1 and "'NEGATIVE', 'negative' -> 'negative'" in lines[0]


def test_labels_that_differ_only_by_surrounding_spaces_fold_too(tmp_path: Path):
    path = tmp_path / "spaced.jsonl"
    _table(20, [" pos", "pos", "neg"]).to_json(path, orient="records", lines=True)
    summary, out = _ingest(tmp_path, source="table", path=str(path))
    assert summary["labels"] == ["neg", "pos"]
    assert read_json(out / "ingest.json")["label_spellings_merged"] == {"pos": [" pos", "pos"]}


def test_numeric_labels_merge_nothing(tmp_path: Path):
    path = tmp_path / "stars.parquet"
    _table(20, [1, 2]).to_parquet(path, index=False)
    summary, out = _ingest(tmp_path, source="table", path=str(path))
    assert summary["labels"] == ["1", "2"]
    assert "label_spellings_merged" not in read_json(out / "ingest.json")


# --------------------------------------------------------------------------- 4. nonsense configuration


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.learning_rate=.inf", "train.learning_rate"),
        ("train.learning_rate=.nan", "train.learning_rate"),
        ("promote.floors.accuracy=.nan", "promote.floors.accuracy"),
        ("promote.min_delta=.inf", "promote.min_delta"),
        ("train.epochs=1000000000000", "train.epochs"),
        ("train.members=1000000", "train.members"),
        ("model.stack_units=[0]", "model.stack_units.0"),
        ("model.stack_units=[64, -1]", "model.stack_units.1"),
    ],
)
def test_nonsense_values_are_refused_by_key_before_any_step(override: str, key: str):
    with pytest.raises(ConfigError) as caught:
        load_config("demo", overrides=[override])
    message = str(caught.value)
    assert f"Configuration key {key!r} in --set is invalid" in message and "\n" not in message


def test_cli_config_with_an_infinite_learning_rate_exits_2_naming_the_key(capsys):
    from flows.cli import main

    assert main(["config", "--preset", "demo", "--set", "train.learning_rate=.inf"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnflow: error: Configuration key 'train.learning_rate' in --set is invalid (Input should be a finite number")


def test_yaml_key_given_twice_is_refused_with_its_key_and_lines(tmp_path: Path):
    config = tmp_path / "twice.yaml"
    config.write_text("train:\n  epochs: 3\n  batch_size: 8\n  epochs: 50\n")
    message = f"Configuration file {config} gives the key 'train.epochs' twice (lines 2 and 4): keep one of them."
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(config_file=config)


def test_yaml_section_given_twice_is_refused(tmp_path: Path):
    config = tmp_path / "sections.yaml"
    config.write_text("train:\n  epochs: 3\nmodel:\n  units: 8\ntrain:\n  batch_size: 4\n")
    with pytest.raises(ConfigError, match=re.escape("gives the key 'train' twice (lines 1 and 5)")):
        load_config(config_file=config)


def test_yaml_duplicate_inside_a_set_value_is_refused():
    with pytest.raises(ConfigError, match=re.escape("--set train.member_models gives the key 'train.member_models.0.cell' twice: keep one of them.")):
        load_config(overrides=["train.member_models=[{cell: gru, cell: lstm}]"])


@pytest.mark.parametrize(
    "name, write",
    [
        ("twice.csv", lambda p: p.write_text("text,label,text\nfirst review,pos,second review\nthird,neg,fourth\n")),
        ("twice.tsv", lambda p: p.write_text("text\tlabel\ttext\nfirst review\tpos\tsecond review\n")),
        ("twice.parquet", lambda p: __import__("pyarrow.parquet").parquet.write_table(
            __import__("pyarrow").table([["a", "b"], ["pos", "neg"], ["c", "d"]], names=["text", "label", "text"]), p)),
    ],
)
def test_table_header_naming_a_column_twice_is_refused(tmp_path: Path, name: str, write):
    path = tmp_path / name
    write(path)
    message = f"{path} names column 'text' twice in its header, so which one data.text_column means is unclear: rename or drop one of them."
    with pytest.raises(IngestError, match=re.escape(message)):
        _ingest(tmp_path, source="table", path=str(path))


def test_json_line_naming_a_key_twice_is_refused(tmp_path: Path):
    path = tmp_path / "twice.jsonl"
    path.write_text('{"text": "a review", "label": "pos"}\n{"text": "one", "label": "neg", "text": "two"}\n')
    message = f"Line 2 of {path} names the key 'text' twice: keep one of them."
    with pytest.raises(IngestError, match=re.escape(message)):
        _ingest(tmp_path, source="table", path=str(path))


# --------------------------------------------------------------------------- 5. what a path is, and whose fault a class is


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.csv"
    os.mkfifo(path)
    return path


def test_a_fifo_as_a_table_is_not_called_a_folder(fifo: Path):
    message = f"Input {fifo} is a named pipe (FIFO), not a regular file: pass a .csv, .tsv, .parquet or .jsonl table with --set data.path=PATH."
    with pytest.raises(IngestError, match=re.escape(message)):
        locate_source(DataConfig(source="table", path=str(fifo)))


def test_dev_zero_as_a_table_is_not_called_a_folder():
    with pytest.raises(IngestError, match=re.escape("Input /dev/zero is a character device, not a regular file: pass a .csv, .tsv, .parquet or .jsonl table with --set data.path=PATH.")):
        locate_source(DataConfig(source="table", path="/dev/zero"))


@pytest.mark.parametrize("path, kind", [("/dev/zero", "a character device"), ("fifo", "a named pipe (FIFO)")])
def test_a_device_or_fifo_as_the_imdb_input_is_refused_without_reading_it(path: str, kind: str, fifo: Path):
    path = str(fifo) if path == "fifo" else path
    message = f"Input {path} is {kind}, not a regular file or folder: pass the IMDb archive or its unpacked folder with --set data.path=PATH."
    with pytest.raises(IngestError, match=re.escape(message)):
        locate_source(DataConfig(path=path))


def test_a_fifo_inside_an_unpacked_folder_is_refused_by_name(tmp_path: Path):
    folder = tmp_path / "unpacked"
    with tarfile.open(make_imdb_archive(tmp_path / "a.tar.gz", per_class=3)) as archive:
        archive.extractall(folder, filter="data")
    pipe = folder / "aclImdb" / "train" / "pos" / "99_9.txt"
    os.mkfifo(pipe)
    with pytest.raises(IngestError, match=re.escape(f"{pipe} is a named pipe (FIFO), not a regular file: rnnflow reads only regular files; put the review's text file there or remove it.")):
        _ingest(tmp_path, path=str(folder))


def test_a_class_only_the_test_file_holds_is_blamed_on_the_data(tmp_path: Path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    _table(20).to_csv(train, index=False)
    _table(9, ["neg", "pos", "meh"]).to_csv(test, index=False)
    message = f"Class 'meh' appears only in the test rows ({test}), never in train: add train rows of that class or drop its 3 test rows."
    with pytest.raises(IngestError, match=re.escape(message)) as caught:
        _ingest(tmp_path, source="table", path=str(train), test_path=str(test))
    assert "min_class_fraction" not in str(caught.value)


def test_a_class_only_the_test_split_holds_is_blamed_on_the_data(tmp_path: Path):
    path = tmp_path / "split.csv"
    frame = _table(20).assign(part="train")
    frame.loc[[0, 1], "part"] = "test"
    frame.loc[0, "label"] = "meh"
    frame.to_csv(path, index=False)
    with pytest.raises(IngestError, match=re.escape(f"Class 'meh' appears only in the test rows ({path}), never in train: add train rows of that class or drop its 1 test row.")):
        _ingest(tmp_path, source="table", path=str(path), split_column="part")


def test_a_class_too_small_to_reach_train_is_blamed_on_the_data(tmp_path: Path):
    path = tmp_path / "rare.csv"
    frame = _table(20)
    frame.loc[0, "label"] = "meh"  # one row: data.test_size carves it into test
    frame.to_csv(path, index=False)
    message = (
        f"{path} holds too few reviews of class 'meh' (meh 1, neg 9, pos 10) to keep one for each of train, validation and test: "
        "with data.test_size=0.2 and data.val_fraction=0.2 each class needs at least 3; add reviews of class 'meh' or drop it."
    )
    with pytest.raises(IngestError, match=re.escape(message)):
        _ingest(tmp_path, source="table", path=str(path))
