"""Shared fixtures: tiny corpora the tests make themselves, and one real Prefect API per session."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tasks.synthetic import synthetic_reviews  # noqa: E402


def make_imdb_archive(path: Path, per_class: int = 30, seed: int = 0) -> Path:
    """A .tar.gz in the aclImdb layout, with review-like texts and <br /> tags, like the real archive."""
    with tarfile.open(path, "w:gz") as archive:
        for split_index, split in enumerate(("train", "test")):
            frame = synthetic_reviews(per_class * 4, seed=seed + split_index)
            for polarity, label in (("neg", 0), ("pos", 1)):
                rows = frame[frame["label"] == label].head(per_class)
                for review_id, (text, rating) in enumerate(zip(rows["text"], rows["rating"])):
                    data = (text + f" review {split} {polarity} {review_id}.<br /><br />The end.").encode()
                    info = tarfile.TarInfo(f"aclImdb/{split}/{polarity}/{review_id}_{rating}.txt")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
        readme = b"the dataset's own description"
        info = tarfile.TarInfo("aclImdb/README")
        info.size = len(readme)
        archive.addfile(info, io.BytesIO(readme))
    return path


@pytest.fixture
def ingested(tmp_path: Path) -> Path:
    """An ingest folder of 120 synthetic reviews per split, as the ingest step writes it."""
    from tasks.config import DataConfig
    from tasks.ingest import ingest_reviews, locate_source

    cfg = DataConfig(source="synthetic", synthetic_reviews=120)
    out = tmp_path / "ingest"
    out.mkdir()
    ingest_reviews(cfg, locate_source(cfg), out)
    return out


@pytest.fixture
def imdb_archive(tmp_path: Path) -> Path:
    return make_imdb_archive(tmp_path / "aclImdb_small.tar.gz")


@pytest.fixture(scope="session")
def prefect_api():
    """A real, temporary Prefect API (server + SQLite) for the flow tests of this session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
