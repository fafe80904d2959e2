"""rnnflow score: the drift figures on small frames, the input and its errors, and one slow run end to end on the
session's tiny champion (issue 33)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tasks.drift import check_drift, figure_frame, figure_rows, observed_figures, reference_figures
from tasks.encode import Vocabulary
from tasks.reference import row_figures, shares, summarize
from tasks.score import ScoreInputError, open_scoring_input
from tasks.score_config import ScoreConfig
from tasks.score_summary import drift_table, summary_markdown
from tests.helpers import tiny_config

LABELS = ["neg", "pos"]
REFERENCE = {"format": 1, "tokens": {"p10": 10.0, "p50": 100.0, "p90": 400.0}, "kept_share": 0.95, "unknown_share": 0.05,
             "class_balance": {"neg": 0.5, "pos": 0.5}, "predicted_shares": {"neg": 0.5, "pos": 0.5}}


def _vocabulary() -> Vocabulary:
    return Vocabulary(["good", "bad", "film"], max_len=8, padding="post", truncating="pre")


# --------------------------------------------------------------------------- the figures


def test_row_figures_count_tokens_unknown_tokens_and_kept_characters():
    figures = row_figures(_vocabulary(), ["good film", "good zzz qqq bad", "", "!!! ???"])
    assert figures["tokens"].tolist() == [2, 4, 0, 0]
    assert figures["unknown_share"].tolist()[:2] == [0.0, 0.5]
    assert np.isnan(figures["unknown_share"].iloc[2]) and np.isnan(figures["unknown_share"].iloc[3])
    assert figures["kept_share"].iloc[0] == pytest.approx(1.0)
    assert figures["kept_share"].iloc[3] == pytest.approx(0.0)  # punctuation only: nothing ends up in a token


def test_summarize_gives_the_reference_quantiles_median_and_mean():
    figures = pd.DataFrame({"tokens": np.arange(1, 102), "kept_share": np.r_[np.full(100, 0.9), np.nan],
                            "unknown_share": np.r_[np.full(50, 0.0), np.full(50, 0.2), np.nan]})
    summary = summarize(figures)
    assert summary["tokens"] == {"p10": 11.0, "p50": 51.0, "p90": 91.0}
    assert summary["kept_share"] == pytest.approx(0.9) and summary["unknown_share"] == pytest.approx(0.1)
    assert shares(np.array([0, 1, 1, 1]), LABELS) == {"neg": 0.25, "pos": 0.75}
    assert shares(np.array([1, 1]), LABELS)["neg"] == 0.0


def test_observed_figures_measure_the_scored_frame_as_the_reference_was_measured():
    figures = pd.DataFrame({"tokens": [5, 6, 7, 8, 9], "kept_share": [1.0, 0.5, np.nan, 1.0, 1.0], "unknown_share": [0.0, 1.0, np.nan, 0.5, 0.5]})
    frame = figure_frame(figures, np.array([1, 1, 1, 0, 1]), LABELS)
    observed = observed_figures(frame, LABELS)
    assert observed["tokens_p50"] == 7.0
    assert observed["kept_share"] == 1.0 and observed["unknown_share"] == 0.5
    assert observed["predicted_share:pos"] == pytest.approx(0.8) and observed["predicted_share:neg"] == pytest.approx(0.2)
    assert set(reference_figures(REFERENCE, LABELS)) == set(observed)


def test_a_failed_figure_is_one_sentence_naming_it_its_value_and_the_reference():
    item = SimpleNamespace(expectation_config=SimpleNamespace(meta={"figures": ["unknown_share"]}), success=False,
                           result={"observed_value": 0.9})
    result = SimpleNamespace(results=[item])
    rows = figure_rows(result, {"unknown_share": 0.9}, {"unknown_share": 0.05}, {"unknown_share": "at most 0.150"})
    assert rows[0]["passed"] is False
    assert rows[0]["message"] == ("Drift check unknown_share failed: the scored texts' mean share of tokens outside the vocabulary is "
                                  "0.900, the champion's reference 0.050 (bound at most 0.150).")


def test_without_a_reference_the_figures_are_written_and_nothing_fails(tmp_path: Path):
    frame = figure_frame(pd.DataFrame({"tokens": [3, 4], "kept_share": [1.0, 1.0], "unknown_share": [0.0, 0.5]}), np.array([0, 1]), LABELS)
    report = check_drift(frame, LABELS, None, ScoreConfig(), tmp_path)
    assert report["passed"] and not report["reference"] and not report["failed"]
    written = json.loads((tmp_path / "drift.json").read_text())
    assert [row["figure"] for row in written["figures"]][:3] == ["tokens_p10", "tokens_p50", "tokens_p90"]
    assert "no reference" in written["figures"][0]["message"]


def test_the_summary_lists_every_figure_and_the_failed_ones_in_words():
    manifest = {"score_id": "S", "rows": 3, "empty": 1, "label_counts": {"neg": 1, "pos": 2}, "on_drift": "warn",
                "input": {"location": "in.csv", "text_column": "text", "fingerprint": "ab" * 32},
                "champion": {"model": "m", "run_id": "R", "model_sha256": "cd" * 32},
                "drift": {"reference": True, "warning": None, "failed": ["Drift check tokens_p50 failed: ..."],
                          "figures": [{"figure": "tokens_p50", "value": 3.0, "reference": 100.0, "bound": "50 to 200", "passed": False}]}}
    assert drift_table(manifest) == [{"figure": "tokens_p50", "value": "3", "reference": "100", "bound": "50 to 200", "outcome": "DRIFT"}]
    text = summary_markdown(manifest)
    assert "run R" in text and "1 of 1 figures out of bounds" in text and "- Drift check tokens_p50 failed" in text


# --------------------------------------------------------------------------- the input and the settings


def test_the_input_opens_as_batches_with_a_fingerprint(tmp_path: Path):
    source = tmp_path / "in.csv"
    pd.DataFrame({"review": ["a", "", "c", "d", "e"]}).to_csv(source, index=False)
    opened = open_scoring_input(str(source), "review")
    assert len(opened.fingerprint) == 64 and opened.fmt == "csv"
    batches = list(opened.batches(2))
    assert [len(batch) for batch in batches] == [2, 2, 1]
    assert pd.concat(batches)["review"].fillna("").tolist() == ["a", "", "c", "d", "e"]


@pytest.mark.parametrize("name, expected", [("missing.csv", "does not exist: check the path given to --input"),
                                            ("table.xlsx", "rnnflow score cannot read")])
def test_an_unusable_input_is_one_sentence(tmp_path: Path, name: str, expected: str):
    (tmp_path / "table.xlsx").write_text("x")
    with pytest.raises(ScoreInputError, match=expected):
        open_scoring_input(str(tmp_path / name))


def test_a_missing_text_column_names_the_option_to_fix_it(tmp_path: Path):
    source = tmp_path / "in.csv"
    pd.DataFrame({"review": ["a"]}).to_csv(source, index=False)
    with pytest.raises(ScoreInputError, match="--text-column NAME"):
        list(open_scoring_input(str(source), "text").batches(10))


def test_the_score_section_is_part_of_the_configuration():
    assert tiny_config().score.on_drift == "warn"
    assert tiny_config("score.on_drift=fail", "score.max_token_ratio=3").score.max_token_ratio == 3.0
    from tasks.config import ConfigError

    with pytest.raises(ConfigError, match="on_drift"):
        tiny_config("score.on_drift=stop")


# --------------------------------------------------------------------------- end to end, on the session's tiny champion


def _score(root: Path, source: Path, *extra: str) -> list[str]:
    from flows.cli import main

    return ["score", "--artifacts", str(root), "--input", str(source), *extra], main


@pytest.mark.slow
def test_score_labels_every_row_checks_drift_and_fails_when_asked(tiny_run_copy, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from tasks.store import sha256_file
    from tasks.synthetic import synthetic_reviews

    texts = synthetic_reviews(40, seed=7)["text"].tolist()
    source = tmp_path / "reviews.csv"
    pd.DataFrame({"review": [*texts[:20], "", *texts[20:]]}).to_csv(source, index=False)
    args, main = _score(tiny_run_copy.root, source, "--text-column", "review")
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    folder = Path(out[-1])
    assert folder.parent.name == "scores"
    assert {"predictions.parquet", "figures.parquet", "drift.json", "manifest.json", "summary.md", "summary.html", "data_docs"} <= {p.name for p in folder.iterdir()}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["champion"]["run_id"] == tiny_run_copy.run_id
    assert manifest["champion"]["model_sha256"] == sha256_file(tiny_run_copy.folder / "train" / "model.keras")
    predictions = pd.read_parquet(folder / "predictions.parquet")
    assert predictions["row"].tolist() == list(range(1, 42)) and predictions["empty"].tolist()[20]  # every row kept, the blank one too
    assert {"label", "probability_neg", "probability_pos"} <= set(predictions.columns)
    assert any(line.lstrip().startswith("tokens_p50") for line in out)
    assert manifest["steps"]["score_label"]["status"] == "completed"

    assert main(args) == 0  # the same input and champion again: both steps from the cache, a new folder
    again = Path(capsys.readouterr().out.splitlines()[-1])
    assert again != folder and json.loads((again / "manifest.json").read_text())["steps"]["score_label"]["status"] == "cached"

    drifted = tmp_path / "drifted.csv"  # words the vocabulary never saw, far shorter than the training reviews
    pd.DataFrame({"text": ["zzq xqv"] * 30}).to_csv(drifted, index=False)
    args, main = _score(tiny_run_copy.root, drifted)
    assert main(args) == 0
    assert "drift: Drift check unknown_share failed: the scored texts' mean share of tokens outside the vocabulary is 1" in capsys.readouterr().out

    assert main([*args, "--set", "score.on_drift=fail"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rnnflow: error: Drift check ") and "score.on_drift is fail" in err[0]
    failed = max((tiny_run_copy.root / "scores").iterdir(), key=lambda folder: folder.name)
    assert json.loads((failed / "manifest.json").read_text())["status"] == "failed", "a run its drift gate failed does not look completed"


@pytest.mark.slow
def test_a_champion_without_a_reference_still_scores_with_one_warning(tiny_run_copy, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tiny_run_copy.folder / "evaluate" / "reference.json").unlink()
    source = tmp_path / "in.csv"
    pd.DataFrame({"text": ["a good film", "a bad film"]}).to_csv(source, index=False)
    args, main = _score(tiny_run_copy.root, source)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("has no evaluate/reference.json") == 1
    assert json.loads((Path(out.splitlines()[-1]) / "manifest.json").read_text())["drift"]["reference"] is False
