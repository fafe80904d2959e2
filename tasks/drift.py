"""Drift: a scoring run's inputs and predictions against the reference its champion was trained on.

Every scored text is reduced to a few numbers (tasks.reference.row_figures: tokens, unknown_share,
kept_share; and one 0/1 column per predicted class), and a Great Expectations suite compares them with
the champion's evaluate/reference.json, bounded by the score section's thresholds:

    tokens_p10, tokens_p50, tokens_p90   within the reference's quantile divided or multiplied by max_token_ratio
    kept_share                           median at least the reference's minus max_kept_share_drop
    unknown_share                        mean at most the reference's plus max_unknown_share_rise
    predicted_share:<label>              within max_class_share_shift of the reference's test-split share

Results, the suite and offline Data Docs are written as validate writes its own (tasks/validate.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.reference import QUANTILES, quantile_name
from tasks.score_config import ScoreConfig
from tasks.store import write_json

SUITE_NAME = "rnnflow_score_drift"
DRIFT_FILE = "drift.json"


def figure_frame(figures: pd.DataFrame, predicted: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """The frame the suite runs on: the per-text figures and one 0/1 column per predicted label."""
    frame = figures[["tokens", "kept_share", "unknown_share"]].copy()
    for index, label in enumerate(labels):
        frame[f"predicted_{label}"] = (np.asarray(predicted) == index).astype(np.float32)
    return frame


def _token_ranges(reference: dict[str, Any], ratio: float) -> list[list[float]]:
    return [[reference["tokens"][quantile_name(q)] / ratio, reference["tokens"][quantile_name(q)] * ratio] for q in QUANTILES]


def _quantile_expectation(gxe: Any) -> type:
    """GX's ExpectColumnQuantileValuesToBeBetween, whose pandas result says success as numpy's bool, which its own
    results store then cannot write as JSON (GX 1.x); this one says it as Python's."""
    global _QUANTILES_CLASS
    if _QUANTILES_CLASS is None:
        class ExpectColumnQuantileValuesToBeBetweenJson(gxe.ExpectColumnQuantileValuesToBeBetween):
            def _validate(self, metrics: dict, runtime_configuration: dict | None = None, execution_engine: Any = None) -> dict:
                outcome = super()._validate(metrics, runtime_configuration, execution_engine)
                return {**outcome, "success": bool(outcome["success"])}

        _QUANTILES_CLASS = ExpectColumnQuantileValuesToBeBetweenJson
    return _QUANTILES_CLASS


_QUANTILES_CLASS: type | None = None


def drift_expectations(gxe: Any, reference: dict[str, Any], labels: list[str], cfg: ScoreConfig) -> list[Any]:
    """The suite's expectations, each tagged with the figures it checks (meta "figures")."""
    expectations = [
        _quantile_expectation(gxe)(
            column="tokens", quantile_ranges={"quantiles": list(QUANTILES), "value_ranges": _token_ranges(reference, cfg.max_token_ratio)},
            allow_relative_error=0.0, meta={"figures": [f"tokens_{quantile_name(q)}" for q in QUANTILES]}),
    ]
    if reference.get("kept_share") is not None:
        expectations.append(gxe.ExpectColumnMedianToBeBetween(
            column="kept_share", min_value=max(reference["kept_share"] - cfg.max_kept_share_drop, 0.0), meta={"figures": ["kept_share"]}))
    if reference.get("unknown_share") is not None:
        expectations.append(gxe.ExpectColumnMeanToBeBetween(
            column="unknown_share", max_value=min(reference["unknown_share"] + cfg.max_unknown_share_rise, 1.0), meta={"figures": ["unknown_share"]}))
    for label in labels:
        share = reference["predicted_shares"].get(label, 0.0)
        expectations.append(gxe.ExpectColumnMeanToBeBetween(
            column=f"predicted_{label}", min_value=max(share - cfg.max_class_share_shift, 0.0),
            max_value=min(share + cfg.max_class_share_shift, 1.0), meta={"figures": [f"predicted_share:{label}"]}))
    return expectations


def observed_figures(frame: pd.DataFrame, labels: list[str]) -> dict[str, float | None]:
    """Every drift figure of the scored texts, as the suite measures it."""
    tokens = frame["tokens"].to_numpy(dtype=np.float64)
    values: dict[str, float | None] = {f"tokens_{quantile_name(q)}": float(np.quantile(tokens, q)) if len(tokens) else None for q in QUANTILES}
    for column in ("kept_share", "unknown_share"):
        series = frame[column].dropna()
        values[column] = None if series.empty else float(series.median() if column == "kept_share" else series.mean())
    for label in labels:
        values[f"predicted_share:{label}"] = float(frame[f"predicted_{label}"].mean()) if len(frame) else None
    return values


def reference_figures(reference: dict[str, Any], labels: list[str]) -> dict[str, float | None]:
    values: dict[str, float | None] = {f"tokens_{quantile_name(q)}": reference["tokens"][quantile_name(q)] for q in QUANTILES}
    values["kept_share"], values["unknown_share"] = reference.get("kept_share"), reference.get("unknown_share")
    values.update({f"predicted_share:{label}": reference["predicted_shares"].get(label) for label in labels})
    return values


