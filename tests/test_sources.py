"""The table and keras_imdb sources: what ingest writes from them, and the sentence each bad input gets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.config import DataConfig, EncodeConfig
from tasks.encode import encode_reviews, load_arrays
from tasks.ingest import IngestError, ingest_reviews, locate_source, read_keras_imdb
from tasks.store import read_json

MOODS = ["angry", "calm", "happy"]


def reviews(n: int = 60, classes: list = MOODS) -> pd.DataFrame:
    """n rows cycling through the classes, with a <br /> in every text like scraped reviews."""
    return pd.DataFrame(
        {
            "text": [f"Review {i} is {classes[i % len(classes)]}.<br />Line two of {i}." for i in range(n)],
            "label": [classes[i % len(classes)] for i in range(n)],
        }
    )


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    """The frame in the format its extension names."""
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".json":
        frame.to_json(path, orient="records")
    else:
        path.write_text(frame.to_csv(index=False))
    return path


def ingest(tmp_path: Path, **data) -> tuple[dict, Path]:
    cfg = DataConfig(**data)
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    return ingest_reviews(cfg, locate_source(cfg), out), out


def summary_input(out: Path) -> dict:
    """ingest.json's record of how each CSV or TSV was read."""
    return read_json(out / "ingest.json")["input"]["dialect"]


