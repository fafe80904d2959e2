import io
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import DataConfig
from tasks.ingest import IngestError, ingest_reviews, locate_source, read_imdb, retry_unless_bad_input, stratified_split


def _ingest(tmp_path: Path, **data) -> tuple[dict, Path]:
    cfg = DataConfig(**data)
    out = tmp_path / "out"
    out.mkdir(parents=True)
    return ingest_reviews(cfg, locate_source(cfg), out), out


def test_archive_becomes_three_balanced_parquet_splits(tmp_path: Path, imdb_archive: Path):
    summary, out = _ingest(tmp_path, path=str(imdb_archive), val_fraction=0.2)
    assert summary["n"] == {"train": 48, "val": 12, "test": 60}
    train = pd.read_parquet(out / "train.parquet")
    assert list(train.columns) == ["text", "label", "rating", "id"]
    assert not train["text"].str.contains("<br").any(), "HTML line breaks become spaces"
    val = pd.read_parquet(out / "val.parquet")
    assert val["label"].value_counts().tolist() == [6, 6], "the validation split is stratified, not the tail of one class"
    assert set(train["rating"][train["label"] == 1]) <= set(range(7, 11))
    assert (out / "ingest.json").exists()


def test_unpacked_folder_reads_the_same_as_the_archive(tmp_path: Path, imdb_archive: Path):
    folder = tmp_path / "unpacked"
    with tarfile.open(imdb_archive) as archive:
        archive.extractall(folder, filter="data")
    from_archive = read_imdb(imdb_archive)
    from_folder = read_imdb(folder)
    pd.testing.assert_frame_equal(from_archive["test"], from_folder["test"])


def test_max_reviews_caps_each_split_keeping_class_shares(tmp_path: Path, imdb_archive: Path):
    summary, out = _ingest(tmp_path, path=str(imdb_archive), max_reviews=20)
    assert summary["n"]["test"] == 20
    assert pd.read_parquet(out / "test.parquet")["label"].value_counts().tolist() == [10, 10]


def test_synthetic_source_needs_no_file(tmp_path: Path):
    summary, out = _ingest(tmp_path, source="synthetic", synthetic_reviews=100)
    assert summary["n"] == {"train": 80, "val": 20, "test": 100}


