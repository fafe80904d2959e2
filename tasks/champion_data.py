"""A training run's data against its champion's: the drift figures of `rnnflow score`, between two references.

Each classifier run carries evaluate/reference.json (tasks/reference.py). When the promote step compares a run
with the champion it competed against, it also compares the two references with the same figures and the same
bounds a scoring run uses (the score section's defaults, tasks/score_config.py), so the decision page (linked from
the report's verdict) says whether the new run was trained on data like the champion's:

    tokens_p10, tokens_p50, tokens_p90   within the champion's quantile divided or multiplied by max_token_ratio
    kept_share                           at least the champion's minus max_kept_share_drop
    unknown_share                        at most the champion's plus max_unknown_share_rise
    class_balance:<label>                within max_class_share_shift of the champion's train share
    predicted_share:<label>              within max_class_share_shift of the champion's test-split share

A figure out of bounds is shown, never a reason to refuse promotion: the run's own test figures decide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.reference import QUANTILES, quantile_name, read_reference
from tasks.score_config import ScoreConfig


def _row(figure: str, value: float | None, reference: float | None, low: float | None, high: float | None) -> dict[str, Any]:
    passed = None if value is None or reference is None else (low is None or value >= low) and (high is None or value <= high)
    digits = 1 if figure.startswith("tokens") else 3  # tokens per review; shares
    bound = f"{low:.{digits}f} to {high:.{digits}f}" if low is not None and high is not None else (
        f"at least {low:.{digits}f}" if low is not None else f"at most {high:.{digits}f}" if high is not None else "")
    return {"figure": figure, "value": value, "reference": reference, "bound": bound, "passed": passed}


def compare_references(new: dict[str, Any], champion: dict[str, Any], cfg: ScoreConfig | None = None) -> list[dict[str, Any]]:
    """One row per figure: this run's value, the champion's, the bound drawn around the champion's, and whether it holds."""
    cfg = cfg or ScoreConfig()
    rows = []
    for q in QUANTILES:
        name = quantile_name(q)
        ours, theirs = (new.get("tokens") or {}).get(name), (champion.get("tokens") or {}).get(name)
        bounds = (theirs / cfg.max_token_ratio, theirs * cfg.max_token_ratio) if theirs is not None else (None, None)
        rows.append(_row(f"tokens_{name}", ours, theirs, *bounds))
    theirs = champion.get("kept_share")
    rows.append(_row("kept_share", new.get("kept_share"), theirs, None if theirs is None else max(theirs - cfg.max_kept_share_drop, 0.0), None))
    theirs = champion.get("unknown_share")
    rows.append(_row("unknown_share", new.get("unknown_share"), theirs, None, None if theirs is None else min(theirs + cfg.max_unknown_share_rise, 1.0)))
    for key, figure in (("class_balance", "class_balance"), ("predicted_shares", "predicted_share")):
        ours_by_label, theirs_by_label = new.get(key) or {}, champion.get(key) or {}
        for label in sorted(set(ours_by_label) | set(theirs_by_label)):
            theirs = theirs_by_label.get(label, 0.0)
            rows.append(_row(f"{figure}:{label}", ours_by_label.get(label, 0.0), theirs,
                             max(theirs - cfg.max_class_share_shift, 0.0), min(theirs + cfg.max_class_share_shift, 1.0)))
    return rows


def data_against_champion(run_folder: Path, champion_folder: Path | None, champion_run: str | None) -> dict[str, Any] | None:
    """What the decision records: the champion's run and the rows, or why there are none; None without a champion."""
    if champion_folder is None or not champion_run:
        return None
    new, theirs = read_reference(run_folder), read_reference(champion_folder)
    if new is None or theirs is None:
        which = "this run" if new is None else f"champion {champion_run}"
        return {"champion_run": champion_run, "rows": [], "note": f"{which} has no evaluate/reference.json (made before references)"}
    rows = compare_references(new, theirs)
    out = [row["figure"] for row in rows if row["passed"] is False]
    note = f"{len(out)} of {len(rows)} figures outside the champion's bounds: {', '.join(out)}" if out else f"all {len(rows)} figures within the champion's bounds"
    return {"champion_run": champion_run, "rows": rows, "note": note}


def decision_data(store: Any, run_folder: Path, decision: dict[str, Any]) -> dict[str, Any] | None:
    """data_against_champion for the champion a promote decision compared the run with (store: the ArtifactStore);
    a champion whose folder cannot be read is said, never raised: this comparison informs, it does not decide."""
    champion = decision.get("champion") or {}
    run_id = champion.get("run_id")
    if not run_id or champion.get("missing") or run_id == Path(run_folder).name:
        return None
    try:
        folder = store.resolve_run(run_id)
    except Exception as error:  # noqa: BLE001 - a damaged or gone champion run: say so on the page
        return {"champion_run": run_id, "rows": [], "note": f"the champion's run could not be read ({' '.join(str(error).split())[:160]})"}
    return data_against_champion(Path(run_folder), folder, run_id)


def figure_cells(row: dict[str, Any]) -> list[str]:
    """A row as the decision page shows it: figure, this run, champion, bound, outcome."""
    def shown(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}" if row["figure"].startswith("tokens") else f"{value:.3f}"
    outcome = "n/a" if row["passed"] is None else "within" if row["passed"] else "OUTSIDE"
    return [row["figure"], shown(row["value"]), shown(row["reference"]), row["bound"], outcome]
