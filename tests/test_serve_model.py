"""`rnnflow serve-model`: a real uvicorn on 127.0.0.1 answering with the champion, called with a real HTTP client."""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pandas as pd
import pytest

from flows.cli import main
from tasks.config import DataConfig, ServeConfig
from tasks.evaluate import predict_probabilities
from tasks.predict import load_predictor
from tasks.serving import ChampionServer
from tasks.store import ArtifactStore
from tasks.synthetic import synthetic_reviews
from tests.bucket_fixtures import free_port
from tests.helpers import manifest


@contextlib.contextmanager
def serving(root: Path, **limits) -> Iterator[httpx.Client]:
    """The endpoint on a free port of 127.0.0.1, in a thread of this process, stopped after."""
    import uvicorn

    from flows.serve_model import build_app

    config = ServeConfig(**{"check_seconds": 0, **limits})
    champion = ChampionServer(ArtifactStore(root), None, config.check_seconds)
    champion.start()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(champion, config), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start within 30 s"
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def health_until(client: httpx.Client, done, seconds: float = 30) -> dict:
    """GET /health until done(answer) (each call may start a background check), or the last answer."""
    deadline = time.monotonic() + seconds
    while True:
        answer = client.get("/health").json()
        if done(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)


def copy_run(root: Path, source_id: str, new_id: str) -> Path:
    """Another run folder with the same files (a retrained champion, for the server's purposes)."""
    folder = shutil.copytree(root / "runs" / source_id, root / "runs" / new_id)
    data = manifest(folder)
    data["run_id"] = new_id
    (folder / "manifest.json").write_text(json.dumps(data))
    return folder


def point_champion_at(root: Path, run_id: str) -> None:
    record = json.loads((root / "champion.json").read_text())
    for pointer in record["models"].values():
        pointer["run_id"] = run_id
    (root / "champion.json").write_text(json.dumps(record))


@pytest.mark.slow
def test_endpoint_answers_as_training_scored_the_raw_test_texts(tiny_run):
    """Train/serve agreement through HTTP: the raw test texts posted give the probabilities the model gives the
    arrays encode made for training, and the labels `rnnflow predict` would print."""
    run = tiny_run.folder
    data = DataConfig(**manifest(run)["config"]["data"])
    raw = synthetic_reviews(data.synthetic_reviews, data.synthetic_positive_fraction, seed=data.seed + 1).set_index("id")["text"]
    ids = pd.read_parquet(run / "ingest" / "test.parquet")["id"]
    texts = raw.loc[ids].tolist()[:40]
    predictor = load_predictor(run)
    expected = predict_probabilities(predictor.model, np.load(run / "encode" / "X_test.npy")[:40])
    with serving(tiny_run.root) as client:
        health = client.get("/health").json()
        answer = client.post("/predict", json={"texts": texts})
    assert health["status"] == "ok" and health["run_id"] == tiny_run.run_id and health["labels"] == predictor.labels
    assert answer.status_code == 200
    body = answer.json()
    assert body["run_id"] == tiny_run.run_id and len(body["predictions"]) == 40
    got = np.array([[p["probabilities"][label] for label in predictor.labels] for p in body["predictions"]])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert [p["label"] for p in body["predictions"]] == [predictor.labels[i] for i in expected.argmax(axis=1)]


@pytest.mark.slow
def test_requests_over_the_limits_are_refused_with_one_sentence(tiny_run):
    with serving(tiny_run.root, max_texts=2, max_text_bytes=50) as client:
        too_many = client.post("/predict", json={"texts": ["a", "b", "c"]})
        too_long = client.post("/predict", json={"texts": ["fine", "é" * 30]})
        not_texts = client.post("/predict", json={"texts": "one string"})
        not_json = client.post("/predict", content=b"texts=a", headers={"content-type": "application/json"})
        huge = client.post("/predict", json={"texts": ["x" * 2000]})
        empty = client.post("/predict", json={"texts": []})
        ok = client.post("/predict", json={"texts": ["a fine film", ""]})
    assert too_many.status_code == 413
    assert too_many.json()["detail"] == "The request holds 3 texts, more than serve.max_texts (2): split it into calls of at most 2."
    assert too_long.status_code == 413
    assert too_long.json()["detail"] == "Text 1 holds 60 bytes, more than serve.max_text_bytes (50): shorten it, or raise the limit."
    assert not_texts.status_code == 422 and "texts: Input should be a valid list" in not_texts.json()["detail"]
    assert not_json.status_code == 422 and not_json.json()["detail"].startswith("The request body is not {\"texts\"")
    assert huge.status_code == 413 and "serve.max_text_bytes" in huge.json()["detail"]
    assert empty.status_code == 422 and "no texts" in empty.json()["detail"]
    assert ok.status_code == 200 and [p["empty"] for p in ok.json()["predictions"]] == [False, True]


@pytest.mark.slow
def test_a_new_champion_is_served_without_a_restart_and_a_broken_one_keeps_the_old(tiny_run_copy):
    root, first = tiny_run_copy.root, tiny_run_copy.run_id
    with serving(root) as client:
        assert client.get("/health").json()["run_id"] == first
        copy_run(root, first, "20260102T000000000Z-next")
        point_champion_at(root, "20260102T000000000Z-next")
        health = health_until(client, lambda h: h["run_id"] != first)
        assert health["run_id"] == "20260102T000000000Z-next" and health["status"] == "ok"
        assert client.post("/predict", json={"texts": ["a film"]}).json()["run_id"] == "20260102T000000000Z-next"

        broken = copy_run(root, first, "20260103T000000000Z-bad")
        model = broken / "train" / "model.keras"
        model.write_bytes(model.read_bytes()[:100])
        point_champion_at(root, broken.name)
        health = health_until(client, lambda h: h["problem"] is not None)
        assert health["status"] == "degraded" and health["run_id"] == "20260102T000000000Z-next"
        assert health["problem"]["run_id"] == broken.name
        assert "champion 20260103T000000000Z-bad could not be loaded" in health["problem"]["error"]
        assert "still serving 20260102T000000000Z-next" in health["problem"]["error"]
        assert client.post("/predict", json={"texts": ["a film"]}).json()["run_id"] == "20260102T000000000Z-next"


def test_serve_model_without_a_champion_exits_2_with_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code = main(["serve-model", "--artifacts", str(tmp_path / "empty"), "--port", str(free_port())])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("rnnflow: error: No champion under") and err.count("\n") == 0


def test_serve_model_on_a_port_in_use_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code = main(["serve-model", "--artifacts", str(tmp_path), "--port", str(port)])
    assert code == 2
    assert f"Cannot listen on 127.0.0.1:{port} (it is in use): choose another with --port or --host." in capsys.readouterr().err