def test_same_input_same_bytes(tmp_path: Path, imdb_archive: Path):
    _, first = _ingest(tmp_path / "a", path=str(imdb_archive))
    _, second = _ingest(tmp_path / "b", path=str(imdb_archive))
    for name in ("train.parquet", "val.parquet", "test.parquet"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_missing_file_names_the_path_and_the_way_out(tmp_path: Path):
    with pytest.raises(IngestError, match=r"nowhere.tar.gz does not exist.*--set data.path="):
        locate_source(DataConfig(path=str(tmp_path / "nowhere.tar.gz")))


def test_default_path_downloads_and_says_so_when_offline(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(IngestError, match=r"Could not download .*--set data.path=") as caught:
        locate_source(DataConfig(url="http://127.0.0.1:9/aclImdb_v1.tar.gz"), data_dir=tmp_path / "data")
    assert caught.value.retryable
    assert not (tmp_path / "data" / "aclImdb_v1.tar.gz").exists(), "no half-written download is left behind"


def test_corrupt_gzip_is_one_sentence_and_not_retried(tmp_path: Path, imdb_archive: Path):
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(imdb_archive.read_bytes()[:400])
    with pytest.raises(IngestError, match="could not be read.*download it again") as caught:
        read_imdb(broken)
    assert not caught.value.retryable


def test_links_inside_the_archive_are_refused(tmp_path: Path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as archive:
        info = tarfile.TarInfo("aclImdb/train/pos/1_9.txt")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        archive.addfile(info)
    with pytest.raises(IngestError, match="link or special file"):
        read_imdb(evil)


def test_path_traversal_members_are_never_read_or_written(tmp_path: Path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as archive:
        data = b"escape"
        info = tarfile.TarInfo("../../outside.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    with pytest.raises(IngestError, match="no train reviews"):
        read_imdb(evil)
    assert not (tmp_path.parent / "outside.txt").exists()


def test_empty_archive_says_what_layout_is_expected(tmp_path: Path):
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(IngestError, match=r"aclImdb/train/pos\|neg"):
        read_imdb(empty)


def test_invalid_utf8_names_the_file(tmp_path: Path):
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as archive:
        for split in ("train", "test"):
            data = b"caf\xe9 au lait" if split == "train" else b"fine"
            info = tarfile.TarInfo(f"aclImdb/{split}/pos/7_8.txt")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    with pytest.raises(IngestError, match=r"train/pos/7_8.txt .* not valid UTF-8"):
        read_imdb(bad)


def test_stratified_split_is_seeded_and_balanced():
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(100)], "label": [0] * 50 + [1] * 50})
    rest, held = stratified_split(frame, 0.2, seed=3)
    again_rest, again_held = stratified_split(frame, 0.2, seed=3)
    assert held["text"].tolist() == again_held["text"].tolist()
    assert held["label"].value_counts().tolist() == [10, 10]
    assert len(rest) == 80


def test_retry_condition_retries_network_but_not_bad_input():
    class FakeState:
        def __init__(self, error):
            self.error = error

        def result(self):
            raise self.error

    from tasks.ingest import DownloadError

    assert retry_unless_bad_input(None, None, FakeState(DownloadError("offline")))
    assert not retry_unless_bad_input(None, None, FakeState(IngestError("corrupt")))
    assert retry_unless_bad_input(None, None, FakeState(OSError("disk hiccup")))


def test_strip_html_false_keeps_the_tags(tmp_path: Path, imdb_archive: Path):
    _, out = _ingest(tmp_path, path=str(imdb_archive), strip_html=False)
    assert pd.read_parquet(out / "train.parquet")["text"].str.contains("<br /><br />").all()


def test_new_data_keys_have_their_documented_defaults():
    cfg = DataConfig()
    assert (cfg.text_column, cfg.label_column, cfg.split_column, cfg.rating_column, cfg.id_column) == ("text", "label", None, None, None)
    assert (cfg.test_path, cfg.test_size, cfg.max_classes, cfg.strip_html, cfg.word_index_path) == (None, 0.2, 20, True, None)


# --------------------------------------------------------------------------- streaming in batches


def _splits(out: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(out / f"{name}.parquet") for name in ("train", "val", "test")}


def _ingest_in_batches(tmp_path: Path, batch_rows: int, **data) -> tuple[dict, Path]:
    cfg = DataConfig(**data)
    out = tmp_path / f"batches-{batch_rows}"
    out.mkdir(parents=True)
    return ingest_reviews(cfg, locate_source(cfg), out, batch_rows=batch_rows), out


@pytest.mark.parametrize("data", [{}, {"max_reviews": 20}], ids=["all", "max_reviews"])
def test_archive_streamed_in_small_batches_gives_the_same_splits(tmp_path: Path, imdb_archive: Path, data: dict):
    whole, whole_out = _ingest_in_batches(tmp_path, 10_000, path=str(imdb_archive), **data)
    small, small_out = _ingest_in_batches(tmp_path, 7, path=str(imdb_archive), **data)
    assert small == whole
    for name, frame in _splits(whole_out).items():
        pd.testing.assert_frame_equal(_splits(small_out)[name], frame)
    assert (small_out / "ingest.json").read_text() == (whole_out / "ingest.json").read_text()
    assert sorted(p.name for p in small_out.iterdir()) == ["ingest.json", "test.parquet", "train.parquet", "val.parquet"], (
        "the spill and bucket files are gone"
    )


def test_synthetic_corpus_does_not_depend_on_the_batch_size(tmp_path: Path):
    _, whole = _ingest_in_batches(tmp_path, 10_000, source="synthetic", synthetic_reviews=300)
    _, small = _ingest_in_batches(tmp_path, 11, source="synthetic", synthetic_reviews=300)
    for name, frame in _splits(whole).items():
        pd.testing.assert_frame_equal(_splits(small)[name], frame)


def test_table_errors_count_rows_across_batches(tmp_path: Path):
    frame = pd.DataFrame({"text": [f"review {i}" for i in range(40)], "label": ["pos", "neg"] * 20})
    frame.loc[[25, 33], "text"] = ""
    path = tmp_path / "reviews.parquet"
    frame.to_parquet(path, index=False)
    with pytest.raises(IngestError, match=r"has 2 missing or empty texts in column 'text', the first at row 26: drop or fill those rows"):
        _ingest_in_batches(tmp_path, 10, source="table", path=str(path))
    assert not list((tmp_path / "batches-10").iterdir()), "a failed ingest leaves nothing behind"
