"""The validate step on small hand-made corpora: what a user reads in validation.json, the summary and errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

import tasks.store
import tasks.validate

from tasks.config import ConfigError, EncodeConfig, ValidateConfig, load_config
from tasks.encode import encode_reviews
from tasks.steps import text_rule
from tasks.store import StepOutput, write_json
from tasks.text import token_counts
from tasks.validate import DataValidationError, TextRule, first_error, validate_reviews, validate_task

ROWS = 60
LABELS = ["neg", "pos"]


def split_frame(split: str, rows: int = ROWS) -> pd.DataFrame:
    """Balanced, distinct texts; review i has i + 1 tokens, so lengths run 1..rows."""
    return pd.DataFrame(
        {
            "text": [" ".join([f"{split}review{i}"] + ["word"] * i) for i in range(rows)],
            "label": pd.Series([i % 2 for i in range(rows)], dtype="int64"),
            "rating": pd.array([None] * rows, dtype="Int64"),
            "id": range(rows),  # integers, as ingest writes them and encode reads them
        }
    )


def make_corpus(folder: Path, change: Callable[[dict[str, pd.DataFrame]], None] | None = None, labels=LABELS) -> Path:
    frames = {split: split_frame(split) for split in ("train", "val", "test")}
    if change:
        change(frames)
    folder.mkdir(parents=True, exist_ok=True)
    for split, frame in frames.items():
        frame.to_parquet(folder / f"{split}.parquet", index=False)
    write_json(folder / "ingest.json", {"labels": labels})
    return folder


def run(tmp_path: Path, change=None, cfg: ValidateConfig | None = None, batch_rows: int | None = None) -> tuple[dict, dict]:
    ingest = make_corpus(tmp_path / "ingest", change)
    summary = validate_reviews(cfg or ValidateConfig(), ingest, tmp_path / "validate", batch_rows=batch_rows)
    report = json.loads((tmp_path / "validate" / "validation.json").read_text())
    return summary, report


def failed(report: dict, check: str, split: str) -> list[dict]:
    return [c for c in report["checks"] if c["check"] == check and c["split"] == split and not c["passed"]]


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[dict, dict, Path]:
    tmp_path = tmp_path_factory.mktemp("clean")
    summary, report = run(tmp_path)
    return summary, report, tmp_path / "validate"


def test_clean_corpus_passes_and_writes_every_report(clean):
    summary, report, out = clean
    assert summary["passed"] is True and report["passed"] is True
    assert summary["n_failed_errors"] == 0 and summary["n_warnings"] == 0 and summary["errors"] == []
    assert summary["n_checks"] == len(report["checks"])
    assert all(c["passed"] for c in report["checks"])
    names = {c["check"] for c in report["checks"]}
    assert names == {"not_blank", "label_in_set", "class_balance", "token_length", "kept_text", "chars_per_token", "duplicates", "train_test_overlap"}
    assert {c["split"] for c in report["checks"]} == {"train", "val", "test"}
    assert report["label_counts"]["train"] == {"neg": 30, "pos": 30}
    assert report["warnings"] == []
    json.dumps(summary)  # travels in the StepOutput: must be plain JSON

    results = json.loads((out / "gx" / "results.json").read_text())
    assert set(results) == {"train", "val", "test", "test_vs_train"}
    assert all(r["success"] for r in results.values())
    suites = json.loads((out / "gx" / "suite.json").read_text())
    types = {e["type"] for suite in suites.values() for e in suite["expectations"]}
    assert "expect_column_values_to_not_be_null" in types and "expect_column_values_to_be_in_set" in types
    index = out / "data_docs" / "index.html"
    assert index.is_file() and "Great Expectations" in index.read_text()
    assert list((out / "data_docs" / "validations").rglob("*.html"))


def test_length_stats_are_right_for_a_known_corpus(clean):
    summary, report, _ = clean
    # Token counts 1..60: mean and median 30.5, p90 = 1 + 0.9 * 59, p99 = 1 + 0.99 * 59 (linear interpolation).
    expected = {"min": 1, "mean": 30.5, "median": 30.5, "p90": 54.1, "p99": 59.41, "max": 60}
    for split in ("train", "val", "test"):
        assert report["length_stats"][split] == pytest.approx(expected)
    assert summary["length_stats"] == report["length_stats"]


def test_single_class_train_is_an_error_naming_split_and_check(tmp_path):
    def one_class(frames):
        frames["train"]["label"] = 0

    summary, report = run(tmp_path, one_class)
    assert summary["passed"] is False and report["passed"] is False
    message = first_error(summary)
    assert "class_balance" in message and "split train" in message and "neg" in message
    assert "\n" not in message and message.endswith(".")
    assert failed(report, "class_balance", "train")
    assert not failed(report, "class_balance", "val")
    assert report["label_counts"]["train"] == {"neg": 60, "pos": 0}


def test_blank_text_is_an_error_naming_not_blank(tmp_path):
    def blank(frames):
        frames["val"].loc[5, "text"] = "   "

    summary, report = run(tmp_path, blank)
    assert summary["passed"] is False
    message = first_error(summary)
    assert "not_blank" in message and "split val" in message and "1 of 60" in message
    (check,) = failed(report, "not_blank", "val")
    assert check["observed"] == 1 and check["severity"] == "error"


def test_label_outside_the_classes_is_an_error(tmp_path):
    def stray_label(frames):
        frames["test"].loc[3, "label"] = 7

    summary, report = run(tmp_path, stray_label)
    assert summary["passed"] is False
    message = first_error(summary)
    assert "label_in_set" in message and "split test" in message and "7" in message
    assert report["label_counts"]["test"]["7"] == 1


def test_train_test_overlap_is_a_warning_by_default(tmp_path):
    def leak(frames):
        frames["test"].loc[:9, "text"] = frames["train"].loc[:9, "text"].to_numpy()

    summary, report = run(tmp_path, leak)
    assert summary["passed"] is True and report["passed"] is True
    assert summary["n_warnings"] == 1
    (check,) = failed(report, "train_test_overlap", "test")
    assert check["severity"] == "warning"
    assert check["observed"] == pytest.approx(10 / 60, abs=1e-6)
    assert report["warnings"] == [check["message"]]
    assert "16.67% of test texts also appear in train" in check["message"]


def test_severity_override_makes_overlap_fail(tmp_path):
    def leak(frames):
        frames["test"].loc[:9, "text"] = frames["train"].loc[:9, "text"].to_numpy()

    summary, report = run(tmp_path, leak, ValidateConfig(severity={"train_test_overlap": "error"}))
    assert summary["passed"] is False and summary["n_failed_errors"] == 1
    assert "train_test_overlap" in first_error(summary)
    # The other checks keep their default severity.
    assert {c["severity"] for c in report["checks"] if c["check"] == "class_balance"} == {"error"}


def test_duplicates_and_length_bounds_are_warnings_with_observed_values(tmp_path):
    def repeat(frames):
        frames["train"].loc[:5, "text"] = frames["train"].loc[6, "text"]

    summary, report = run(tmp_path, repeat, ValidateConfig(max_tokens=50))
    assert summary["passed"] is True
    (duplicates,) = failed(report, "duplicates", "train")
    assert duplicates["observed"] == pytest.approx(6 / 60, abs=1e-6)
    longest = [c for c in failed(report, "token_length", "val")]
    assert longest and longest[0]["observed"] == 60 and "validate.max_tokens" in longest[0]["message"]


def _validate_task(root: str, ingest: StepOutput, text_rule: dict) -> StepOutput:
    """validate_task's body, called as the flow calls it (flows/run_steps.py), with its key computed from its inputs."""
    from tasks.caching import CacheSlot, key_for

    inputs = {"validate": ValidateConfig(), "ingest": ingest, "text_rule": text_rule}
    output = validate_task.fn(**inputs, slot=CacheSlot(root, "validate", key_for("validate", inputs)))
    return output.data if not isinstance(output, StepOutput) else output  # a reused entry comes back as a Cached state


