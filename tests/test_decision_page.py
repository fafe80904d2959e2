"""promote/decision.html: what a reader sees of a promotion decision, and the link to the flow run in Prefect's UI."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

from tasks.decision_page import prefect_flow_run_url, render_decision_page
from tasks.promote import Candidate, ChampionScore, decide, validation_verdict

RUN_ID = "20260101T000000000Z-abcd"


def _candidate(accuracy: float, failed: list[dict] | None = None) -> Candidate:
    return Candidate(run_id=RUN_ID, test={"accuracy": accuracy}, labels=["neg", "pos"], failed_checks=failed or [], n_checks=34)


def _page(decision: dict, **options) -> str:
    return render_decision_page(decision, run_id=RUN_ID, model="imdb", **options)


def test_a_promoted_run_s_page_says_so_and_why():
    page = _page(decide(_candidate(0.88), None, {}))
    assert "<title>Promoted: run 20260101T000000000Z-abcd</title>" in page
    assert '<h1 class="ok">Promoted</h1>' in page
    assert "<strong>Why:</strong> first run: there is no champion yet</p>" in page
    assert "model <strong>imdb</strong>: the run competes for this model's champion only" in page
    assert '<strong>Validation:</strong> <span class="badge ok">passed: all 34 checks</span>' in page
    assert "<td>This run</td><td>0.8800</td>" in page


def test_a_run_behind_the_champion_is_not_promoted_and_the_page_shows_both_numbers():
    champion = ChampionScore(run_id="older-run", value=0.9, own_value=0.9)
    page = _page(decide(_candidate(0.88), champion, {}))
    assert '<h1 class="bad">Not promoted</h1>' in page
    assert "<strong>Why:</strong> accuracy 0.8800 &lt;= champion 0.9000 + 0.0000</p>" in page
    assert "<td>Champion older-run</td><td>0.9000 (same test split)</td>" in page
    assert "<td>Delta</td><td>-0.0200</td>" in page


def test_a_blocking_warning_is_red_on_the_page_as_in_the_report():
    overlap = {"check": "train_test_overlap", "split": "test", "severity": "warning"}
    page = _page(decide(_candidate(0.88, [overlap]), None, {}))
    assert '<h1 class="bad">Not promoted</h1>' in page
    assert "validation check failed: train_test_overlap on test (warning)" in page
    verdict = validation_verdict([overlap], 34, ["train_test_overlap"])["text"]
    assert f'<span class="badge bad">{verdict}</span>' in page


def test_promotion_disabled_has_its_own_title():
    page = _page(decide(_candidate(0.88), None, {"enabled": False}))
    assert '<h1 class="neutral">Not promoted (promotion disabled)</h1>' in page
    assert "promote.enabled is false: the champion was not consulted" in page


def test_the_page_links_to_the_report_and_the_data_docs_and_needs_nothing_from_the_network():
    page = _page(decide(_candidate(0.88), None, {}))
    assert '<a href="../report/report.html">' in page
    assert '<a href="../validate/data_docs/index.html">' in page
    assert "Prefect UI" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<link" not in page and "<script" not in page and "url(" not in page


def test_the_flow_run_link_is_shown_when_given_and_only_for_a_web_address():
    decision = decide(_candidate(0.88), None, {})
    url = "http://127.0.0.1:4200/runs/flow-run/0d1e"
    assert f'<a href="{url}">The flow run in the Prefect UI</a>' in _page(decision, prefect_run_url=url)
    assert "Prefect UI" not in _page(decision, prefect_run_url="javascript:alert(1)")


def test_text_from_the_decision_is_escaped():
    decision = {**decide(_candidate(0.88), None, {}), "reason": "<script>alert(1)</script> by hand"}
    page = render_decision_page(decision, run_id="<run>", model="a&b")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; by hand" in page
    assert "<strong>&lt;run&gt;</strong>" in page and "<strong>a&amp;b</strong>" in page


def test_a_decision_recorded_before_the_verdict_still_renders():
    decision = decide(_candidate(0.88), None, {})
    decision["validation"] = {"n_checks": 3, "failed_checks": []}
    page = _page(decision)
    assert "<strong>Validation:</strong>" not in page
    assert "<td>Validation</td><td>all 3 checks passed</td>" in page


# --------------------------------------------------------------------------- the flow run's address


@pytest.fixture
def no_prefect_address(monkeypatch):
    for name in ("PREFECT_API_URL", "PREFECT_UI_URL"):
        monkeypatch.delenv(name, raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL, PREFECT_UI_URL}):
        yield


def test_no_flow_run_no_address(no_prefect_address):
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert prefect_flow_run_url(None) is None


def test_without_a_server_of_the_user_s_own_there_is_no_address(no_prefect_address):
    assert prefect_flow_run_url("0d1e") is None


def test_a_server_of_the_user_s_own_gives_the_flow_run_s_page(no_prefect_address):
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert prefect_flow_run_url("0d1e") == "http://127.0.0.1:4200/runs/flow-run/0d1e"
    with temporary_settings({PREFECT_API_URL: "http://prefect.internal:4200/api", PREFECT_UI_URL: "https://prefect.example.org"}):
        assert prefect_flow_run_url("0d1e") == "https://prefect.example.org/runs/flow-run/0d1e"


def test_a_temporary_server_gives_no_address_even_as_the_api_url(no_prefect_address, monkeypatch):
    """A sweep sets PREFECT_API_URL to its temporary server (flows/sweep.py), which dies with the process."""
    server = SimpleNamespace(api_url="http://127.0.0.1:8143/api", running=True)
    module = SimpleNamespace(SubprocessASGIServer=SimpleNamespace(_instances={None: server}))
    monkeypatch.setitem(sys.modules, "prefect.server.api.server", module)
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:8143/api"}):
        assert prefect_flow_run_url("0d1e") is None
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert prefect_flow_run_url("0d1e") == "http://127.0.0.1:4200/runs/flow-run/0d1e"


def test_the_decision_page_shows_the_runs_data_against_the_champions(tmp_path: Path):
    from tasks.champion_data import data_against_champion
    from tasks.store import write_json

    reference = {"format": 1, "tokens": {"p10": 88.0, "p50": 171.0, "p90": 438.0}, "kept_share": 0.967, "unknown_share": 0.128,
                 "class_balance": {"neg": 0.5, "pos": 0.5}, "predicted_shares": {"neg": 0.545, "pos": 0.455}}
    short = {**reference, "tokens": {"p10": 2.0, "p50": 6.0, "p90": 17.0}, "unknown_share": 0.99}
    for name, figures in (("new", short), ("champion", reference)):
        write_json(tmp_path / name / "evaluate" / "reference.json", figures)
    data = data_against_champion(tmp_path / "new", tmp_path / "champion", "20260101T000000000Z-cham")
    assert data["note"] == "4 of 9 figures outside the champion's bounds: tokens_p10, tokens_p50, tokens_p90, unknown_share"
    assert data_against_champion(tmp_path / "champion", tmp_path / "champion", "x")["note"] == "all 9 figures within the champion's bounds"
    page = render_decision_page({"outcome": "not_promoted", "reason": "r", "data_vs_champion": data}, run_id="R", model="m")
    assert "<h2>This run's data against champion 20260101T000000000Z-cham's</h2>" in page
    assert "<td>unknown_share</td><td>0.990</td><td>0.128</td><td>at most 0.228</td><td>OUTSIDE</td>" in page