def split(out: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(out / f"{name}.parquet")


# --------------------------------------------------------------------------- table


def test_one_csv_becomes_three_stratified_splits_with_sorted_string_classes(tmp_path: Path):
    path = write_table(reviews(60), tmp_path / "moods.csv")
    summary, out = ingest(tmp_path, source="table", path=str(path), test_size=0.2, val_fraction=0.25)

    assert summary["labels"] == ["angry", "calm", "happy"]
    assert summary["n"] == {"train": 36, "val": 12, "test": 12}
    info = read_json(out / "ingest.json")
    assert info["labels"] == ["angry", "calm", "happy"]
    assert info["label_counts"]["test"] == {"angry": 4, "calm": 4, "happy": 4}
    assert "stratified" in info["input"]["test_from"]
    train = split(out, "train")
    assert list(train.columns) == ["text", "label", "rating", "id"]
    assert not train["text"].str.contains("<br").any(), "HTML tags are stripped by default"
    assert train["rating"].isna().all(), "no rating column: rating is null"
    # The id is the row number (from 1, header not counted) and the label the index of the class name.
    for _, row in train.iterrows():
        assert row["text"].startswith(f"Review {row['id'] - 1} is {info['labels'][row['label']]}")


def test_numeric_labels_are_ordered_by_value_and_recorded_as_strings(tmp_path: Path):
    frame = reviews(60, classes=[10, 2, 1])
    path = write_table(frame, tmp_path / "stars.csv")
    summary, out = ingest(tmp_path, source="table", path=str(path))
    assert summary["labels"] == ["1", "2", "10"], "10 sorts after 2 as a number, not as text"
    test = split(out, "test")
    assert all(f" is {['1', '2', '10'][label]}." in text for text, label in zip(test["text"], test["label"]))


@pytest.mark.parametrize("extension", [".csv", ".tsv", ".parquet", ".jsonl", ".json"])
def test_every_format_gives_the_same_splits(tmp_path: Path, extension: str):
    frame = reviews(40).assign(part=["test" if i % 5 == 0 else "Train " for i in range(40)])
    path = write_table(frame, tmp_path / f"moods{extension}")
    summary, out = ingest(tmp_path, source="table", path=str(path), split_column="part")
    assert summary["n"]["test"] == 8, "split column values are read case- and space-insensitively"
    assert sorted(split(out, "test")["id"]) == [1, 6, 11, 16, 21, 26, 31, 36]
    assert summary["labels"] == MOODS


def test_a_csv_a_spreadsheet_saved_with_semicolons_reads_as_the_comma_one(tmp_path: Path):
    """Where the comma is the decimal mark, spreadsheets save .csv files separated by semicolons: ingest and predict
    take the separator that splits the header, and commas inside the texts stay text."""
    from tasks.predict import read_texts

    frame = reviews(40).assign(text=lambda f: f["text"] + ", and a comma")
    (tmp_path / "comma").mkdir()
    (tmp_path / "semicolon").mkdir()
    comma = write_table(frame, tmp_path / "comma" / "moods.csv")
    semicolon = tmp_path / "semicolon" / "moods.csv"
    frame.to_csv(semicolon, index=False, sep=";")
    assert semicolon.read_text().splitlines()[0] == "text;label"

    summary, out = ingest(tmp_path / "semicolon", source="table", path=str(semicolon))
    _, out_comma = ingest(tmp_path / "comma", source="table", path=str(comma))
    assert summary["labels"] == MOODS
    for name in ("train", "val", "test"):
        pd.testing.assert_frame_equal(split(out, name), split(out_comma, name))
    assert split(out, "train")["text"].str.endswith(", and a comma").all()
    assert read_texts(semicolon) == read_texts(comma) == frame["text"].tolist()
    assert summary_input(out) == {"path": {"separator": ";", "quoting": True}}


@pytest.mark.parametrize("written_by", ["an export that never quotes", "an export whose quotes close", "pandas"])
def test_quote_marks_in_a_tsv_s_texts_stay_text_whether_or_not_it_quotes(tmp_path: Path, written_by: str):
    """Tab-separated exports often never quote, so a review may open with a stray quote mark, or with a quoted title
    and more after it; pandas quotes such texts ("a ""b"" c"). Either way every line is one review, with its quote marks."""
    def text(i: int) -> str:
        if i % 5 == 0:
            return f'"Title {i}" was dull'  # read as CSV quoting, this was the text Title 0 was dull
        if written_by == "an export whose quotes close":
            return f"plain {i}"
        return f'"stray {i}' if i % 7 == 0 else f'a 5" screen {i}' if i % 11 == 0 else f"plain {i}"

    texts = [text(i) for i in range(40)]
    frame = pd.DataFrame({"text": texts, "label": [MOODS[i % 3] for i in range(40)]})
    path = tmp_path / "moods.tsv"
    if written_by == "pandas":
        frame.to_csv(path, index=False, sep="\t")
        assert '"""Title 0"" was dull"' in path.read_text()
    else:
        path.write_text("text\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in zip(frame["text"], frame["label"])))
    summary, out = ingest(tmp_path, source="table", path=str(path))
    assert sum(summary["n"].values()) == 40
    read = pd.concat([split(out, name) for name in ("train", "val", "test")]).sort_values("id")
    assert read["text"].tolist() == texts
    assert summary_input(out) == {"path": {"separator": "\t", "quoting": written_by == "pandas"}}


def test_incomplete_rows_drop_leaves_out_rows_without_a_text_or_label_and_counts_them(tmp_path: Path):
    """Exports such as NSMC's hold a few reviews with no text: with data.incomplete_rows drop they are left out, every
    other row keeps its row number as id, and ingest.json says how many went and where the first was."""
    frame = reviews(30).assign(text=lambda f: f["text"].where(~f.index.isin([4, 11]), "  "),
                               label=lambda f: f["label"].where(f.index != 20))
    path = write_table(frame, tmp_path / "moods.csv")
    with pytest.raises(IngestError, match=r"the first at row 5: drop or fill those rows, or leave them out with --set data.incomplete_rows=drop"):
        ingest(tmp_path / "refused", source="table", path=str(path))
    summary, out = ingest(tmp_path / "kept", source="table", path=str(path), incomplete_rows="drop")
    assert sum(summary["n"].values()) == 27
    read = pd.concat([split(out, name) for name in ("train", "val", "test")])
    assert sorted(read["id"]) == [i + 1 for i in range(30) if i not in (4, 11, 20)], "row numbers are the file's"
    assert read_json(out / "ingest.json")["input"]["dropped_rows"] == {str(path): {"without_text": 2, "without_label": 1, "first_row": 5}}


def test_nsmc_s_own_txt_files_read_as_they_are_and_a_txt_without_tabs_is_refused(tmp_path: Path):
    """NSMC ships ratings_train.txt: id, document, label separated by tabs, never quoted, a few documents empty."""
    lines = ["id\tdocument\tlabel"] + [f"{900 + i}\t{chr(34) + 'stray ' if i == 3 else ''}review {i}\t{i % 2}" for i in range(12)]
    lines[6] = "905\t\t1"
    nsmc = tmp_path / "ratings_train.txt"
    nsmc.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary, out = ingest(tmp_path / "nsmc", source="table", path=str(nsmc), text_column="document", id_column="id",
                          incomplete_rows="drop", test_size=0.25)
    read = pd.concat([split(out, name) for name in ("train", "val", "test")]).sort_values("id")
    assert read["id"].tolist() == [900 + i for i in range(12) if i != 5]
    assert '"stray review 3' in read["text"].tolist()
    assert read_json(out / "ingest.json")["input"]["format"] == {"path": "tsv"}

    plain = tmp_path / "notes.txt"
    plain.write_text("one review per line\nanother\n", encoding="utf-8")
    with pytest.raises(IngestError, match=r"notes.txt has the extension '.txt', which source=table cannot read"):
        ingest(tmp_path / "plain", source="table", path=str(plain))


def test_train_and_test_files_share_one_label_mapping(tmp_path: Path):
    train = write_table(reviews(30), tmp_path / "train.parquet")
    test = write_table(reviews(9, classes=["happy", "angry", "calm"]), tmp_path / "test.jsonl")
    summary, out = ingest(tmp_path, source="table", path=str(train), test_path=str(test))
    assert summary["n"]["test"] == 9
    info = read_json(out / "ingest.json")
    assert info["input"]["test_from"] == "test file test.jsonl"
    test_split = split(out, "test")
    for text, label in zip(test_split["text"], test_split["label"]):
        assert f" is {info['labels'][label]}." in text


def test_rating_and_id_columns_and_raw_html(tmp_path: Path):
    frame = reviews(30).assign(stars=[i % 10 + 1 for i in range(30)], review_id=[1000 + i for i in range(30)])
    frame.loc[3, "stars"] = None
    path = write_table(frame, tmp_path / "rated.csv")
    _, out = ingest(tmp_path, source="table", path=str(path), rating_column="stars", id_column="review_id", strip_html=False)
    rows = pd.concat([split(out, name) for name in ("train", "val", "test")]).set_index("id").sort_index()
    assert rows.index.tolist() == list(range(1000, 1030))
    assert pd.isna(rows.loc[1003, "rating"]) and rows.loc[1004, "rating"] == 5
    assert rows["text"].str.contains("<br />").all(), "strip_html=false keeps the tags"


def test_ids_beyond_float_precision_stay_exact(tmp_path: Path):
    big = 2**62 + 1
    path = write_table(reviews(30).assign(tweet=[str(big + i) for i in range(30)]), tmp_path / "tweets.csv")
    _, out = ingest(tmp_path, source="table", path=str(path), id_column="tweet")
    ids = pd.concat([split(out, name) for name in ("train", "val", "test")])["id"]
    assert sorted(ids.tolist()) == [big + i for i in range(30)]


def test_same_table_same_bytes(tmp_path: Path):
    path = write_table(reviews(60), tmp_path / "moods.csv")
    _, first = ingest(tmp_path / "a", source="table", path=str(path))
    _, second = ingest(tmp_path / "b", source="table", path=str(path))
    for name in ("train.parquet", "val.parquet", "test.parquet", "ingest.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_three_classes_flow_into_encode(tmp_path: Path):
    path = write_table(reviews(60), tmp_path / "moods.csv")
    _, ingested = ingest(tmp_path, source="table", path=str(path))
    encoded = tmp_path / "encode"
    encoded.mkdir()
    encode_reviews(EncodeConfig(num_words=50, max_len=12), ingested, encoded)
    assert read_json(encoded / "labels.json") == MOODS
    _, y = load_arrays(encoded, "train")
    assert set(np.unique(y)) == {0, 1, 2}


# --------------------------------------------------------------------------- bad tables: one sentence each


def bad_table(tmp_path: Path, name: str, frame: pd.DataFrame | None = None, raw: bytes | None = None) -> Path:
    path = tmp_path / name
    if raw is not None:
        path.write_bytes(raw)
        return path
    return write_table(frame, path)


BAD_TABLES = {
    "missing file": (lambda t: t / "absent.csv", {}, r"absent.csv does not exist: pass .* --set data.path=PATH"),
    "unknown extension": (
        lambda t: bad_table(t, "moods.xlsx", raw=b"text,label\n"), {},
        r"moods.xlsx has the extension '.xlsx', which source=table cannot read: save it as .csv, .tsv, .parquet or .jsonl",
    ),
    "missing text column": (
        lambda t: bad_table(t, "moods.csv", reviews(9).rename(columns={"text": "body"})), {},
        r"has no column 'text' for data.text_column \(its columns: 'body', 'label'\): name the right one with --set data.text_column=NAME",
    ),
    "missing label column": (
        lambda t: bad_table(t, "moods.parquet", reviews(9)), {"label_column": "sentiment"},
        r"has no column 'sentiment' for data.label_column \(its columns: 'text', 'label'\)",
    ),
    "missing text": (
        lambda t: bad_table(t, "moods.csv", reviews(9).assign(text=lambda f: f["text"].where(f.index != 4))), {},
        r"has 1 missing or empty texts in column 'text', the first at row 5: drop or fill those rows",
    ),
    "blank text": (
        lambda t: bad_table(t, "moods.jsonl", reviews(9).assign(text=lambda f: f["text"].where(f.index % 3 != 1, "   "))), {},
        r"has 3 missing or empty texts in column 'text', the first at row 2",
    ),
    "missing label": (
        lambda t: bad_table(t, "moods.tsv", reviews(9).assign(label=lambda f: f["label"].where(f.index != 7))), {},
        r"has 1 missing labels in column 'label', the first at row 8: drop those rows or fill in their labels",
    ),
    "free-text labels": (
        lambda t: bad_table(t, "swapped.csv", reviews(30).rename(columns={"text": "label", "label": "text"})), {},
        r"has 30 distinct values, more than data.max_classes=20, so it looks like free text, not classes: point data.label_column",
    ),
    "one class": (
        lambda t: bad_table(t, "one.csv", reviews(9, classes=["happy"])), {},
        r"holds one class only \('happy'\): a classifier needs at least two",
    ),
    "bad split value": (
        lambda t: bad_table(t, "moods.csv", reviews(9).assign(part=["train", "test", "valid"] * 3)), {"split_column": "part"},
        r"Split column 'part' of .* holds 'valid' at row 3: use only train or test there",
    ),
    "split without test rows": (
        lambda t: bad_table(t, "moods.csv", reviews(9).assign(part="train")), {"split_column": "part"},
        r"marks no test rows: mark some, or leave data.split_column unset to split by data.test_size",
    ),
    "invalid UTF-8": (
        lambda t: bad_table(t, "latin1.csv", raw="text,label\nfine,a\nthé au lait,b\n".encode("latin-1")), {},
        r"latin1.csv is not valid UTF-8 at byte 20 \(line 3\): re-save it with UTF-8 encoding",
    ),
    "rating not a number": (
        lambda t: bad_table(t, "moods.csv", reviews(9).assign(stars=["5"] * 5 + ["five"] + ["1"] * 3)), {"rating_column": "stars"},
        r"Column 'stars' of .* \(data.rating_column\) holds 'five' at row 6, not a whole number: fix that value or leave data.rating_column unset",
    ),
    "broken JSON line": (
        lambda t: bad_table(t, "moods.jsonl", raw=b'{"text": "a", "label": 1}\n{"text": "b", "label": 2\n'), {},
        r"Line 2 of .*moods.jsonl is not valid JSON",
    ),
    "test path and split column": (
        lambda t: bad_table(t, "moods.csv", reviews(9)), {"split_column": "part", "test_path": "moods.csv"},
        r"Both data.test_path .* and data.split_column \('part'\) say where the test rows are: keep one of them",
    ),
}


@pytest.mark.parametrize("case", BAD_TABLES)
def test_bad_table_stops_with_one_sentence(tmp_path: Path, monkeypatch, case: str):
    monkeypatch.chdir(tmp_path)
    make, extra, message = BAD_TABLES[case]
    path = make(tmp_path)
    with pytest.raises(IngestError, match=message) as caught:
        ingest(tmp_path, source="table", path=str(path), **extra)
    assert not caught.value.retryable, "bad input fails the same way again: no retries"
    assert "\n" not in str(caught.value)


def test_table_source_needs_a_path(tmp_path: Path):
    with pytest.raises(IngestError, match=r"source=table reads the file named by data.path.*--set data.path="):
        locate_source(DataConfig(source="table"))


def test_invalid_utf8_offset_is_exact_across_read_blocks(tmp_path: Path):
    from tasks.ingest import first_invalid_utf8

    path = tmp_path / "long.csv"
    prefix = ("é" * 10).encode() + b"\n" + b"x" * 5
    path.write_bytes(prefix + b"\xff" + b"tail")
    for block_size in (1, 2, 3, 7, 1 << 20):  # blocks that cut the two-byte é in half, too
        assert first_invalid_utf8(path, block_size) == (len(prefix), 2)
    path.write_bytes(prefix)
    assert first_invalid_utf8(path, 3) is None


# --------------------------------------------------------------------------- keras_imdb


def write_imdb_npz(path: Path, per_split: int = 10) -> Path:
    """A tiny imdb.npz shaped like Keras' file: object arrays of int lists (word ids from 1) and 0/1 labels."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "test"):
        sequences = np.empty(per_split, dtype=object)
        labels = np.array([i % 2 for i in range(per_split)], dtype=np.int64)
        for i, label in enumerate(labels):
            sequences[i] = [1, 4 if label else 5] + [int(v) for v in rng.integers(1, 4, size=3)] + [99]
        arrays[f"x_{split}"], arrays[f"y_{split}"] = sequences, labels
    np.savez(path, **arrays)
    return path


def test_keras_imdb_is_decoded_with_the_word_index(tmp_path: Path):
    npz = write_imdb_npz(tmp_path / "imdb.npz")
    index = tmp_path / "imdb_word_index.json"
    index.write_text(json.dumps({"the": 1, "film": 2, "was": 3, "great": 4, "awful": 5}))
    summary, out = ingest(tmp_path, source="keras_imdb", path=str(npz), word_index_path=str(index), val_fraction=0.2)
    assert summary["labels"] == ["neg", "pos"]
    assert summary["n"] == {"train": 8, "val": 2, "test": 10}
    test = split(out, "test").sort_values("id")
    assert test["id"].tolist() == list(range(10)), "ids are positions in x_test"
    first = test.iloc[0]
    assert first["text"].startswith("the awful ") and first["text"].endswith(" w99"), "ids missing from the index stay w<id>"
    assert first["label"] == 0
    assert test["rating"].isna().all()


def test_keras_imdb_without_word_index_uses_id_tokens(tmp_path: Path):
    npz = write_imdb_npz(tmp_path / "imdb.npz")
    frames, labels = read_keras_imdb(npz)
    assert frames["train"]["text"].iloc[1].startswith("w1 w4 ")
    assert frames["train"]["label"].tolist()[:2] == [0, 1]


def test_keras_imdb_missing_file_names_the_key(tmp_path: Path):
    with pytest.raises(IngestError, match=r"elsewhere.npz does not exist: pass Keras' imdb.npz with --set data.path=PATH"):
        locate_source(DataConfig(source="keras_imdb", path=str(tmp_path / "elsewhere.npz")))


def test_keras_imdb_default_path_downloads_and_says_so_offline(tmp_path: Path, monkeypatch):
    import tasks.ingest.keras_imdb

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tasks.ingest.keras_imdb, "KERAS_IMDB_URL", "http://127.0.0.1:9/imdb.npz")
    with pytest.raises(IngestError, match=r"^Could not download http://127.0.0.1:9/imdb.npz .*--set data.path=/path/to/imdb.npz\.$") as caught:
        locate_source(DataConfig(source="keras_imdb"))  # data.path left at its default: data/imdb.npz
    assert caught.value.retryable
    assert not (tmp_path / "data" / "imdb.npz").exists(), "no partial download is left behind"


def test_keras_imdb_without_the_arrays_lists_what_it_has(tmp_path: Path):
    npz = tmp_path / "other.npz"
    np.savez(npz, x=np.arange(3), y=np.arange(3))
    with pytest.raises(IngestError, match=r"has no array 'x_train' \(its arrays: x, y\)"):
        read_keras_imdb(npz)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_keras_imdb_refuses_a_pickle_that_runs_code(tmp_path: Path):
    payload = _Payload()
    payload.marker = tmp_path / "pwned"
    sequences = np.empty(1, dtype=object)
    sequences[0] = payload
    np.savez(tmp_path / "evil.npz", x_train=sequences, y_train=np.array([0]), x_test=sequences, y_test=np.array([0]))
    with pytest.raises(IngestError, match=r"could not be read as Keras' imdb.npz \(it asks to run .*system"):
        read_keras_imdb(tmp_path / "evil.npz")
    assert not payload.marker.exists()