def test_task_raises_one_sentence_and_keeps_the_report(tmp_path):
    def one_class(frames):
        frames["val"]["label"] = 1

    ingest = make_corpus(tmp_path / "ingest", one_class)
    upstream = {"ingest": StepOutput(step="ingest", key="k", dir=str(ingest), files={"train.parquet": "x"})}
    with pytest.raises(DataValidationError) as caught:
        _validate_task(str(tmp_path / "artifacts"), upstream["ingest"], {})
    error = caught.value
    assert "split val" in str(error) and "class_balance" in str(error)
    assert (error.output_dir / "validation.json").is_file()
    assert (error.output_dir / "data_docs" / "index.html").is_file()
    copy = pickle.loads(pickle.dumps(error))  # Prefect stores task exceptions
    assert str(copy) == str(error) and copy.output_dir == error.output_dir


def test_missing_split_file_names_the_file(tmp_path):
    ingest = make_corpus(tmp_path / "ingest")
    (ingest / "val.parquet").unlink()
    with pytest.raises(DataValidationError, match=r"val\.parquet does not exist"):
        validate_reviews(ValidateConfig(), ingest, tmp_path / "validate")


def test_unknown_check_in_severity_is_a_config_error():
    with pytest.raises(ConfigError, match="validate.severity.*unknown check 'duplicate'"):
        load_config(overrides=["validate.severity.duplicate=error"])


