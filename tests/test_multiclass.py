"""More than two classes, end to end: a table of star-rated reviews through `rnnflow run`, the report and `rnnflow predict`.

The table comes from a small archive in the aclImdb layout (tests/conftest.py), whose file names
carry each review's star rating (<id>_<rating>.txt); the ratings are grouped into four classes,
written as strings. One flow run is shared by every assert on it; the numeric-labels variant runs
the steps as plain functions, without Prefect, to stay cheap.
"""

from __future__ import annotations

import contextlib
import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.cli import main
from tasks.store import read_json
from tests.helpers import TINY_MODEL, make_imdb_archive

STAR_CLASSES = ["1-2", "3-4", "7-8", "9-10"]  # the order ingest.json must record: alphabetical, as they are not numbers
# The table's columns, then the tiny configuration's encode, model and train sections (tests/helpers.py), one epoch.
TINY = [
    "data.source=table",
    "data.text_column=review",
    "data.label_column=stars",
    "data.split_column=part",
    "data.rating_column=rating",
    *TINY_MODEL,
    "train.epochs=1",
]


def star_class(rating: int) -> str:
    """IMDb's ratings (1-4 negative, 7-10 positive) in four classes of two stars each."""
    return next(name for name in STAR_CLASSES if int(name.split("-")[0]) <= rating <= int(name.split("-")[1]))


def star_table(archive: Path, target: Path) -> Path:
    """The archive's reviews as one CSV: review text, stars (a class name), rating, and the archive's own split."""
    rows = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            found = re.fullmatch(r"aclImdb/(train|test)/(neg|pos)/(\d+)_(\d+)\.txt", member.name)
            if found:
                split, _, _, rating = found.groups()
                text = tar.extractfile(member).read().decode("utf-8")
                rows.append({"review": text, "stars": star_class(int(rating)), "rating": int(rating), "part": split})
    frame = pd.DataFrame(rows)
    assert sorted(frame["stars"].unique()) == STAR_CLASSES, "the synthetic archive holds every class"
    frame.to_csv(target, index=False)
    return target


pytestmark = pytest.mark.slow  # one flow run shared by the module, and a model trained by the steps


