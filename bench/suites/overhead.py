"""overhead: the whole `rnnflow run` against a plain Keras script of the same recipe, side by side.

Each repeat runs both, alternating which goes first, so slow spells on a shared machine hit
both; the pipeline gets a fresh artifacts root every time (no cache to lean on). The fixed
orchestration cost is what the pipeline spends outside the learning: the wall time not inside
any step (interpreter, imports, Prefect's temporary server, the flow's bookkeeping) plus the
validate, promote and report steps, read from the run manifest.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from bench.measure import (
    fresh_dir, goal, median, prefect_timeline, python_argv, relative, rnnflow_run_argv, run_child, run_manifest, step_seconds, test_accuracy,
)
from bench.options import BenchOptions

TARGET_RATIO = 1.10
FIXED_STEPS = ("validate", "promote", "report")  # steps a plain script has no counterpart for


def plain_argv(opts: BenchOptions, out: str) -> list[str]:
    argv = python_argv("-m", "bench.plain_keras", "--archive", relative(opts.archive), "--preset", opts.preset)
    if opts.max_reviews:
        argv += ["--max-reviews", str(opts.max_reviews)]
    if opts.epochs:
        argv += ["--epochs", str(opts.epochs)]
    return argv + ["--out", out]


def run(opts: BenchOptions) -> dict[str, Any]:
    work = opts.work_dir / "overhead"
    root, plain_out = work / "artifacts", work / "plain"
    logs = opts.log_dir / "overhead"
    pipeline_cmd = rnnflow_run_argv(opts, opts.preset, root)
    plain_cmd = plain_argv(opts, relative(plain_out))
    pipeline_runs: list[dict[str, Any]] = []
    plain_runs: list[dict[str, Any]] = []
    for repeat in range(opts.repeats):
        order = ("pipeline", "plain") if repeat % 2 == 0 else ("plain", "pipeline")
        for which in order:
            if which == "pipeline":
                fresh_dir(root)
                child = run_child(pipeline_cmd, logs, f"pipeline-{repeat + 1}")
                manifest = run_manifest(child)
                steps = step_seconds(manifest)
                outside_steps = child.wall_s - sum(steps.values())
                pipeline_runs.append({
                    "wall_s": child.wall_s,
                    "peak_rss_mib": child.peak_rss_mib,
                    "test_accuracy": test_accuracy(manifest),
                    "step_s": steps,
                    "outside_steps_s": round(outside_steps, 3),
                    "startup": prefect_timeline(child),
                    "fixed_s": round(outside_steps + sum(steps.get(s, 0.0) for s in FIXED_STEPS), 3),
                    "order": order.index("pipeline") + 1,
                })
            else:
                fresh_dir(plain_out)
                child = run_child(plain_cmd, logs, f"plain-{repeat + 1}")
                reported = json.loads(child.last_line)
                plain_runs.append({
                    "wall_s": child.wall_s,
                    "peak_rss_mib": child.peak_rss_mib,
                    "test_accuracy": reported["test_accuracy"],
                    "phases_s": reported["phases_s"],
                    "order": order.index("plain") + 1,
                })

    ratios = [round(p["wall_s"] / q["wall_s"], 4) for p, q in zip(pipeline_runs, plain_runs)]
    prefect_import = [q["phases_s"]["import_prefect"] for q in plain_runs]
    ratios_without_prefect_import = [
        round(p["wall_s"] / (q["wall_s"] - q["phases_s"]["import_prefect"]), 4) for p, q in zip(pipeline_runs, plain_runs)
    ]
    step_names = list(dict.fromkeys(name for p in pipeline_runs for name in p["step_s"]))
    fixed_parts = {
        "outside_steps_s": median(p["outside_steps_s"] for p in pipeline_runs),
        **{f"{s}_s": median(p["step_s"].get(s) for p in pipeline_runs) for s in FIXED_STEPS},
    }
    startups = [p["startup"] for p in pipeline_runs if p["startup"]]
    if startups:  # the part of outside_steps_s before the flow begins, split in two
        fixed_parts["of_which_before_server_s"] = median(t["before_server_s"] for t in startups)
        fixed_parts["of_which_prefect_server_start_s"] = median(t["server_start_s"] for t in startups)
    median_ratio = median(ratios)
    rows = [
        {
            "name": "rnnflow run",
            "command": shlex.join(pipeline_cmd),
            "note": "artifacts root emptied before each repeat",
            "timings_s": [p["wall_s"] for p in pipeline_runs],
            "median_s": median(p["wall_s"] for p in pipeline_runs),
            "peak_rss_mib": [p["peak_rss_mib"] for p in pipeline_runs],
            "test_accuracy": [p["test_accuracy"] for p in pipeline_runs],
            "step_median_s": {s: median(p["step_s"].get(s) for p in pipeline_runs) for s in step_names},
            "fixed_s": [p["fixed_s"] for p in pipeline_runs],
            "runs": pipeline_runs,
        },
        {
            "name": "plain Keras script",
            "command": shlex.join(plain_cmd),
            "timings_s": [q["wall_s"] for q in plain_runs],
            "median_s": median(q["wall_s"] for q in plain_runs),
            "peak_rss_mib": [q["peak_rss_mib"] for q in plain_runs],
            "test_accuracy": [q["test_accuracy"] for q in plain_runs],
            "phase_median_s": {k: median(q["phases_s"][k] for q in plain_runs) for k in plain_runs[0]["phases_s"]},
            "runs": plain_runs,
        },
    ]
    fixed_median = median(p["fixed_s"] for p in pipeline_runs)
    pipeline_median = rows[0]["median_s"]
    summary = {
        "ratios": ratios,
        "median_ratio": median_ratio,
        "ratio_of_medians": round(pipeline_median / rows[1]["median_s"], 4),
        "extra_s": [round(p["wall_s"] - q["wall_s"], 3) for p, q in zip(pipeline_runs, plain_runs)],
        "median_extra_s": median(p["wall_s"] - q["wall_s"] for p, q in zip(pipeline_runs, plain_runs)),
        "plain_prefect_import_s": prefect_import,
        "median_ratio_without_plain_prefect_import": median(ratios_without_prefect_import),
        "fixed_cost_s": [p["fixed_s"] for p in pipeline_runs],
        "fixed_cost_median_s": fixed_median,
        "fixed_cost_parts_median_s": fixed_parts,
        "fixed_cost_share_of_pipeline": round(fixed_median / pipeline_median, 4) if pipeline_median else None,
        "same_test_accuracy": all(
            p["test_accuracy"] is not None and abs(p["test_accuracy"] - q["test_accuracy"]) < 1e-9 for p, q in zip(pipeline_runs, plain_runs)
        ),
    }
    basis = f"median of {len(ratios)} paired run(s), preset {opts.preset}"
    return {
        "description": "Whole `rnnflow run` vs a plain Keras script of the same recipe; median wall-time ratio and fixed orchestration cost.",
        "rows": rows,
        "summary": summary,
        "goals": [goal("pipeline ≤ 1.10× plain script", f"≤ {TARGET_RATIO:.2f}×", median_ratio,
                       None if median_ratio is None else median_ratio <= TARGET_RATIO, basis)],
        "notes": [
            "fixed cost = wall time outside every step (interpreter, imports, Prefect's temporary server, flow bookkeeping) "
            "+ the validate, promote and report steps, from each run's manifest.",
            "The plain script imports Prefect too (tasks.ingest and tasks.encode import it for their @task wrappers); "
            "median_ratio_without_plain_prefect_import takes that import out of the plain script's time.",
            "extra_s = pipeline wall - plain wall per pair: what orchestration costs on top of the same work, "
            "where fixed cost also counts the interpreter and imports both pay.",
            "same_test_accuracy says both trained the very same model (same data, order, tokens, seed).",
        ],
    }