def test_first_error_refuses_a_passing_summary():
    with pytest.raises(ValueError):
        first_error({"passed": True, "errors": []})


# --------------------------------------------------------------------------- streaming in record batches

SMALL_BATCH = 7  # 60 rows -> 9 batches, the last one short


def test_many_batches_give_the_same_report_as_one(tmp_path, monkeypatch):
    _, whole = run(tmp_path / "whole", batch_rows=1000)
    # The default batch size is read at call time: the store's constant decides.
    monkeypatch.setattr(tasks.store, "STREAM_ROWS", SMALL_BATCH)
    sizes = []

    def spy(path, columns=None, batch_rows=None):
        for frame in tasks.store.iter_parquet(path, columns=columns, batch_rows=batch_rows):
            sizes.append(len(frame))
            yield frame

    monkeypatch.setattr(tasks.validate, "iter_parquet", spy)
    _, batched = run(tmp_path / "batched")
    assert max(sizes) == SMALL_BATCH and len(sizes) == 3 * 9
    for key in ("passed", "checks", "length_stats", "label_counts", "warnings"):
        assert batched[key] == whole[key], key


def test_duplicates_and_overlap_are_found_across_batches(tmp_path):
    def repeat_and_leak(frames):
        # Rows 0..5 (batch 1) repeat row 59 (batch 9); test rows 50..59 (batches 8-9) are train rows 10..19 (batches 2-3).
        frames["train"].loc[:5, "text"] = frames["train"].loc[59, "text"]
        frames["test"].loc[50:, "text"] = frames["train"].loc[10:19, "text"].to_numpy()

    summary, report = run(tmp_path, repeat_and_leak, batch_rows=SMALL_BATCH)
    (duplicates,) = failed(report, "duplicates", "train")
    assert duplicates["observed"] == pytest.approx(6 / 60, abs=1e-6)
    assert "10.00% of texts repeat another text of the split" in duplicates["message"]
    (overlap,) = failed(report, "train_test_overlap", "test")
    assert overlap["observed"] == pytest.approx(10 / 60, abs=1e-6)
    assert "16.67% of test texts also appear in train" in overlap["message"]
    assert summary["passed"] is True and summary["n_warnings"] == 2


def test_null_and_whitespace_texts_are_reported_from_any_batch(tmp_path):
    def null_and_blank(frames):
        frames["val"].loc[5, "text"] = None
        frames["val"].loc[40, "text"] = " \t\n "
        frames["val"].loc[41, "text"] = ""

    summary, report = run(tmp_path, null_and_blank, batch_rows=SMALL_BATCH)
    assert summary["passed"] is False
    messages = [c["message"] for c in failed(report, "not_blank", "val")]
    assert len(messages) == 2
    assert "1 of 60 texts are missing (null)" in messages[0]
    assert "2 of 60 texts are empty or whitespace only" in messages[1]
    assert first_error(summary) == messages[0]


def test_null_texts_are_neither_duplicates_nor_overlap(tmp_path):
    def nulls(frames):
        frames["train"].loc[[3, 30], "text"] = None
        frames["test"].loc[[4, 50], "text"] = None

    _, report = run(tmp_path, nulls, batch_rows=SMALL_BATCH)
    assert not failed(report, "duplicates", "train")
    (overlap,) = [c for c in report["checks"] if c["check"] == "train_test_overlap"]
    assert overlap["passed"] and overlap["observed"] == 0


