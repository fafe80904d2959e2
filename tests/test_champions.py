"""A champion per model: two models in one artifacts root, each compared only with its own champion; an old root's
single champion pointer reads (and is rewritten) without loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cli import main
from tasks.config import load_config
from tasks.promote import Candidate, promote
from tasks.store import ArtifactStore, RunNotFoundError, read_json

SETTINGS = {"enabled": True, "metric": "accuracy", "min_delta": 0.0, "floors": {}}
KOREAN = ["data.source=table", "data.path=/reviews/ko_reviews_train.tsv", "data.text_column=document"]


def _run(store: ArtifactStore, run_id: str, overrides: list[str], accuracy: float) -> Candidate:
    """A completed run folder recorded with the configuration overrides give (no model: nothing here re-scores)."""
    config = load_config("demo", overrides=overrides)
    record = store.start_run(config.as_dict(), run_id=run_id)
    (record.folder / "evaluate").mkdir()
    (record.folder / "evaluate" / "metrics.json").write_text(json.dumps({"test": {"accuracy": accuracy}}))
    record.manifest["steps"]["ingest"] = {"status": "completed", "outputs": {"test.parquet": f"texts of {config.model_name}"}}
    record.finish("completed")
    return Candidate(run_id=run_id, model=config.model_name, test={"accuracy": accuracy}, labels=["neg", "pos"],
                     test_fingerprint=f"texts of {config.model_name}")


def test_the_model_name_comes_from_the_data_unless_promote_model_names_it():
    assert load_config("demo").model_name == "synthetic"
    assert load_config().model_name == "imdb-aclImdb_v1"
    assert load_config("demo", overrides=KOREAN).model_name == "table-ko_reviews_train"
    assert load_config("demo", overrides=[*KOREAN, "data.label_column=stars"]).model_name == "table-ko_reviews_train-stars"
    assert load_config("demo", overrides=[*KOREAN, "promote.model=korean-nightly"]).model_name == "korean-nightly"


def test_two_models_in_one_root_each_keep_their_champion(tmp_path: Path, capsys):
    store = ArtifactStore(tmp_path / "artifacts")
    demo = promote(store, _run(store, "20260101T000000000Z-demo", [], 0.62), SETTINGS)
    korean = promote(store, _run(store, "20260101T000000001Z-kore", KOREAN, 0.55), SETTINGS)
    # A worse run of another model is not compared with the demo's champion: it is its own model's first.
    assert demo["promoted"] and korean["promoted"]
    assert korean["reason"] == "first run: there is no champion yet" and korean["model"] == "table-ko_reviews_train"
    worse = promote(store, _run(store, "20260101T000000002Z-demo", [], 0.60), SETTINGS)
    assert not worse["promoted"] and worse["champion"]["run_id"] == "20260101T000000000Z-demo"
    record = read_json(store.champions.file)
    assert record["format"] == 2 and sorted(record["models"]) == ["synthetic", "table-ko_reviews_train"]

    assert main(["champion", "--artifacts", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "model        synthetic\nchampion     20260101T000000000Z-demo" in out
    assert "model        table-ko_reviews_train\nchampion     20260101T000000001Z-kore" in out
    assert main(["champion", "--model", "synthetic", "--artifacts", str(store.root)]) == 0
    assert "table-ko_reviews_train" not in capsys.readouterr().out

    # Which champion? One sentence, exit 2, when the root holds several and --model is left out.
    assert main(["predict", "--run", "champion", "a fine film", "--artifacts", str(store.root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"rnnflow: error: {store.root} holds champions of 2 models (synthetic, table-ko_reviews_train): "
                   "name one with --model NAME.")
    assert store.resolve_run("champion", "table-ko_reviews_train").name == "20260101T000000001Z-kore"
    with pytest.raises(RunNotFoundError, match="No champion of model 'nope'"):
        store.resolve_run("champion", "nope")

    assert main(["runs", "--artifacts", str(store.root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["run", "id", "status", "model", "preset"]
    assert "table-ko_reviews_train" in lines[2] and "synthetic" in lines[1]


def test_an_old_single_champion_pointer_reads_as_its_runs_model_and_migrates_without_loss(tmp_path: Path):
    store = ArtifactStore(tmp_path / "artifacts")
    _run(store, "20250101T000000000Z-old", [], 0.70)
    old = {"run_id": "20250101T000000000Z-old", "promoted_at": "2025-01-01T00:00:00+00:00", "metric": "accuracy", "value": 0.7,
           "decided_by": "rnnflow promote step", "reason": "first run: there is no champion yet", "forced": False, "previous_run_id": None}
    store.champions.file.write_text(json.dumps(old))
    assert store.champions.read_all() == {"synthetic": {**old, "model": "synthetic"}}
    assert store.resolve_run("champion").name == "20250101T000000000Z-old"

    # The next promotion (of another model) writes the new shape and keeps the old champion whole.
    promote(store, _run(store, "20260101T000000000Z-kore", KOREAN, 0.5), SETTINGS)
    models = read_json(store.champions.file)["models"]
    assert models["synthetic"] == {**old, "model": "synthetic"}
    assert models["table-ko_reviews_train"]["run_id"] == "20260101T000000000Z-kore"


def test_an_old_pointer_to_a_gone_run_is_succeeded_by_the_next_promotion(tmp_path: Path):
    store = ArtifactStore(tmp_path / "artifacts")
    store.root.mkdir()
    store.champions.file.write_text(json.dumps({"run_id": "20250101T000000000Z-gone"}))
    assert list(store.champions.read_all()) == ["legacy"], "its model cannot be read: the run is gone"
    promote(store, _run(store, "20260101T000000000Z-demo", [], 0.6), SETTINGS)
    models = read_json(store.champions.file)["models"]
    assert list(models) == ["synthetic"] and models["synthetic"]["previous_run_id"] == "20250101T000000000Z-gone"