FIGURE_WORDS = {
    "tokens_p10": "10th percentile of tokens per text", "tokens_p50": "median tokens per text", "tokens_p90": "90th percentile of tokens per text",
    "kept_share": "median share of characters kept in tokens", "unknown_share": "mean share of tokens outside the vocabulary",
}


def describe(figure: str) -> str:
    if figure.startswith("predicted_share:"):
        return f"share of texts predicted {figure.split(':', 1)[1]!r}"
    return FIGURE_WORDS[figure]


def _number(value: float | None) -> str:
    if value is None:
        return "none"
    return f"{value:.0f}" if abs(value) >= 10 or float(value).is_integer() else f"{value:.3f}"


def _outcomes(result: Any) -> dict[str, tuple[bool, Any]]:
    """figure -> (passed, GX's observed value), from a suite result; the quantile expectation gives one per quantile."""
    found: dict[str, tuple[bool, Any]] = {}
    for item in result.results:
        figures = (item.expectation_config.meta or {}).get("figures", [])
        details = ((item.result or {}).get("details") or {}).get("success_details")
        observed = (item.result or {}).get("observed_value")
        if len(figures) > 1 and details and isinstance(observed, dict):
            found.update({f: (bool(ok), v) for f, ok, v in zip(figures, details, observed.get("values", [None] * len(figures)))})
        else:
            found.update({f: (bool(item.success), observed) for f in figures})
    return found


def figure_rows(result: Any, observed: dict[str, float | None], expected: dict[str, float | None], bounds: dict[str, str]) -> list[dict[str, Any]]:
    """One row per figure: its value, the reference's, the bound, whether it passed, and its sentence."""
    outcomes = _outcomes(result) if result is not None else {}
    rows = []
    for figure, value in observed.items():
        reference = expected.get(figure)
        passed = outcomes.get(figure, (True, None))[0]
        verb = "passed" if passed else "failed"
        sentence = (f"Drift check {figure} {verb}: the scored texts' {describe(figure)} is {_number(value)}, "
                    f"the champion's reference {_number(reference)} (bound {bounds.get(figure, 'none')})")
        rows.append({"figure": figure, "value": value, "reference": reference, "bound": bounds.get(figure),
                     "passed": passed, "message": sentence + "."})
    return rows


def _bounds(expectations: list[Any]) -> dict[str, str]:
    bounds = {}
    for expectation in expectations:
        figures = expectation.meta["figures"]
        if len(figures) > 1:
            for figure, (low, high) in zip(figures, expectation.quantile_ranges["value_ranges"]):
                bounds[figure] = f"{_number(low)} to {_number(high)}"
        else:
            low, high = expectation.min_value, expectation.max_value
            bounds[figures[0]] = f"{_number(low)} to {_number(high)}" if low is not None and high is not None else (
                f"at least {_number(low)}" if low is not None else f"at most {_number(high)}")
    return bounds


def check_drift(frame: pd.DataFrame, labels: list[str], reference: dict[str, Any] | None, cfg: ScoreConfig, out_dir: Path) -> dict[str, Any]:
    """Run the drift suite over the figure frame (figure_frame) and write drift.json, gx/ and data_docs/ to out_dir.

    Without a reference (a champion trained before references) the figures are still measured and written,
    with one warning, and nothing is checked."""
    observed = observed_figures(frame, labels)
    out_dir = Path(out_dir).resolve()  # GX's filesystem store wants an absolute base directory
    if reference is None:
        rows = figure_rows(None, observed, {}, {})
        for row in rows:
            row["message"] = f"{describe(row['figure']).capitalize()}: {_number(row['value'])} (no reference to compare with)."
        report = {"reference": False, "passed": True, "figures": rows, "failed": []}
        write_json(out_dir / DRIFT_FILE, report)
        return report
    from tasks.data_docs import make_offline
    from tasks.validate import DATA_DOCS_SITE, _add_suite_of, _import_gx, _new_context, _run

    gx, gxe = _import_gx()
    from great_expectations.core.run_identifier import RunIdentifier

    context = _new_context(gx, out_dir / "data_docs")
    source = context.data_sources.add_pandas(name="scored")
    expectations = drift_expectations(gxe, reference, labels, cfg)
    suite = _add_suite_of(gx, context, SUITE_NAME, expectations)
    result = _run(gx, context, source, "scored", suite, frame, RunIdentifier(run_name="rnnflow-score"))
    context.build_data_docs(site_names=[DATA_DOCS_SITE])
    make_offline(out_dir / "data_docs")
    rows = figure_rows(result, observed, reference_figures(reference, labels), _bounds(expectations))
    failed = [row["message"] for row in rows if not row["passed"]]
    report = {"reference": True, "passed": not failed, "figures": rows, "failed": failed}
    write_json(out_dir / DRIFT_FILE, report)
    write_json(out_dir / "gx" / "suite.json", {suite.name: suite.to_json_dict()})
    write_json(out_dir / "gx" / "results.json", {"scored": result.to_json_dict()})
    return report
