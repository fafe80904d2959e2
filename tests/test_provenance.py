"""Provenance by construction: each step's record says what it was made with and by which run, and a rerun from a
recorded run describes its reused steps as they were made, or refuses before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cli import main
from tasks.config import ConfigError, load_config
from tasks.provenance import changed_keys, check_reuse, made_with, recorded_step_config, step_config
from tests.helpers import TINY, TINY_PRESET, manifest


def _old_manifest(run_id: str, config: dict, steps: dict) -> dict:
    """A manifest as runs recorded before steps kept their configuration."""
    return {"run_id": run_id, "status": "completed", "config": config, "steps": steps}


def test_step_config_is_what_the_cache_key_covers_keyed_by_section():
    config = load_config(TINY_PRESET, overrides=TINY)
    assert step_config("encode", config) == {"encode": config.section("encode")}
    assert set(step_config("train", config)) == {"model", "train"}
    assert "member_processes" not in step_config("train", config)["train"], "speed-only keys are not what a model is made with"
    assert step_config("validate", config)["text_rule"] == {"tokenizer": "word", "lowercase": True}
    assert step_config("promote", config)["model_name"] == "synthetic"


def test_a_change_to_a_reused_step_is_refused_in_one_sentence_naming_the_keys_and_the_rerun():
    made = load_config(TINY_PRESET, overrides=TINY)
    old = _old_manifest("A", made.as_dict(), {"encode": {"status": "completed"}})
    check_reuse(old, load_config(TINY_PRESET, overrides=[*TINY, "train.learning_rate=0.5"]), ["ingest", "validate", "encode"], "train")
    with pytest.raises(ConfigError) as refused:
        check_reuse(old, load_config(TINY_PRESET, overrides=[*TINY, "encode.num_words=300"]), ["ingest", "validate", "encode"], "train")
    assert str(refused.value) == (
        "Run A's encode output was made with other settings than this command gives (encode.num_words 200 there, 300 here), and a "
        "rerun from train takes it as it was made: recompute it with 'rnnflow run --from encode --run A ...', or leave those keys as "
        "run A had them."
    )
    assert [key for key, _, _ in changed_keys({"data": {"seed": 1, "path": "x"}}, {"data": {"seed": 2, "path": "x"}})] == ["data.seed"]


def test_an_older_runs_reused_step_is_traced_to_the_run_that_made_it():
    demo = load_config(TINY_PRESET, overrides=TINY).as_dict()
    imdb = load_config().as_dict()
    source = _old_manifest("A", demo, {"encode": {"status": "completed"}})
    # Recorded before this change: the derived run's configuration was the command line's, not its reused steps'.
    derived = _old_manifest("B", imdb, {"encode": {"status": "cached", "reused_from": "A"}})
    traced = made_with(derived, "encode", {"A": source}.get)
    assert traced == {"made_by": "A", "config": {"encode": load_config(TINY_PRESET, overrides=TINY).section("encode")}}
    assert recorded_step_config(derived, "encode")["encode"]["num_words"] == imdb["encode"]["num_words"] != 200, "the manifest alone would say the wrong thing"


@pytest.mark.slow
def test_rerun_from_train_describes_its_reused_steps_as_made_and_refuses_changing_them(prefect_api, tiny_run_copy, capsys):
    root, source = tiny_run_copy.root, tiny_run_copy.run_id
    recorded = manifest(tiny_run_copy.folder)
    assert recorded["steps"]["encode"]["made_by"] == source and recorded["steps"]["encode"]["config"]["encode"]["num_words"] == 200

    # No --preset: the base is the recorded run's configuration (preset demo, 160 reviews), not the default preset's.
    assert main(["run", "--from", "train", "--run", source, "--set", "train.learning_rate=0.02", "--artifacts", str(root)]) == 0
    derived = manifest(Path(capsys.readouterr().out.strip().splitlines()[-1]))
    assert derived["config"]["preset"] == "demo" and derived["config"]["data"]["source"] == "synthetic"
    assert derived["config"]["encode"]["num_words"] == 200 and derived["config"]["train"]["learning_rate"] == 0.02
    for step in ("ingest", "validate", "encode"):
        assert derived["steps"][step]["made_by"] == source and derived["steps"][step]["reused_from"] == source
        assert derived["steps"][step]["config"] == recorded["steps"][step]["config"]
    assert derived["steps"]["train"]["made_by"] == derived["run_id"]
    assert derived["steps"]["train"]["config"]["train"]["learning_rate"] == 0.02

    # A change to a reused step: one sentence, exit 2, before Prefect starts; no run folder is made.
    before = sorted(p.name for p in (root / "runs").iterdir())
    assert main(["run", "--from", "train", "--run", source, "--set", "encode.num_words=300", "--artifacts", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"rnnflow: error: Run {source}'s encode output was made with other settings than this command gives")
    assert f"'rnnflow run --from encode --run {source} ...'" in err
    assert sorted(p.name for p in (root / "runs").iterdir()) == before
    assert main(["step", "train", "--run", source, "--set", "data.seed=7", "--artifacts", str(root)]) == 2
    assert "ingest output was made with other settings" in capsys.readouterr().err

    # `config --run` prints what each step was made with, and by which run.
    assert main(["config", "--run", derived["run_id"], "--artifacts", str(root)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["model"] == "synthetic"
    assert shown["steps"]["encode"] == {"status": "cached", "made_by": source, "config": recorded["steps"]["encode"]["config"]}
    assert shown["steps"]["train"]["made_by"] == derived["run_id"]