def test_missing_labels_are_still_seen_when_streamed(tmp_path):
    def no_label(frames):
        frames["train"]["label"] = frames["train"]["label"].astype("Int64")
        frames["train"].loc[[2, 45], "label"] = None

    summary, report = run(tmp_path, no_label, batch_rows=SMALL_BATCH)
    assert summary["passed"] is False
    assert "2 of 60 labels are missing" in first_error(summary)
    assert report["label_counts"]["train"]["missing"] == 2


def test_empty_split_and_missing_column_name_the_file(tmp_path):
    ingest = make_corpus(tmp_path / "ingest")
    split_frame("test").iloc[:0].to_parquet(ingest / "test.parquet", index=False)
    with pytest.raises(DataValidationError, match=r"test\.parquet has no rows"):
        validate_reviews(ValidateConfig(), ingest, tmp_path / "validate")
    split_frame("test").drop(columns="label").to_parquet(ingest / "test.parquet", index=False)
    with pytest.raises(DataValidationError, match=r"test\.parquet has no column 'label'"):
        validate_reviews(ValidateConfig(), ingest, tmp_path / "validate")


def test_gx_sees_derived_columns_not_texts(clean):
    _, _, out = clean
    suites = json.loads((out / "gx" / "suite.json").read_text())
    columns = {e["kwargs"].get("column") for suite in suites.values() for e in suite["expectations"]}
    assert columns == {"text_hash", "text_chars", "label", "n_tokens", "kept_share", "chars_per_token", "in_train"}


# --------------------------------------------------------------------------- kept_text: text the tokenizer loses


def _texts(make_text: Callable[[str, int], str]) -> Callable[[dict[str, pd.DataFrame]], None]:
    def change(frames: dict[str, pd.DataFrame]) -> None:
        for split, frame in frames.items():
            frame["text"] = [make_text(split, i) for i in range(len(frame))]
    return change


EMOJI = "😀😍👍🔥😡💩🎬🍿"
KOREAN_WORDS = ["영화", "정말", "재밌어요", "최악의", "배우들", "연기가", "좋았다", "지루한", "스토리", "감동"]


@pytest.mark.parametrize(
    ("what", "make_text"),
    [
        ("emoji only", lambda split, i: " ".join(EMOJI[(i + k) % len(EMOJI)] * (k + 1) for k in range(1 + i % 4)) + f" {split[0]}"),
        ("punctuation only", lambda split, i: "!?" * (i + 1) + " ..." + " -_-" * (i % 3) + f" {'.' * (i + 2)}{split}" * 0),
    ],
)
def test_text_the_word_rule_loses_fails_validation_naming_the_share_and_the_fix(tmp_path: Path, what: str, make_text):
    summary, report = run(tmp_path, _texts(make_text), cfg=ValidateConfig(max_duplicate_fraction=1, max_train_test_overlap=1))
    assert summary["passed"] is False
    check = failed(report, "kept_text", "train")[0]
    assert check["observed"] < 0.5 and check["severity"] == "error"
    message = first_error(summary)
    assert message.startswith("Check kept_text failed on split train: the median review keeps "), message
    assert "of its non-space characters in word tokens, bound at least 50% (validate.min_kept_share)" in message
    assert "set encode.tokenizer to subword or char" in message
    assert report["kept_share"]["train"]["median"] == pytest.approx(check["observed"], abs=1e-4)


def test_char_and_subword_tokenizers_keep_emoji_and_pass(tmp_path: Path):
    from tasks.validate import TextRule

    ingest = make_corpus(tmp_path / "ingest", _texts(lambda split, i: EMOJI[i % 8] * (i % 5 + 1) + EMOJI[(i + 3) % 8] + split))
    for tokenizer in ("char", "subword"):
        summary = validate_reviews(ValidateConfig(max_duplicate_fraction=1, max_train_test_overlap=1), ingest, tmp_path / tokenizer,
                                   text_rule=TextRule(tokenizer=tokenizer))
        assert summary["passed"] is True, summary["errors"]
        assert summary["kept_share"]["train"]["median"] == 1.0