@pytest.fixture(scope="module")
def star_run(prefect_api, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One `rnnflow run` on the four-class table, then `rnnflow predict` with its model."""
    tmp_path = tmp_path_factory.mktemp("stars")
    table = star_table(make_imdb_archive(tmp_path / "aclImdb_small.tar.gz", per_class=40), tmp_path / "stars.csv")
    root = tmp_path / "artifacts"
    # capsys is function-scoped and this fixture is not: read what the CLI prints by redirecting stdout.
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", "--preset", "demo", *[f"--set={item}" for item in [*TINY, f"data.path={table}"]], "--artifacts", str(root)])
    printed = out.getvalue()
    assert code == 0, printed
    folder = Path(printed.strip().splitlines()[-1])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        predict_code = main(["predict", "--artifacts", str(root), "--run", "latest", "the film was wonderful and moving", "dull, boring and awful"])
    return {"folder": folder, "printed": printed, "predict_code": predict_code, "predicted": out.getvalue()}


def test_the_run_completes_and_prints_its_macro_scores(star_run):
    manifest = read_json(star_run["folder"] / "manifest.json")
    assert manifest["status"] == "completed"
    assert all(step["status"] == "completed" for step in manifest["steps"].values())
    assert re.search(r"^test accuracy \d\.\d{4}  f1 \d\.\d{4}  roc_auc \d\.\d+", star_run["printed"], re.MULTILINE)
    assert star_run["printed"].strip().splitlines()[-2] == f"report {star_run['folder'] / 'report' / 'report.html'}", "the page to open, before the folder"


def test_ingest_records_the_four_class_names_in_order(star_run):
    folder = star_run["folder"]
    info = read_json(folder / "ingest" / "ingest.json")
    assert info["labels"] == STAR_CLASSES
    assert set(info["label_counts"]["test"]) == set(STAR_CLASSES)
    assert read_json(folder / "encode" / "labels.json") == STAR_CLASSES
    test = pd.read_parquet(folder / "ingest" / "test.parquet")
    assert all(star_class(int(rating)) == STAR_CLASSES[label] for rating, label in zip(test["rating"], test["label"]))


def test_the_model_ends_in_a_softmax_over_the_four_classes(star_run):
    from tasks.predict import load_run_model

    model = load_run_model(star_run["folder"] / "train" / "model.keras")
    assert model.output_shape == (None, 4)
    assert model.layers[-1].get_config()["activation"] == "softmax"
    assert read_json(star_run["folder"] / "validate" / "validation.json")["passed"]


def test_metrics_are_macro_with_per_class_scores_and_a_4x4_confusion_matrix(star_run):
    metrics = read_json(star_run["folder"] / "evaluate" / "metrics.json")
    assert metrics["labels"] == STAR_CLASSES
    assert list(metrics["per_class"]) == STAR_CLASSES
    for scores in metrics["per_class"].values():
        assert set(scores) == {"precision", "recall", "f1", "support"}
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (4, 4)
    assert matrix.sum() == metrics["test"]["n"]
    assert matrix.sum(axis=1).tolist() == [metrics["per_class"][name]["support"] for name in STAR_CLASSES]
    test = metrics["test"]
    # Macro F1 is the unweighted mean of the per-class F1s; ROC AUC is one-vs-rest macro, defined here.
    assert test["f1"] == pytest.approx(np.mean([metrics["per_class"][name]["f1"] for name in STAR_CLASSES]))
    assert test["recall"] == pytest.approx(np.mean([metrics["per_class"][name]["recall"] for name in STAR_CLASSES]))
    assert test["roc_auc"] is not None and 0.0 <= test["roc_auc"] <= 1.0
    assert metrics["roc_curve"] is None


def test_report_names_the_classes_in_the_per_class_and_confusion_tables(star_run):
    report = star_run["folder"] / "report"
    markdown = (report / "report.md").read_text(encoding="utf-8")
    assert "| Class | Precision | Recall | F1 | Support |" in markdown
    assert "| true / predicted | " + " | ".join(STAR_CLASSES) + " |" in markdown
    for name in STAR_CLASSES:
        assert re.search(rf"^\| {re.escape(name)} \| \d\.\d{{4}} \| \d\.\d{{4}} \| \d\.\d{{4}} \| \d+ \|$", markdown, re.MULTILINE), name
        assert re.search(rf"^\| true {re.escape(name)} (\| \d+ ){{4}}\|$", markdown, re.MULTILINE), name
    page = (report / "report.html").read_text(encoding="utf-8")
    for name in STAR_CLASSES:
        assert f"<td>{name}</td>" in page and f"<th>{name}</th>" in page and f"<td>true {name}</td>" in page
    assert "No ROC curve" in page and "has 4" in page
    # The headline scores say they are macro averages, as metrics.json's are past two classes.
    assert re.search(r"^\| F1 \(macro\) \| \d\.\d{4} \|$", markdown, re.MULTILINE)
    assert re.search(r"^\| ROC AUC \(one-vs-rest macro\) \| \d\.\d{4} \|$", markdown, re.MULTILINE)
    if "oov_share" in read_json(star_run["folder"] / "encode" / "encode.json"):  # encode's coverage figure, where it has one
        assert "| Split | Median kept share | Mean kept share | Out-of-vocabulary share |" in markdown
    assert (report / "plots" / "confusion_matrix.png").is_file()


def test_predict_prints_a_class_name_for_each_text(star_run):
    assert star_run["predict_code"] == 0
    lines = star_run["predicted"].strip().splitlines()
    assert lines[0] == f"run {star_run['folder'].name}"
    assert lines[1].split() == ["row", "label", "probability", "text"]
    rows = lines[2:]
    assert len(rows) == 2
    for number, (row, text) in enumerate(zip(rows, ("the film was wonderful", "dull, boring and awful")), start=1):
        place, label, probability, *_ = row.split()
        assert place == str(number), "each prediction keyed to its text's place among the arguments"
        assert label in STAR_CLASSES
        assert 0.25 <= float(probability) <= 1.0, "the likeliest of four classes has at least a quarter"
        assert text in row


# --------------------------------------------------------------------------- numeric labels, the steps without Prefect


def test_numeric_labels_one_to_five_train_score_and_predict_by_name(tmp_path: Path):
    from tasks.config import DataConfig, EncodeConfig, ModelConfig, TrainConfig
    from tasks.encode import encode_reviews
    from tasks.evaluate import evaluate_model
    from tasks.ingest import ingest_reviews, locate_source
    from tasks.predict import load_predictor, predict_texts
    from tasks.synthetic import synthetic_reviews
    from tasks.train import train_model

    frame = synthetic_reviews(150, seed=3)
    # Five classes, the rating's word in every text so there is something to learn; the first ten
    # labels are written 1.0, 2.0, ...: a label is its number, not its spelling.
    stars = np.arange(len(frame)) % 5 + 1
    words = ["one", "two", "three", "four", "five"]
    table = pd.DataFrame({"text": [f"{text} {words[s - 1]} stars." for text, s in zip(frame["text"], stars)],
                          "label": pd.Series([float(s) if i < 10 else int(s) for i, s in enumerate(stars)], dtype=object)})
    path = tmp_path / "five.tsv"
    table.to_csv(path, index=False, sep="\t")
    steps = {name: tmp_path / name for name in ("ingest", "encode", "train", "evaluate")}
    for folder in steps.values():
        folder.mkdir()

    data = DataConfig(source="table", path=str(path))
    assert ingest_reviews(data, locate_source(data), steps["ingest"])["labels"] == ["1", "2", "3", "4", "5"]
    encode_reviews(EncodeConfig(num_words=200, max_len=40), steps["ingest"], steps["encode"])
    train_model(ModelConfig(cell="gru", units=8, embedding_dim=8, bidirectional=False), TrainConfig(epochs=1, learning_rate=0.01),
                steps["encode"], steps["train"])
    evaluate_model(steps["encode"], steps["train"], steps["evaluate"])

    metrics = read_json(steps["evaluate"] / "metrics.json")
    assert list(metrics["per_class"]) == ["1", "2", "3", "4", "5"]
    assert np.array(metrics["confusion_matrix"]).shape == (5, 5)
    assert metrics["test"]["roc_auc"] is not None

    run = tmp_path / "run"
    run.mkdir()
    for name in ("encode", "train"):
        (run / name).symlink_to(steps[name])
    predictions = predict_texts(load_predictor(run), ["five stars, wonderful", "one star, awful"])
    assert set(predictions["label"]) <= {"1", "2", "3", "4", "5"}
    assert [f"probability_{n}" for n in "12345"] == [c for c in predictions.columns if c.startswith("probability_")]
