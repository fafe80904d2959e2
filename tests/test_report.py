"""The report step: the files a reader opens, what they show, and that they stand alone."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pandas as pd
import pytest

import tasks.report as report
from tasks.evaluate import OOV_MARK, decode_tokens, most_confident_mistakes, write_mistakes
from tasks.report import format_metric, publish_report_artifacts, write_report
from tasks.render import shorten
from tasks.store import StepOutput
from tests.helpers import REPORT_CONFIG as CONFIG
from tests.helpers import make_upstream, toy_encoding


@pytest.fixture(scope="module")
def binary_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp_path = tmp_path_factory.mktemp("binary")
    out = tmp_path / "report"
    summary = write_report(CONFIG, make_upstream(tmp_path, ["neg", "pos"]), out)
    return out, summary


def test_summary_holds_the_headline_metrics(binary_report):
    _, summary = binary_report
    assert summary == {"accuracy": 0.87654, "f1": 0.8761, "roc_auc": 0.9423, "loss": 0.3312, "report": "report.html"}


def test_html_report_shows_the_numbers_and_embeds_its_plots(binary_report):
    out, _ = binary_report
    page = (out / "report.html").read_text(encoding="utf-8")
    assert format_metric(0.87654) == "0.8765"
    assert "0.8765" in page
    assert "preset tiny" in page
    assert "Bidirectional LSTM(8)" in page
    assert page.count("data:image/png;base64,") == 6
    for section in ("Key numbers", "Data validation", "Training", "Confusion matrix", "ROC curve", "Configuration"):
        assert section in page
    assert "best epoch" in page.lower() and "2 (best)" in page


def test_html_report_needs_nothing_from_the_network(binary_report):
    out, _ = binary_report
    page = (out / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<link" not in page and "<script" not in page and "url(" not in page
    # The configuration's download URL is shown as text, not fetched.
    assert "aclImdb_v1.tar.gz" in page


def test_text_from_data_is_escaped(binary_report):
    out, _ = binary_report
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "(None, 100) &lt;masked&gt;" in page
    assert "<masked>" not in page
    assert "&lt;check the source&gt;" in page
    assert "tokens &amp; more" in page
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "&lt;check the source&gt;" in markdown  # in a table cell, where Markdown would render HTML
    assert "(None, 100) <masked>" in markdown  # in a code block, shown literally


def test_validation_checks_show_observed_bound_severity_and_result(binary_report):
    out, _ = binary_report
    page = (out / "report.html").read_text(encoding="utf-8")
    row = re.search(r'<tr class="warn">(.*?)</tr>', page).group(1)
    for cell in ("token_length", "test", "5,123", "5,000", "warning", "FAILED"):
        assert f">{cell}<" in row


def test_markdown_report_has_the_metrics_table_and_plot_links(binary_report):
    out, _ = binary_report
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert markdown.startswith("# rnnflow report: preset tiny")
    assert "| Measure | Value |" in markdown
    assert "| Test accuracy | 0.8765 |" in markdown
    assert "| ROC AUC | 0.9423 |" in markdown
    assert "| true neg | 40 | 5 |" in markdown
    links = re.findall(r"!\[[^\]]*\]\((plots/[^)]+\.png)\)", markdown)
    assert len(links) == 6
    for link in links:
        assert (out / link).is_file()


def test_plots_are_png_files(binary_report):
    out, _ = binary_report
    names = sorted(path.name for path in (out / "plots").iterdir())
    assert names == sorted(f"{name}.png" for name in
                           ("length_histogram", "label_balance", "learning_curves", "confusion_matrix", "roc_curve", "accuracy_by_length"))
    for name in names:
        assert (out / "plots" / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert not [path for path in out.rglob("*") if path.name.endswith(".tmp")]


def test_report_is_the_same_bytes_when_rerun(binary_report, tmp_path):
    out, _ = binary_report
    again = tmp_path / "again"
    write_report(CONFIG, make_upstream(tmp_path, ["neg", "pos"]), again)
    for name in ("report.html", "report.md", "plots/learning_curves.png"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


def test_three_classes_without_roc_curve(tmp_path):
    out = tmp_path / "report"
    summary = write_report(CONFIG, make_upstream(tmp_path, ["neg", "neutral", "pos"]), out)
    assert summary["roc_auc"] is None
    assert not (out / "plots" / "roc_curve.png").exists()
    assert (out / "plots" / "confusion_matrix.png").is_file()
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "No ROC curve" in page and "has 3" in page
    assert ">neutral<" in page
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "| ROC AUC (one-vs-rest macro) | n/a |" in markdown
    assert "| F1 (macro) | 0.8761 |" in markdown and "| Precision (macro) | 0.8811 |" in markdown
    assert "| true neutral | 5 | 40 | 5 |" in markdown


def test_two_classes_keep_the_plain_metric_names(binary_report):
    out, _ = binary_report
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "| F1 | 0.8761 |" in markdown and "(macro)" not in markdown


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # the IHDR chunk


def test_many_classes_keep_the_plots_a_page_wide(tmp_path):
    labels = [f"genre_{index:02d}" for index in range(12)]
    out = tmp_path / "report"
    write_report(CONFIG, make_upstream(tmp_path, labels), out)
    width, height = _png_size(out / "plots" / "confusion_matrix.png")
    assert width <= 1300 and height <= 1200, "20 classes would otherwise draw a 28-inch figure"
    assert _png_size(out / "plots" / "label_balance.png")[0] <= 1400
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "| true / predicted | " + " | ".join(labels) + " |" in markdown
    assert "| genre_11 | 0.8800 | 0.8700 | 0.8750 | 45 |" in markdown


def _add_json(step: StepOutput, name: str, **fields: object) -> None:
    path = step.path / name
    path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), **fields}), encoding="utf-8")


def test_text_coverage_table_shows_kept_and_out_of_vocabulary_shares(tmp_path):
    upstream = make_upstream(tmp_path, ["neg", "pos"])
    _add_json(upstream["validate"], "validation.json", kept_share={
        "train": {"median": 0.98, "mean": 0.97, "p10": 0.9},
        "val": {"median": 0.975, "mean": 0.961, "p10": 0.88},
        "test": {"median": 0.9712, "mean": 0.95, "p10": 0.85},
    })
    _add_json(upstream["encode"], "encode.json", oov_share={"train": 0.01, "val": 0.03, "test": 0.0312})
    out = tmp_path / "report"
    write_report(CONFIG, upstream, out)
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "| Split | Median kept share | Mean kept share | Out-of-vocabulary share |" in markdown
    assert "| train | 98.0% | 97.0% | 1.0% |" in markdown
    assert "| val | 97.5% | 96.1% | 3.0% |" in markdown
    assert "| test | 97.1% | 95.0% | 3.1% |" in markdown
    assert "Text coverage" in markdown
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<th>Median kept share</th>" in page
    assert '<tr><td>test</td><td class="number">97.1%</td><td class="number">95.0%</td><td class="number">3.1%</td></tr>' in page


def test_text_coverage_with_one_figure_shows_the_other_as_n_a(tmp_path):
    upstream = make_upstream(tmp_path, ["neg", "pos"])
    _add_json(upstream["encode"], "encode.json", oov_share={"train": 0.01, "val": 0.03, "test": 0.03})
    out = tmp_path / "report"
    write_report(CONFIG, upstream, out)
    assert "| train | n/a | n/a | 1.0% |" in (out / "report.md").read_text(encoding="utf-8")


def test_runs_without_coverage_figures_have_no_coverage_table(binary_report):
    out, _ = binary_report
    for name in ("report.md", "report.html"):
        text = (out / name).read_text(encoding="utf-8")
        assert "Text coverage" not in text and "kept share" not in text


def test_missing_upstream_file_is_named(tmp_path):
    upstream = make_upstream(tmp_path, ["neg", "pos"])
    (upstream["train"].path / "history.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"history\.json is missing: rerun the train step"):
        write_report(CONFIG, upstream, tmp_path / "report")


def test_publish_is_a_no_op_outside_a_prefect_run(binary_report, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an artifact was created outside a Prefect run")

    for name in ("create_markdown_artifact", "create_table_artifact", "create_link_artifact"):
        monkeypatch.setattr(report, name, refuse)
    out, _ = binary_report
    output = StepOutput(step="report", key="k", dir=str(out), files={}, summary={})
    assert publish_report_artifacts(output, make_upstream(tmp_path, ["neg", "pos"])) is False


def test_publish_inside_a_run_creates_five_keyed_artifacts(binary_report, tmp_path, monkeypatch):
    created = {}
    monkeypatch.setattr(report, "_in_prefect_run", lambda: True)
    monkeypatch.setattr(report, "create_markdown_artifact", lambda **kw: created.setdefault(kw["key"], kw))
    monkeypatch.setattr(report, "create_table_artifact", lambda **kw: created.setdefault("table", kw))
    monkeypatch.setattr(report, "create_link_artifact", lambda **kw: created.setdefault("link", kw))
    out, _ = binary_report
    output = StepOutput(step="report", key="k", dir=str(out), files={}, summary={})
    assert publish_report_artifacts(output, make_upstream(tmp_path, ["neg", "pos"])) is True
    assert {kw["key"] for kw in created.values()} == {"rnnflow-report", "rnnflow-metrics", "rnnflow-report-html", "rnnflow-report-plots",
                                                    "rnnflow-report-full"}
    created["markdown"] = created["rnnflow-report"]
    # The plots ride inline (data: URIs), so the Prefect UI shows them without reaching this machine's files.
    plots = json.loads((out / "report.json").read_text())["plots"]
    assert plots and created["rnnflow-report-plots"]["markdown"].count("](data:image/png;base64,") == len(plots)
    # The whole report too (report.md, plots inline), readable in the UI from any browser, not only report.html's file:// link.
    full = created["rnnflow-report-full"]["markdown"]
    assert full.startswith((out / "report.md").read_text(encoding="utf-8")[:40]) and "](plots/" not in full
    assert full.count("](data:image/png;base64,") == (out / "report.md").read_text(encoding="utf-8").count("](plots/")
    for kw in created.values():
        assert re.fullmatch(r"[a-z0-9-]+", kw["key"])
    assert "| Test accuracy | 0.8765 |" in created["markdown"]["markdown"]
    assert {"metric": "accuracy", "value": 0.87654} in created["table"]["table"]
    assert created["link"]["link"] == (out / "report.html").resolve().as_uri()
    assert created["link"]["link"].startswith("file://")


# --------------------------------------------------------------------------- what happened to the run, at the top


def _header(page: str) -> str:
    return page[page.index("<header>"):page.index("</header>")]


def test_the_top_gives_the_validation_verdict_promotion_will_reach(binary_report):
    out, _ = binary_report
    page = (out / "report.html").read_text(encoding="utf-8")
    # token_length failed as a warning, and the default promote.blocking_warnings leave it out: amber, not green.
    verdict = "passed with 1 warning (none blocks promotion: promote.blocking_warnings)"
    assert f'<strong>Validation:</strong> <span class="badge warn">{verdict}</span>' in _header(page)
    assert "validation passed<" not in page and 'class="badge ok"' not in page
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert f"**Validation:** {verdict} · [Data Docs](../validate/data_docs/index.html)" in markdown.split("## Key numbers")[0]
    assert f"| Data validation | {verdict} |" in markdown


def test_a_warning_that_blocks_promotion_is_red_at_the_top(tmp_path):
    out = tmp_path / "report"
    write_report({**CONFIG, "promote": {"blocking_warnings": ["token_length"]}}, make_upstream(tmp_path, ["neg", "pos"]), out)
    page = (out / "report.html").read_text(encoding="utf-8")
    verdict = ("passed with 1 warning: not promotable unless token_length on test (warning) is fixed "
               "or its check left out of promote.blocking_warnings")
    assert f'<span class="badge bad">{verdict}</span>' in _header(page)
    assert "passed with 1 warning (none blocks" not in page
    row = re.search(r'<tr class="fail">(.*?)</tr>', page).group(1)  # red in the checks too, not an amber warning
    assert ">token_length<" in row and ">FAILED, blocks promotion<" in row
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert f"**Validation:** {verdict}" in markdown and f"| Data validation | {verdict} |" in markdown


def test_every_check_passing_is_green_and_counted(tmp_path):
    upstream = make_upstream(tmp_path, ["neg", "pos"])
    validation = json.loads((upstream["validate"].path / "validation.json").read_text(encoding="utf-8"))
    validation["checks"][1]["passed"] = True
    _add_json(upstream["validate"], "validation.json", checks=validation["checks"], warnings=[])
    out = tmp_path / "report"
    write_report(CONFIG, upstream, out)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert '<span class="badge ok">passed: all 2 checks</span>' in _header(page)
    assert "No check failed." in page


def test_the_top_links_to_the_promotion_decision_page(binary_report):
    out, _ = binary_report
    header = _header((out / "report.html").read_text(encoding="utf-8"))
    assert ("<strong>Promotion:</strong> The promotion decision (promoted or not, and why) is on its own page: "
            '<a href="../promote/decision.html">promote/decision.html</a>') in header
    markdown = (out / "report.md").read_text(encoding="utf-8").split("## Key numbers")[0]
    assert ("**Promotion:** The promotion decision (promoted or not, and why) is on its own page: "
            "[promote/decision.html](../promote/decision.html)") in markdown


def test_passing_checks_are_folded_and_failed_ones_shown(binary_report):
    out, _ = binary_report
    page = (out / "report.html").read_text(encoding="utf-8")
    section = page[page.index('<section id="data-validation">'):]
    section = section[:section.index("</section>")]
    folded = re.search(r"<details><summary>1 check passed</summary>(.*?)</details>", section).group(1)
    assert ">class_balance<" in folded and ">token_length<" not in folded
    shown = section[:section.index("<details>")]
    assert "1 check failed:" in shown and ">token_length<" in shown and ">FAILED<" in shown
    assert '<a href="../validate/data_docs/index.html">validate/data_docs/index.html</a>' in section


# --------------------------------------------------------------------------- the most confident mistakes


def _add_mistakes(upstream: dict, rows: list[dict]) -> None:
    frame = pd.DataFrame(rows, columns=["row", "id", "label", "predicted", "probability", "length", "text"])
    frame.to_parquet(upstream["evaluate"].path / "mistakes.parquet", index=False)


LONG_REVIEW = "word " * 150  # 750 characters


def test_the_most_confident_mistakes_are_shown_per_true_class(tmp_path):
    upstream = make_upstream(tmp_path, ["neg", "pos"])
    _add_mistakes(upstream, [
        {"row": 17, "id": 4, "label": 0, "predicted": 1, "probability": 0.98765, "length": 9, "text": "a <b>bold</b> | piped review"},
        {"row": 3, "id": 4, "label": 0, "predicted": 1, "probability": 0.91, "length": 150, "text": LONG_REVIEW},
        {"row": 250, "id": 12, "label": 1, "predicted": 0, "probability": 0.88, "length": 5, "text": f"not {OOV_MARK} at all"},
    ])
    out = tmp_path / "report"
    write_report(CONFIG, upstream, out)
    page = (out / "report.html").read_text(encoding="utf-8")
    section = page[page.index('<section id="most-confident-mistakes">'):]
    section = section[:section.index("</section>")]
    assert "<h3>True class neg: the 2 most confident of 5 misclassified</h3>" in section  # 5: the confusion matrix's row
    assert "<h3>True class pos: the 1 most confident of 5 misclassified</h3>" in section
    assert ('<tr><td class="number">17</td><td>neg</td><td>pos</td><td class="number">0.9877</td>'
            "<td>a &lt;b&gt;bold&lt;/b&gt; | piped review</td></tr>") in section
    assert "<b>bold" not in page
    shortened = re.search(r"<td>(word word[^<]*)</td>", section).group(1)
    assert shortened.endswith("word…") and len(shortened) <= 400
    assert section.index(">17<") < section.index(">3<") < section.index(">250<")
    assert f"not {OOV_MARK} at all" in section
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "### True class pos: the 1 most confident of 5 misclassified" in markdown
    assert "| 17 | neg | pos | 0.9877 | a &lt;b&gt;bold&lt;/b&gt; \\| piped review |" in markdown
    assert markdown.index("## Most confident mistakes") < markdown.index("## Model")


def test_a_class_without_mistakes_says_so(tmp_path):
    upstream = make_upstream(tmp_path, ["neg", "pos"])
    _add_mistakes(upstream, [{"row": 1, "id": 1, "label": 1, "predicted": 0, "probability": 0.7, "length": 3, "text": "fine"}])
    _add_json(upstream["evaluate"], "metrics.json", confusion_matrix=[[45, 0], [5, 40]])
    out = tmp_path / "report"
    write_report(CONFIG, upstream, out)
    assert "### True class neg: no review misclassified" in (out / "report.md").read_text(encoding="utf-8")


def test_a_run_evaluated_before_the_mistakes_file_says_so(binary_report):
    out, _ = binary_report
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "## Most confident mistakes\n\nNot recorded: this run's evaluate step is from before evaluate/mistakes.parquet" in markdown


def test_a_next_token_run_has_no_mistakes_section(tmp_path):
    upstream = make_upstream(tmp_path, ["neg", "pos"])
    _add_json(upstream["evaluate"], "metrics.json", task="next_token")
    out = tmp_path / "report"
    write_report(CONFIG, upstream, out)
    for name in ("report.html", "report.md"):
        assert "Most confident mistakes" not in (out / name).read_text(encoding="utf-8")


def test_most_confident_mistakes_keeps_the_wrong_ones_by_probability():
    predictions = pd.DataFrame({
        "row": range(8),
        "label": [0, 0, 0, 0, 1, 1, 1, 1],
        "predicted": [1, 1, 0, 1, 0, 1, 0, 0],
        "probability": [0.6, 0.9, 0.99, 0.9, 0.7, 0.95, 0.8, 0.55],
    })
    mistakes = most_confident_mistakes(predictions, per_class=2)
    assert mistakes[["row", "label"]].values.tolist() == [[1, 0], [3, 0], [6, 1], [4, 1]]  # a tie goes to the earlier row


def test_decoded_tokens_read_as_the_model_read_them():
    words = {"tokens": ["the", "film", "bored", "me"], "index_from": 3, "tokenizer": "word"}
    assert decode_tokens([1, 3, 4, 2, 5, 6, 0, 0], words) == f"the film {OOV_MARK} bored me"
    assert decode_tokens([1, 3, 4, 2], {**words, "tokens": list("ab "), "tokenizer": "char"}) == f"ab{OOV_MARK}"
    pieces = {"tokens": ["\u2581the", "\u2581fil", "m"], "index_from": 3, "tokenizer": "subword"}
    assert decode_tokens([1, 3, 4, 5], pieces) == "the film"


def test_mistakes_of_an_encoding_without_token_ids_show_no_text(tmp_path):
    encoded = toy_encoding(tmp_path / "encode", test=True)  # its tokens_test.parquet has id and length only
    predictions = pd.DataFrame({"row": [0, 1, 2], "label": [0, 1, 1], "predicted": [1, 0, 1], "probability": [0.9, 0.8, 0.7]})
    write_mistakes(predictions, encoded, tmp_path / "evaluate")
    mistakes = pd.read_parquet(tmp_path / "evaluate" / "mistakes.parquet")
    assert mistakes["row"].tolist() == [0, 1] and mistakes["text"].isna().all()
    upstream = make_upstream(tmp_path, ["neg", "pos"])
    (tmp_path / "evaluate" / "mistakes.parquet").rename(upstream["evaluate"].path / "mistakes.parquet")
    write_report(CONFIG, upstream, tmp_path / "report")
    assert "| 0 | neg | pos | 0.9000 | (not recorded) |" in (tmp_path / "report" / "report.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_real_run_s_mistakes_are_its_test_reviews_in_order(tiny_run):
    """evaluate's `row` is the review's place in ingest/test.parquet: each mistake's label, text and tokens are that row's;
    the report shows the text as written, and the promote step's page links back to the report."""
    from tasks.text import tokenize

    folder = tiny_run.folder
    test = pd.read_parquet(folder / "ingest" / "test.parquet")
    predictions = pd.read_parquet(folder / "evaluate" / "predictions.parquet")
    assert predictions["row"].tolist() == list(range(len(test)))
    assert predictions["label"].tolist() == test["label"].tolist()
    mistakes = pd.read_parquet(folder / "evaluate" / "mistakes.parquet")
    assert len(mistakes) and (mistakes["label"] != mistakes["predicted"]).all()
    vocabulary = set(json.loads((folder / "encode" / "vocab.json").read_text(encoding="utf-8"))["tokens"])
    for row in mistakes.itertuples():
        assert test["label"].iloc[row.row] == row.label
        expected = [token if token in vocabulary else OOV_MARK for token in tokenize(test["text"].iloc[row.row])]
        assert row.tokens == " ".join(expected)
        assert row.text == test["text"].iloc[row.row]
    page = (folder / "report" / "report.html").read_text(encoding="utf-8")
    assert "Most confident mistakes" in page and f">{mistakes['row'].iloc[0]}<" in page
    assert html.escape(shorten(mistakes["text"].iloc[0], 400)) in page, "the review as written"
    assert 'href="../promote/decision.html"' in page
    decision_page = (folder / "promote" / "decision.html").read_text(encoding="utf-8")
    assert "<h1" in decision_page and "Promoted" in decision_page and 'href="../report/report.html"' in decision_page


def test_a_refitted_model_is_named_as_such_beside_the_fit_whose_figures_are_shown(tmp_path):
    upstream = make_upstream(tmp_path, ["neg", "pos"])
    _add_json(upstream["train"], "train.json", refit=[{"rows": 100, "epochs": 2, "seconds": 3.5}])
    out = tmp_path / "report"
    write_report(CONFIG, upstream, out)
    page = " ".join(html.unescape((out / "report.html").read_text(encoding="utf-8")).split())
    assert ("The model saved was fitted again from its start (train.refit) on 100 rows of train and val together, for 2 epochs, "
            "as the fit above kept; the figures and curves here are that fit's") in page
