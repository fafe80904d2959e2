"""model.task next_token: a character model trained one step ahead, scored per step, and `rnnflow generate`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.cli import main
from tasks.config import ConfigError, DataConfig, EncodeConfig, ModelConfig, TrainConfig, load_config
from tasks.encode import encode_reviews
from tasks.evaluate import evaluate_model
from tasks.generate import GenerationError, generate, load_generator
from tasks.ingest import ingest_reviews, locate_source
from tasks.models import build_model, cudnn_eligible, next_token_arrays
from tasks.promote import Candidate, decide, score_champion
from tasks.report import write_report
from tasks.store import ArtifactStore, StepOutput, read_json, write_json
from tasks.train import train_model

RUN_ID = "20260101T000000000Z-next"
WORDS = ("hello", "world")
# After "hel" a character alone cannot say whether "l" or "o" comes next: the recurrent state must.
MODEL = ModelConfig(task="next_token", cell="gru", units=16, embedding_dim=8, bidirectional=False)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifacts root with one completed next_token run, made by the step functions on two words."""
    root = tmp_path_factory.mktemp("artifacts")
    corpus = root / "words.csv"
    pd.DataFrame({"text": [WORDS[i % 2] for i in range(60)], "label": [i % 2 for i in range(60)]}).to_csv(corpus, index=False)
    data = DataConfig(source="table", path=str(corpus), seed=1)
    run = root / "runs" / RUN_ID
    for step in ("ingest", "encode", "train", "evaluate"):
        (run / step).mkdir(parents=True)
    ingest_reviews(data, locate_source(data), run / "ingest")
    # Pre-padding on purpose: train lays the rows out right-padded whatever encode did.
    encode_reviews(EncodeConfig(tokenizer="char", num_words=20, max_len=8, padding="pre"), run / "ingest", run / "encode")
    train_model(MODEL, TrainConfig(epochs=20, patience=20, batch_size=8, learning_rate=0.02), run / "encode", run / "train")
    evaluate_model(run / "encode", run / "train", run / "evaluate")
    config = {"data": data.model_dump(mode="json"), "model": MODEL.model_dump(mode="json")}
    write_json(run / "manifest.json", {"run_id": RUN_ID, "status": "completed", "config": config, "steps": {}})
    return root


@pytest.fixture(scope="module")
def run(root: Path) -> Path:
    return root / "runs" / RUN_ID


@pytest.mark.slow
def test_trained_model_spells_the_words_from_their_start(run: Path):
    generator = load_generator(run)
    assert generate(generator, "hel") == "hello"
    assert generate(generator, "wor", length=50) == "world"  # it ends the word itself, well before 50
    assert generate(generator, "hel", length=1) == "hell"


@pytest.mark.slow
def test_temperature_draws_only_known_characters(run: Path):
    text = generate(load_generator(run), "h", length=10, temperature=1.5, seed=0)
    assert text.startswith("h") and len(text) <= 11 and set(text) <= set("helowrd")


def test_rows_shift_by_one_step_and_padding_weighs_nothing():
    post = np.array([[1, 5, 6, 7, 0, 0]])
    pre = np.array([[0, 0, 1, 5, 6, 7]])
    for rows in (post, pre):
        inputs, targets, weights = next_token_arrays(rows)
        assert inputs.tolist() == [[1, 5, 6, 7, 0]]
        assert targets.tolist() == [[5, 6, 7, 0, 0]]
        # The step after the last character counts (its answer is "the text ends"); padding steps do not.
        assert weights.tolist() == [[1, 1, 1, 1, 0]]


@pytest.mark.slow
def test_train_and_evaluate_record_per_step_numbers(run: Path):
    training = read_json(run / "train" / "train.json")
    assert training["task"] == "next_token" and "rnnflow generate" in training["model_text"]
    assert not (run / "train" / "model_text.keras").exists()
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(read_json(run / "train" / "history.json"))
    metrics = read_json(run / "evaluate" / "metrics.json")
    test = metrics["test"]
    assert metrics["task"] == "next_token" and test["roc_auc"] is None
    # 6 steps a word (start -> h e l l o -> end); only the first character is a guess between the two words.
    assert test["steps"] == 6 * test["n"]
    assert 5 / 6 - 0.1 <= test["accuracy"] <= 1 and 0 <= test["loss"] < 0.7 and 0 <= test["f1"] <= 1