def test_korean_reviews_keep_their_words_and_pass(tmp_path: Path):
    """The case that once scored 0.54: with [a-z0-9] words a Korean review kept nothing but its digits."""
    korean = _texts(lambda split, i: " ".join(KOREAN_WORDS[(i * 7 + k) % 10] for k in range(2 + i % 6)) + f" {split}{i}점")
    summary, report = run(tmp_path, korean)
    assert not failed(report, "kept_text", "train")
    assert report["kept_share"]["train"]["median"] == 1.0 and report["kept_share"]["test"]["p10"] == 1.0
    assert "kept_share" in (tmp_path / "validate" / "data_docs" / "index.html").read_text() or any(
        "kept_share" in page.read_text() for page in (tmp_path / "validate" / "data_docs").rglob("*.html")
    )


def test_min_kept_share_is_a_configuration_key(tmp_path: Path):
    half = _texts(lambda split, i: f"word{i} {split} !!!!!!!!!!!!!!!!!!!!!!")
    summary, report = run(tmp_path, half, cfg=ValidateConfig(min_kept_share=0.2))
    assert not failed(report, "kept_text", "train")
    with pytest.raises(ConfigError, match="validate.min_kept_share"):
        load_config(overrides=["validate.min_kept_share=2"])


# --------------------------------------------------------------------------- token_length: in the run's tokenizer units


def _with_punctuation_review(frames: dict[str, pd.DataFrame]) -> None:
    # A review of punctuation only, as in the Korean reviews ("...", "♥♥"): no word, but three characters.
    frames["train"].loc[0, "text"] = "..."


@pytest.mark.parametrize(
    ("rule", "shortest", "unit", "seen"),
    [
        ({"tokenizer": "word"}, 0, "words", "the shortest review has 0 words"),
        ({"tokenizer": "char"}, 3, "characters", "the shortest review has 3 characters"),
        ({"tokenizer": "subword"}, 3, "characters", "the shortest review has 3 characters (subword pieces are learnt at encode, from characters)"),
        # auto chooses as encode would: 20,000 words cover all words here; the one of num_words 4 ("word") 97%
        ({"tokenizer": "auto"}, 0, "words", "the shortest review has 0 words (tokenizer auto chose word tokens)"),
        ({"tokenizer": "auto", "num_words": 4, "auto_min_coverage": 1.0}, 3, "characters",
         "the shortest review has 3 characters (tokenizer auto chose subword tokens; subword pieces are learnt at encode, from characters)"),
    ],
)
def test_punctuation_only_review_is_empty_in_words_only(tmp_path: Path, rule: dict, shortest: int, unit: str, seen: str):
    from tasks.validate import TextRule

    ingest = make_corpus(tmp_path / "ingest", _with_punctuation_review)
    summary = validate_reviews(ValidateConfig(), ingest, tmp_path / "validate", text_rule=TextRule(**rule))
    report = json.loads((tmp_path / "validate" / "validation.json").read_text())
    assert report["length_unit"] == summary["length_unit"] == unit and report["tokenizer"] == rule["tokenizer"]
    assert report["length_stats"]["train"]["min"] == shortest
    (check,) = [c for c in report["checks"] if c["check"] == "token_length" and c["split"] == "train" and "shortest" in c["message"]]
    assert check["observed"] == shortest and seen + f", bound at least 1 {unit[:-1]} (validate.min_tokens)" in check["message"]
    # Only words lose the review: a warning (token_length does not block promotion by default), not an error.
    assert check["passed"] is (unit == "characters") and check["severity"] == "warning" and summary["passed"] is True
    suites = json.loads((tmp_path / "validate" / "gx" / "suite.json").read_text())
    described = [e.get("description") or "" for e in suites["reviews"]["expectations"] if e["kwargs"].get("column") == "n_tokens"]
    assert len(described) == 2 and all(f"(n_tokens, in {unit})" in text for text in described), described


