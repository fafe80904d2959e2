"""What keeps a run from promotion beside the comparison with the champion (tasks/promote.py decides with these):
its validation verdict, promote.floors, and a model that predicts one class for every test review.

A model that puts every test review in one class has learnt nothing that tells the classes apart, however its
accuracy compares (0.5 on balanced classes can beat a champion that no longer exists, or that scored as badly):
Japanese reviews without spaces under the word tokenizer gave such a model, F1 0.0, and it was promoted.
"""

from __future__ import annotations

from typing import Any

from tasks.render import as_number

LOWER_IS_BETTER = frozenset({"loss"})


def failed_validation_checks(validation: dict[str, Any]) -> list[dict[str, Any]]:
    """Every failed check of validation.json, any severity: {"check", "split", "severity"}."""
    return [
        {"check": str(check.get("check", "?")), "split": check.get("split"), "severity": str(check.get("severity", "?"))}
        for check in validation.get("checks") or []
        if isinstance(check, dict) and not check.get("passed", False)
    ]


def check_label(check: dict[str, Any]) -> str:
    """'duplicates on test (warning)'."""
    return f"{check.get('check', '?')} on {check.get('split') or 'all splits'} ({check.get('severity', '?')})"


def validation_verdict(failed: list[dict[str, Any]], n_checks: int, blocking_warnings: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """One verdict on a run's validation that agrees with promotion: which failed checks block it and which do not.

    A failed error stops the run at validate; a failed warning blocks promotion when its check is in
    promote.blocking_warnings, and is shown without blocking otherwise. status: passed, warnings (none
    blocking), blocked (a blocking warning failed) or failed (an error failed).
    """
    errors = [check_label(c) for c in failed if c.get("severity") == "error"]
    blocking = [check_label(c) for c in failed if c.get("severity") != "error" and c.get("check") in blocking_warnings]
    warnings = [check_label(c) for c in failed if c.get("severity") != "error" and c.get("check") not in blocking_warnings]
    count = len(blocking) + len(warnings)
    plural = "s" if count != 1 else ""
    if errors:
        status, text = "failed", f"failed: {', '.join(errors)}"
    elif blocking:
        status = "blocked"
        text = (f"passed with {count} warning{plural}: not promotable unless {', '.join(blocking)} is fixed "
                f"or its check left out of promote.blocking_warnings")
    elif warnings:
        status, text = "warnings", f"passed with {count} warning{plural} (none blocks promotion: promote.blocking_warnings)"
    else:
        status, text = "passed", f"passed: all {n_checks} checks"
    return {"status": status, "text": text, "n_checks": n_checks, "errors": errors, "blocking": blocking, "warnings": warnings,
            "passed": not errors and not blocking, "failed_checks": errors + blocking + warnings}


def check_floors(test: dict[str, Any], floors: dict[str, float]) -> list[dict[str, Any]]:
    """Each floor with the run's value and whether it holds (a ceiling for loss)."""
    rows = []
    for metric, bound in sorted(floors.items()):
        value = as_number(test.get(metric))
        lower = metric in LOWER_IS_BETTER
        passed = value is not None and (value <= bound if lower else value >= bound)
        rows.append({"metric": metric, "bound": float(bound), "kind": "at most" if lower else "at least", "value": value, "passed": passed})
    return rows


def predicted_counts(metrics: dict[str, Any]) -> dict[str, int] | None:
    """How many test reviews a classifier put in each class, by name: the column sums of metrics.json's
    confusion matrix (rows true, columns predicted); None for a next_token model or metrics without one."""
    matrix, labels = metrics.get("confusion_matrix"), metrics.get("labels")
    if metrics.get("task", "classify") != "classify" or not matrix or not labels:
        return None
    try:
        return {str(name): sum(int(row[column]) for row in matrix) for column, name in enumerate(labels)}
    except (TypeError, ValueError, IndexError, KeyError):  # a damaged metrics.json is not this check's to name
        return None


def one_class_blocker(predicted: dict[str, int] | None) -> str | None:
    """Why a classifier that predicts a single class for every test review is not promotable, or None."""
    chosen = [name for name, n in (predicted or {}).items() if n]
    if len(predicted or {}) < 2 or len(chosen) != 1:
        return None
    return (f"the model predicts {chosen[0]!r} for all {predicted[chosen[0]]} test reviews, so it tells no class apart: "
            f"check the encoding (encode.tokenizer) and the training (train.epochs, train.learning_rate)")


def baseline_comparison(baseline: dict[str, Any] | None, metric: str, new: float | None, required: bool) -> dict[str, Any] | None:
    """The run's model against its linear baseline (metrics.json's `baseline`) on promote.metric: the figures, whether it
    wins, and with promote.beat_baseline the sentence that blocks a model that does not (or a run with no baseline)."""
    theirs = as_number(((baseline or {}).get("test") or {}).get(metric))
    if baseline is None or theirs is None or new is None:
        if not required:
            return None
        why = "the run has no baseline" if baseline is None else f"{metric} is n/a for the model or its baseline"
        return {"value": theirs, "wins": None, "required": True,
                "blocker": f"promote.beat_baseline is on but {why}: turn baseline.enabled on (or promote.beat_baseline off) and run again"}
    lower = metric in LOWER_IS_BETTER
    wins = new < theirs if lower else new > theirs
    blocker = None
    if required and not wins:
        blocker = (f"the model's {metric} {new:.4f} does not beat the linear baseline's {theirs:.4f} ({baseline.get('model', 'baseline')}), "
                   f"and promote.beat_baseline is on: improve the model, or turn promote.beat_baseline off to promote it anyway")
    return {"value": theirs, "wins": wins, "required": required, "model": baseline.get("model"), "blocker": blocker}


def baseline_rows(comparison: dict[str, Any] | None) -> list[list[str]]:
    """The decision table's row for the baseline: its figure and whether the model beat it."""
    if not comparison or comparison.get("value") is None:
        return []
    verdict = "beaten" if comparison.get("wins") else "NOT beaten"
    needed = " (promote.beat_baseline: required)" if comparison.get("required") else ""
    return [["Linear baseline", f"{comparison['value']:.4f}, {verdict}{needed}"]]