@pytest.mark.slow
def test_report_reads_a_next_token_run(run: Path, tmp_path: Path):
    run = shutil.copytree(run, tmp_path / "run")  # the module's run stays as the steps left it
    (run / "validate").mkdir(exist_ok=True)
    write_json(run / "validate" / "validation.json", {"passed": True, "checks": []})
    upstream = {step: StepOutput(step=step, key="k", dir=str(run / step), files={}) for step in ("validate", "encode", "train", "evaluate")}
    summary = write_report({"preset": "test", "model": MODEL.model_dump(mode="json")}, upstream, tmp_path / "report")
    assert summary["accuracy"] is not None
    assert "likeliest next character" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.slow
def test_cli_generate_prints_the_continued_text(root: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["generate", "--artifacts", str(root), "--run", "latest", "--prompt", "wor"]) == 0
    assert capsys.readouterr().out.splitlines() == ["world"]


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def classifier_run(root: Path, run: Path) -> str:
    """A run recorded before model.task: its train.json has no task, so it is a classifier."""
    run_id = "20250101T000000000Z-old"
    shutil.copytree(run, root / "runs" / run_id)
    training = read_json(root / "runs" / run_id / "train" / "train.json")
    write_json(root / "runs" / run_id / "train" / "train.json", {k: v for k, v in training.items() if k != "task"})
    write_json(root / "runs" / run_id / "manifest.json", {"run_id": run_id, "status": "completed", "config": {}, "steps": {}})
    return run_id


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--prompt", "#~"], "has no character the run's vocabulary knows"),
        (["--run", "20990101T000000000Z-none", "--prompt", "hel"], "No run '20990101T000000000Z-none'"),
        (["--prompt", "hel", "--length", "-1"], "--length must be 0 or more"),
        (["--prompt", "hel", "--temperature", "-0.5"], "--temperature must be 0"),
    ],
)
def test_cli_generate_bad_input_exits_2_with_one_sentence(root: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str):
    assert main(["generate", "--artifacts", str(root), "--run", RUN_ID, *args]) == 2
    assert expected in _error(capsys)


@pytest.mark.slow
def test_generate_refuses_a_classifier_and_predict_refuses_next_token(root: Path, classifier_run: str, capsys: pytest.CaptureFixture[str]):
    assert main(["generate", "--artifacts", str(root), "--run", classifier_run, "--prompt", "hel"]) == 2
    assert "holds a classify model" in _error(capsys)
    with pytest.raises(GenerationError):
        load_generator(root / "runs" / classifier_run)
    assert main(["predict", "--artifacts", str(root), "--run", RUN_ID, "hello"]) == 2
    assert f"rnnflow generate --run {RUN_ID}" in _error(capsys)


@pytest.mark.slow
def test_promotion_never_compares_next_token_with_a_classifier(root: Path, classifier_run: str):
    write_json(root / "runs" / classifier_run / "evaluate" / "metrics.json", {"test": {"accuracy": 0.5}})  # a classifier's
    candidate = Candidate(run_id=RUN_ID, test={"accuracy": 0.9}, task="next_token")
    champion = score_champion(ArtifactStore(root), classifier_run, candidate, "accuracy")
    assert champion.value is None and "does not compare" in champion.note
    assert decide(candidate, champion, {})["outcome"] == "not_promoted"


def test_config_needs_the_char_tokenizer_and_a_one_way_model():
    config = load_config("seed-char-next")
    assert config.model.task == "next_token" and config.encode.tokenizer == "char"
    with pytest.raises(ConfigError, match="needs encode.tokenizer char"):
        load_config(overrides=["model.task=next_token"])
    with pytest.raises(ConfigError, match="model.bidirectional=false"):
        load_config("seed-char-next", overrides=["model.bidirectional=true"])


def test_next_token_model_predicts_every_step_on_the_cudnn_path():
    model = build_model(MODEL, num_tokens=20, max_len=8, n_classes=2)
    assert model.output_shape == (None, None, 20)
    assert model.predict(np.array([[1, 5, 6, 0]]), verbose=0).shape == (1, 4, 20)
    # Rows are laid out right-padded for training, so masking with encode's pre-padding still fits cuDNN.
    assert cudnn_eligible(MODEL.model_copy(update={"cell": "lstm"}), "pre")