def test_length_stats_count_characters_under_the_char_tokenizer(tmp_path: Path, clean):
    from tasks.validate import TextRule

    _, words, _ = clean
    assert words["length_unit"] == "words" and words["tokenizer"] == "word"
    ingest = make_corpus(tmp_path / "ingest")
    validate_reviews(ValidateConfig(), ingest, tmp_path / "validate", text_rule=TextRule(tokenizer="char"))
    characters = json.loads((tmp_path / "validate" / "validation.json").read_text())
    assert characters["length_unit"] == "characters"
    for split in ("train", "val", "test"):
        lengths = [len(text) for text in split_frame(split)["text"]]  # lowercase ASCII: a character is a token
        assert characters["length_stats"][split]["min"] == min(lengths) and characters["length_stats"][split]["max"] == max(lengths)
        assert characters["length_stats"][split] != words["length_stats"][split]


def test_changing_the_tokenizer_changes_the_cache_key_and_the_lengths(tmp_path: Path):
    # text_rule is a task input, so it is in validate's cache key: a char run cannot reuse the word run's lengths.
    ingest = make_corpus(tmp_path / "ingest", _with_punctuation_review)
    upstream = {"ingest": StepOutput(step="ingest", key="k", dir=str(ingest), files={"train.parquet": "x"})}
    root = str(tmp_path / "artifacts")
    outputs = {
        tokenizer: _validate_task(root, upstream["ingest"], {"tokenizer": tokenizer, "lowercase": True})
        for tokenizer in ("word", "char")
    }
    assert outputs["word"].key != outputs["char"].key
    assert _validate_task(root, upstream["ingest"], {"tokenizer": "word", "lowercase": True}).key == outputs["word"].key
    stats = {name: json.loads(output.file("validation.json").read_text())["length_stats"] for name, output in outputs.items()}
    assert stats["word"]["train"]["min"] == 0 and stats["char"]["train"]["min"] == 3
    assert outputs["char"].summary["length_unit"] == "characters"


# --------------------------------------------------------------------------- tokenizer auto: chosen as encode chooses


def scattered_words(split: str, i: int) -> str:
    """A review of made-up words that hardly repeat: the most frequent words cover little of them, as in Korean."""
    rng = np.random.default_rng([("train", "val", "test").index(split), i])
    return " ".join("".join(rng.choice(list("abcdefghij"), size=6)) for _ in range(3 + i % 5))


def _validate_and_encode(tmp_path: Path, ingest: Path, num_words: int) -> tuple[dict, dict, dict]:
    """(validation.json, validate's summary, encode.json) of tokenizer auto over one ingest folder."""
    cfg = ValidateConfig(max_duplicate_fraction=1, max_train_test_overlap=1)
    summary = validate_reviews(cfg, ingest, tmp_path / "validate", text_rule=TextRule(tokenizer="auto", num_words=num_words))
    (tmp_path / "encode").mkdir()
    encode_reviews(EncodeConfig(tokenizer="auto", num_words=num_words, max_len=20), ingest, tmp_path / "encode")
    report = json.loads((tmp_path / "validate" / "validation.json").read_text())
    return report, summary, json.loads((tmp_path / "encode" / "encode.json").read_text())


@pytest.mark.parametrize(("corpus", "num_words", "chosen", "rule"), [("english", 600, "word", "word"), ("scattered", 40, "subword", "char")])
def test_auto_chooses_as_encode_does_and_counts_in_the_chosen_units(tmp_path: Path, request, corpus, num_words, chosen, rule):
    # The synthetic English reviews, whose 597 most frequent words cover most of them; or words that hardly repeat.
    ingest = request.getfixturevalue("ingested") if corpus == "english" else make_corpus(tmp_path / "ingest", _texts(scattered_words))
    report, summary, encoding = _validate_and_encode(tmp_path, ingest, num_words)
    assert report["tokenizer"] == "auto" and report["tokenizer_resolved"] == summary["tokenizer_resolved"] == encoding["tokenizer"] == chosen
    assert report["tokenizer_auto"] == encoding["tokenizer_auto"] and (report["tokenizer_auto"]["coverage"] >= 0.75) is (chosen == "word")
    texts = pd.read_parquet(ingest / "train.parquet")["text"].tolist()  # already clean: validate counts them as they are
    assert report["length_unit"] == summary["length_unit"] == {"word": "words", "char": "characters"}[rule]
    assert report["length_stats"]["train"]["max"] == token_counts(texts, True, rule).max()
    assert report["kept_share"]["train"]["median"] == 1.0 or chosen == "word", "subword pieces keep every character"
    longest = [c for c in report["checks"] if c["check"] == "token_length" and c["split"] == "val" and "longest" in c["message"]]
    assert f"(tokenizer auto chose {chosen} tokens" in longest[0]["message"]


