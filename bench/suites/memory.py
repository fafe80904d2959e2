"""memory: peak resident memory of ingest, validate and encode on the archive, and of a whole `rnnflow run`.

Each step runs alone in a child process (bench.step_child) whose peak RSS is read with
os.wait4 when it exits. A child that only imports what the step imports gives the baseline,
so the data's own share is peak minus baseline. One run each: peak memory is not a timing.
The whole run uses the seed-onehot preset, whose one-hot input is made batch by batch inside
the model (the seeds materialised 25,000 x 100 x 500 floats up front).
"""

from __future__ import annotations

import json
from typing import Any

from bench.measure import fresh_dir, python_argv, relative, rnnflow_run_argv, run_child, run_manifest, step_seconds
from bench.options import MEMORY_PRESET, BenchOptions


def run(opts: BenchOptions) -> dict[str, Any]:
    work = fresh_dir(opts.work_dir / "memory")
    logs = opts.log_dir / "memory"
    ingest_out, validate_out, encode_out = (relative(work / name) for name in ("ingest", "validate", "encode"))
    limit = ["--max-reviews", str(opts.max_reviews)] if opts.max_reviews else []
    children = {
        "ingest": python_argv("-m", "bench.step_child", "ingest", "--archive", relative(opts.archive), *limit, "--out", ingest_out),
        "validate": python_argv("-m", "bench.step_child", "validate", "--ingest", ingest_out, "--out", validate_out),
        "encode": python_argv("-m", "bench.step_child", "encode", "--ingest", ingest_out, "--preset", MEMORY_PRESET, "--out", encode_out),
    }
    rows = []
    for step, argv in children.items():
        baseline = run_child(python_argv("-m", "bench.step_child", "imports", "--step", step), logs, f"imports-{step}")
        child = run_child(argv, logs, step)
        reported = json.loads(child.last_line)
        rows.append({
            "name": step,
            "command": child.command,
            "baseline_command": baseline.command,
            "rows": reported["rows"],
            "peak_rss_mib": child.peak_rss_mib,
            "baseline_rss_mib": baseline.peak_rss_mib,
            "data_rss_mib": round(child.peak_rss_mib - baseline.peak_rss_mib, 1),
            "step_s": reported["seconds"],
            "wall_s": child.wall_s,
        })

    root = fresh_dir(work / "artifacts")
    whole = run_child(rnnflow_run_argv(opts, MEMORY_PRESET, root), logs, "rnnflow-run")
    manifest = run_manifest(whole)
    rows.append({
        "name": f"rnnflow run --preset {MEMORY_PRESET}",
        "command": whole.command,
        "rows": sum((manifest["steps"]["ingest"]["summary"].get("n") or {}).values()),
        "peak_rss_mib": whole.peak_rss_mib,
        "wall_s": whole.wall_s,
        "step_s": step_seconds(manifest),
        "epochs_run": (manifest["steps"].get("train", {}).get("summary") or {}).get("epochs_run"),
    })
    return {
        "description": "Peak RSS of ingest, validate and encode (each in its own process) and of a whole rnnflow run.",
        "rows": rows,
        "summary": {row["name"]: row["peak_rss_mib"] for row in rows},
        "goals": [],
        "notes": [
            "Peak RSS from os.wait4 on each child: the larger of the child's own peak and that of any process it waited for "
            "(for rnnflow run, Prefect's temporary server); not a sum over processes.",
            "baseline = a child that only imports what the step imports (Great Expectations for validate, Keras/TensorFlow "
            "for encode); data_rss_mib = peak - baseline.",
            "One run per row: peak memory varies little between runs, unlike time.",
        ],
    }
