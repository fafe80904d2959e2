"""Data that passes every gate and still cannot make a model (issue 29, cases 7 and 8).

8: a table too small to split (one review per class), or a data.max_reviews that leaves a class nothing to train on,
   stops at ingest with one sentence naming the class counts and the key to change, an IngestError that is not retried.
7: reviews without spaces under the word tokenizer become one or two "words" each: validation's chars_per_token check
   names the degenerate encoding and the tokenizer to use (below); a model that predicts one class for every test review
   is not promoted (tests/test_promote.py).

Fast and offline: tiny made-up tables, plain functions; the one flow test is marked slow.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.config import ConfigError, DataConfig, ValidateConfig, load_config
from tasks.ingest import IngestError, ingest_reviews, locate_source, retry_unless_bad_input, stratified_split
from tasks.store import read_json
from tasks.validate import TextRule, first_error, validate_reviews


def _ingest(tmp_path: Path, **data) -> tuple[dict, Path]:
    cfg = DataConfig(**data)
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    return ingest_reviews(cfg, locate_source(cfg), out), out


def _table(path: Path, per_class: int, labels: tuple[str, ...] = ("neg", "pos"), **columns) -> Path:
    n = per_class * len(labels)
    frame = pd.DataFrame({"text": [f"review number {i} says things" for i in range(n)], "label": [labels[i % len(labels)] for i in range(n)], **columns})
    frame.to_csv(path, index=False)
    return path


class _FailedState:
    def __init__(self, error: BaseException):
        self.error = error

    def result(self):
        raise self.error


# --------------------------------------------------------------------------- 8. too small to split


def test_one_review_per_class_is_one_sentence_with_the_counts_and_is_not_retried(tmp_path: Path):
    path = _table(tmp_path / "one.csv", per_class=1)
    message = (
        f"{path} holds too few reviews of classes 'neg' and 'pos' (neg 1, pos 1) to keep one for each of train, validation and test: "
        "with data.test_size=0.2 and data.val_fraction=0.2 each class needs at least 3; add reviews of classes 'neg' and 'pos'."
    )
    with pytest.raises(IngestError, match=f"^{re.escape(message)}$") as caught:
        _ingest(tmp_path, source="table", path=str(path))
    assert not retry_unless_bad_input(None, None, _FailedState(caught.value)), "bad input fails the same way again: no retry"
    assert not list((tmp_path / "out").glob("*.parquet")), "no split is written"


def test_fractions_that_leave_a_class_nothing_name_the_fraction_keys(tmp_path: Path):
    path = _table(tmp_path / "three.csv", per_class=3)
    with pytest.raises(IngestError, match=re.escape(
        "(neg 3, pos 3) to keep one for each of train, validation and test: with data.test_size=0.5 and data.val_fraction=0.2 "
        "each class needs at least 4; lower data.test_size or data.val_fraction, or add reviews of classes 'neg' and 'pos'."
    )):
        _ingest(tmp_path, source="table", path=str(path), test_size=0.5)


def test_a_class_too_small_for_the_split_files_train_rows_is_named_with_where_it_is(tmp_path: Path):
    train, test = _table(tmp_path / "train.csv", per_class=1), _table(tmp_path / "test.csv", per_class=2)
    with pytest.raises(IngestError, match=re.escape(
        f"The train rows of {train} hold too few reviews of classes 'neg' and 'pos' (neg 1, pos 1) to keep one for each of train and validation: "
        "with data.val_fraction=0.2 each class needs at least 2; add reviews of classes 'neg' and 'pos'."
    )):
        _ingest(tmp_path, source="table", path=str(train), test_path=str(test))


def test_max_reviews_too_small_names_the_key_and_the_least_that_works(tmp_path: Path):
    message = (
        "data.max_reviews=2 keeps 1 review of class 'neg' in train (neg 1, pos 1), too few to carve the validation split "
        "(data.val_fraction=0.2) and keep one to train on: raise data.max_reviews to at least 4."
    )
    with pytest.raises(IngestError, match=f"^{re.escape(message)}$") as caught:
        _ingest(tmp_path, source="synthetic", synthetic_reviews=160, max_reviews=2)
    assert "160" not in str(caught.value) and "too few rows" not in str(caught.value)
    summary, _ = _ingest(tmp_path / "enough", source="synthetic", synthetic_reviews=160, max_reviews=4)
    assert summary["n"] == {"train": 2, "val": 2, "test": 4}


def test_the_smallest_tables_that_can_split_still_ingest_with_every_class_in_every_split(tmp_path: Path):
    one_file = _table(tmp_path / "three.csv", per_class=3)  # test 1, validation 1, train 1 per class
    _, out = _ingest(tmp_path / "a", source="table", path=str(one_file))
    split_column = _table(tmp_path / "split.csv", per_class=3, part=["train"] * 4 + ["test"] * 2)
    _, out_split = _ingest(tmp_path / "b", source="table", path=str(split_column), split_column="part")
    capped = _ingest(tmp_path / "c", source="table", path=str(one_file), max_reviews=3)[1]
    for folder in (out, out_split, capped):
        counts = read_json(folder / "ingest.json")["label_counts"]
        assert counts == {split: {"neg": 1, "pos": 1} for split in ("train", "val", "test")}, folder


def test_stratified_split_of_no_rows_is_two_empty_splits():
    rest, held = stratified_split(pd.DataFrame({"label": pd.Series([], dtype="int64"), "id": pd.Series([], dtype="int64")}), 0.2, seed=1)
    assert (len(rest), len(held)) == (0, 0)


@pytest.mark.slow
def test_a_run_on_a_one_review_per_class_table_fails_ingest_once_with_the_sentence(tmp_path: Path, prefect_api, monkeypatch, capsys):
    import tasks.ingest
    from flows.cli import main

    calls = []
    real = tasks.ingest.ingest_reviews
    monkeypatch.setattr(tasks.ingest, "ingest_reviews", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    path = _table(tmp_path / "one.csv", per_class=1)
    args = ["run", "--preset", "demo", "--set", "data.source=table", "--set", f"data.path={path}", "--artifacts", str(tmp_path / "art")]
    assert main(args) == 1
    assert len(calls) == 1, "bad input is not retried"
    err = capsys.readouterr().err
    assert "rnnflow: step ingest failed: " + f"{path} holds too few reviews of classes 'neg' and 'pos' (neg 1, pos 1)" in err
    assert "need at least one array" not in err


# --------------------------------------------------------------------------- 7. text without spaces under the word tokenizer

HIRAGANA = [chr(code) for code in range(0x3041, 0x3094)]
KANJI = list("映画物語俳優演技監督音楽場面結末脚本主人公時間最初最後感動笑涙心本当今年作品世界")
CUES = (["最悪", "退屈", "つまらない", "がっかり"], ["素晴らしい", "最高", "面白い", "感動した"])


def japanese_like(i: int, label: int) -> str:
    """A made-up review of one or two sentences without spaces, dozens of characters long, with a cue to its class."""
    rng = np.random.default_rng(i)
    sentences = []
    for _ in range(1 + i % 2):
        filler = "".join(rng.choice(KANJI + HIRAGANA, size=int(rng.integers(14, 30))))
        sentences.append(filler + CUES[label][int(rng.integers(4))] + "".join(rng.choice(HIRAGANA, size=3)) + "。")
    return "".join(sentences)


def _japanese_table(path: Path, per_class: int = 60) -> Path:
    labels = [i % 2 for i in range(2 * per_class)]
    pd.DataFrame({"text": [japanese_like(i, k) for i, k in enumerate(labels)], "label": [("neg", "pos")[k] for k in labels]}).to_csv(path, index=False)
    return path


def _validate_table(tmp_path: Path, path: Path, cfg: ValidateConfig | None = None, **rule) -> tuple[dict, dict]:
    _, ingest = _ingest(tmp_path, source="table", path=str(path))
    summary = validate_reviews(cfg or ValidateConfig(), ingest, tmp_path / "validate", text_rule=TextRule(**rule))
    return summary, read_json(tmp_path / "validate" / "validation.json")


@pytest.mark.parametrize("rule", [{"tokenizer": "word"}, {"tokenizer": "auto", "num_words": 400}])
def test_text_without_spaces_under_words_fails_validation_naming_the_tokenizer_fix(tmp_path: Path, rule: dict):
    summary, report = _validate_table(tmp_path, _japanese_table(tmp_path / "ja.csv"), **rule)
    assert report["tokenizer_resolved"] == "word", "auto counts few enough distinct 'words' here to choose words"
    assert summary["passed"] is False
    check = next(c for c in report["checks"] if c["check"] == "chars_per_token" and c["split"] == "train")
    assert check["severity"] == "error" and not check["passed"] and check["observed"] > 12
    message = first_error(summary)
    why = " (tokenizer auto chose word tokens)" if rule["tokenizer"] == "auto" else ""
    assert re.fullmatch(
        rf"Check chars_per_token failed on split train: the median review has \d+\.\d characters per word; reviews have a median of "
        rf"\d+(\.\d+)? characters and [12](\.5)? words?{re.escape(why)}, bound at most 12 characters per word \(validate\.max_chars_per_token\); "
        r"the word tokenizer hardly splits this text \(as with languages written without spaces\): set encode\.tokenizer to subword or char "
        r"\(--set encode\.tokenizer=subword\), or raise validate\.max_chars_per_token if the words are this long\.",
        message,
    ), message
    assert report["length_stats"]["train"]["max"] <= 2, "one or two 'words' a review"
    suites = read_json(tmp_path / "validate" / "gx" / "suite.json")
    assert any(e["kwargs"].get("column") == "chars_per_token" for e in suites["reviews"]["expectations"])


@pytest.mark.parametrize("tokenizer", ["subword", "char"])
def test_text_without_spaces_passes_under_subwords_and_characters(tmp_path: Path, tokenizer: str):
    summary, report = _validate_table(tmp_path, _japanese_table(tmp_path / "ja.csv"), tokenizer=tokenizer)
    assert summary["passed"] is True, summary["errors"]
    checks = [c for c in report["checks"] if c["check"] == "chars_per_token"]
    assert len(checks) == 3 and all(c["passed"] and c["observed"] <= 1.1 for c in checks)


def test_spaced_languages_pass_chars_per_token(tmp_path: Path):
    texts = {
        "english": "The acting was wonderful and the story kept me watching until the very end, a great film",
        "german": "Die Schauspieler überzeugen, aber die Handlung ist vorhersehbar und die Filmmusik unerträglich langweilig",
        "finnish": "Elokuvan näyttelijät olivat erinomaisia, mutta juonenkäänteet tuntuivat ennalta-arvattavilta ja pitkäveteisiltä",
        "korean": "영화가 정말 재밌어요 배우들 연기가 좋았다 스토리 감동",
    }
    for language, text in texts.items():
        path = tmp_path / f"{language}.csv"
        pd.DataFrame({"text": [f"{text} {i}" for i in range(40)], "label": ["neg", "pos"] * 20}).to_csv(path, index=False)
        _, report = _validate_table(tmp_path / language, path, ValidateConfig(max_duplicate_fraction=1))
        checks = [c for c in report["checks"] if c["check"] == "chars_per_token"]
        assert checks and all(c["passed"] for c in checks), (language, checks[0]["message"])


def test_max_chars_per_token_and_its_severity_are_configuration_keys(tmp_path: Path):
    path = _japanese_table(tmp_path / "ja.csv")
    summary, _ = _validate_table(tmp_path / "raised", path, ValidateConfig(max_chars_per_token=60))
    assert summary["passed"] is True, summary["errors"]
    summary, report = _validate_table(tmp_path / "warned", path, load_config(overrides=["validate.severity.chars_per_token=warning"]).validate_)
    assert summary["passed"] is True and summary["n_warnings"] == 3
    assert all(c["severity"] == "warning" for c in report["checks"] if c["check"] == "chars_per_token")
    with pytest.raises(ConfigError, match="validate.max_chars_per_token"):
        load_config(overrides=["validate.max_chars_per_token=0"])


@pytest.mark.slow
def test_a_run_on_text_without_spaces_stops_at_validate_and_runs_with_subwords(tmp_path: Path, prefect_api, capsys):
    from flows.cli import main

    path = _japanese_table(tmp_path / "ja.csv", per_class=100)
    args = ["run", "--preset", "demo", "--set", "data.source=table", "--set", f"data.path={path}", "--artifacts", str(tmp_path / "art")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "rnnflow: step validate failed: Check chars_per_token failed on split train: the median review has " in err
    assert "--set encode.tokenizer=subword" in err
    assert main([*args, "--set", "encode.tokenizer=subword"]) == 0
    folder = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert read_json(folder / "validate" / "validation.json")["passed"] is True
