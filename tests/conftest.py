"""Shared fixtures: tiny corpora the tests make themselves, one real Prefect API per session, and one finished tiny
run per session that every test reading a finished run shares (tests that change a run work on a copy of it).

The helpers these are built from live in tests/helpers.py; test modules import them from there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Prefect's console log handler writes to the sys.stderr of the moment Prefect sets up its logging (on import). Set it
# up here, on pytest's capture that lasts the session: set up inside a test that uses capsys, it would write to that
# test's stream, closed when the test ends, and every later Prefect log line would fail (a module run alone did).
import prefect.main  # noqa: E402,F401

from tests.helpers import TINY_RUN_ID, copy_root, make_imdb_archive, tiny_config, tree_digest  # noqa: E402

# Fixtures that train a model or start Prefect: a test using any of them is slow, and must say so.
SLOW_FIXTURES = {"prefect_api", "tiny_run", "tiny_run_copy"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`pytest -m "not slow"` is the quick loop: refuse a test that uses a slow fixture without @pytest.mark.slow."""
    unmarked = [item.nodeid for item in items
                if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError(
            f"mark these tests @pytest.mark.slow: they use one of {sorted(SLOW_FIXTURES)}: " + ", ".join(unmarked)
        )


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
    """A real, temporary Prefect API (server + SQLite) for the flow tests of this session.

    Each xdist worker starts its own, often both at once: on a shared 2-core machine at a load average of 25 that took
    over 120 s, and every test using it failed. The wait is all the longer timeout changes; on a quiet machine the
    server is up in seconds."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        yield


# --------------------------------------------------------------------------- one finished tiny run


@dataclass(frozen=True)
class TinyRun:
    root: Path  # the artifacts root: runs/, cache/, prefect/, champion.json
    folder: Path  # root / "runs" / TINY_RUN_ID

    @property
    def run_id(self) -> str:
        return self.folder.name


@dataclass(frozen=True)
class _Pristine:
    run: TinyRun
    digest: dict[str, str]


@pytest.fixture(scope="session")
def _tiny_run_once(prefect_api, tmp_path_factory: pytest.TempPathFactory) -> _Pristine:
    """The tiny configuration run once through the whole flow (rnnflow_pipeline, the test Prefect API), into a
    fresh artifacts root: every step completed, the run its root's champion. Its digest is kept to check it stays so."""
    from flows.pipeline import rnnflow_pipeline

    root = tmp_path_factory.mktemp("tiny-run") / "artifacts"
    folder = Path(rnnflow_pipeline(config=tiny_config(), artifacts_root=str(root), run_id=TINY_RUN_ID))
    return _Pristine(TinyRun(root=root, folder=folder), tree_digest(root))


def _check_pristine(pristine: _Pristine) -> None:
    now = tree_digest(pristine.run.root)
    if now != pristine.digest:
        differ = sorted(name for name in set(now) | set(pristine.digest) if now.get(name) != pristine.digest.get(name))
        pytest.fail(f"this test changed the shared tiny run ({', '.join(differ[:5])}): change a tiny_run_copy instead")


@pytest.fixture
def tiny_run(_tiny_run_once: _Pristine) -> Iterator[TinyRun]:
    """The session's finished tiny run, to read only: after the test, its root must be byte for byte as it was."""
    yield _tiny_run_once.run
    _check_pristine(_tiny_run_once)


@pytest.fixture
def tiny_run_copy(_tiny_run_once: _Pristine, tmp_path: Path) -> Iterator[TinyRun]:
    """A private copy of the tiny run's whole artifacts root (under tmp_path/artifacts), to change at will.

    As with any artifacts root copied elsewhere, a later run in the copy that finds a step in the cache reads
    that step's files where the cached result says they are: in the shared root. tiny_run's check catches a
    test that would write there, as it does for tiny_run.
    """
    root = copy_root(_tiny_run_once.run.root, tmp_path / "artifacts")
    yield TinyRun(root=root, folder=root / "runs" / TINY_RUN_ID)
    _check_pristine(_tiny_run_once)