def test_auto_counts_the_words_encode_counts_when_ingest_kept_html(tmp_path: Path):
    # data.strip_html false leaves the tags in the ingested text: encode counts "br" among train's words, and
    # with it the one word a 4-id vocabulary keeps covers 75%; without the tags it would cover 1 word in 60.
    ingest = make_corpus(tmp_path / "ingest", _texts(lambda split, i: f"{split}review{i} <br /><br /><br />"))
    write_json(ingest / "ingest.json", {"labels": LABELS, "strip_html": False})
    report, _, encoding = _validate_and_encode(tmp_path, ingest, num_words=4)
    assert report["tokenizer_auto"] == encoding["tokenizer_auto"] and report["tokenizer_resolved"] == encoding["tokenizer"] == "word"
    assert report["tokenizer_auto"]["coverage"] == 0.75
    assert report["length_stats"]["train"]["max"] == 1, "lengths still count the words a review has once its tags are gone"


def test_auto_measures_characters_in_train_only_before_the_choice(tmp_path: Path, monkeypatch):
    counted = []

    def count_spy(texts, lowercase, tokenizer):  # validate counts characters with it; words come from its word pass
        counted.append(tokenizer)
        return token_counts(texts, lowercase, tokenizer)

    monkeypatch.setattr(tasks.validate, "token_counts", count_spy)
    ingest = make_corpus(tmp_path / "ingest")
    validate_reviews(ValidateConfig(), ingest, tmp_path / "validate", text_rule=TextRule(tokenizer="auto"), batch_rows=1000)
    assert counted == ["char"], "train's one batch, while words or pieces were open; val and test in the chosen words only"


def test_auto_rule_and_cache_key_carry_num_words_and_coverage_only_for_auto():
    def rule(tokenizer: str) -> dict:
        config = load_config(overrides=[f"encode.tokenizer={tokenizer}", "encode.num_words=3000", "encode.auto_min_coverage=0.8"])
        return text_rule(config)["text_rule"]

    assert rule("auto") == {"tokenizer": "auto", "lowercase": True, "num_words": 3000, "auto_min_coverage": 0.8}
    assert rule("word") == {"tokenizer": "word", "lowercase": True}, "a word run's validation does not hang on num_words"


def test_with_an_analyser_validation_counts_the_morphemes_encode_reads(tmp_path: Path):
    """encode.analyzer kiwi: encode's tokenizer reads morphemes (영화가 -> 영화 가), so the length checks count them too,
    validation.json names the analyser, and the rule (validate's cache key) differs from the run without it."""
    from tasks.config import RunConfig
    from tasks.morphemes import analyse_many
    from tasks.validate import TextRule

    pytest.importorskip("kiwipiepy")
    korean = _texts(lambda split, i: " ".join(KOREAN_WORDS[(i * 7 + k) % 10] for k in range(2 + i % 6)) + f" {split}{i}점")
    ingest = make_corpus(tmp_path / "ingest", korean)
    loose = ValidateConfig(max_duplicate_fraction=1, max_train_test_overlap=1)
    plain = validate_reviews(loose, ingest, tmp_path / "plain", text_rule=TextRule())
    analysed = validate_reviews(loose, ingest, tmp_path / "kiwi", text_rule=TextRule(analyzer="kiwi"))
    texts = pd.read_parquet(ingest / "train.parquet")["text"].tolist()
    morphemes = [len(text.split()) for text in analyse_many(texts, "kiwi")]
    report = json.loads((tmp_path / "kiwi" / "validation.json").read_text())
    assert report["analyzer"] == "kiwi" and report["length_stats"]["train"]["max"] == max(morphemes)
    assert report["length_stats"]["train"]["max"] > json.loads((tmp_path / "plain" / "validation.json").read_text())["length_stats"]["train"]["max"]
    assert plain["passed"] and analysed["passed"]
    rule = text_rule(RunConfig.model_validate({"encode": {"analyzer": "kiwi"}}))["text_rule"]
    assert rule["analyzer"] == "kiwi" and "analyzer" not in text_rule(RunConfig())["text_rule"]
