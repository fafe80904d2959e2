"""reruns: a first run, an identical re-run and a train-only change, each as a fraction of the first.

All three run against one artifacts root (emptied before each repeat), so the second and third
find the step cache the first filled. The train-only change sets train.epochs to another value:
ingest, validate and encode should come from the cache, train and what follows recompute.
"""

from __future__ import annotations

import shlex
from typing import Any

from tasks.config import load_config

from bench.measure import (
    fresh_dir, goal, median, prefect_timeline, rnnflow_run_argv, run_child, run_manifest, running_prefect_server, step_seconds, step_statuses,
)
from bench.options import BenchOptions

TARGET_FRACTION = 0.10
SERVER_RERUN = "identical re-run, Prefect server already running"


def changed_epochs(epochs: int) -> int:
    """Fewer epochs than the first run where possible, so the change costs at most a first run's training."""
    return epochs - 1 if epochs > 1 else epochs + 1


def run(opts: BenchOptions) -> dict[str, Any]:
    root = opts.work_dir / "reruns" / "artifacts"
    logs = opts.log_dir / "reruns"
    epochs = opts.epochs or load_config(opts.preset).train.epochs
    kinds = {
        "first run": rnnflow_run_argv(opts, opts.preset, root, epochs=epochs),
        "identical re-run": rnnflow_run_argv(opts, opts.preset, root, epochs=epochs),
        f"train-only change (train.epochs {epochs} → {changed_epochs(epochs)})": rnnflow_run_argv(
            opts, opts.preset, root, epochs=changed_epochs(epochs)
        ),
    }
    # Scheduled runs report to a server that is already up: the same identical re-run once more against
    # one, so the time Prefect's temporary server costs a standalone run shows on its own.
    kinds[SERVER_RERUN] = kinds["identical re-run"]
    walls: dict[str, list[float]] = {name: [] for name in kinds}
    statuses: dict[str, list[dict[str, str]]] = {name: [] for name in kinds}
    outside: dict[str, list[float]] = {name: [] for name in kinds}
    startups: dict[str, list[dict[str, float] | None]] = {name: [] for name in kinds}
    with running_prefect_server() as server_env:
        for repeat in range(opts.repeats):
            fresh_dir(root)
            for index, (name, argv) in enumerate(kinds.items()):
                child = run_child(argv, logs, f"repeat{repeat + 1}-{index + 1}", env=server_env if name == SERVER_RERUN else None)
                walls[name].append(child.wall_s)
                manifest = run_manifest(child)
                statuses[name].append(step_statuses(manifest))
                outside[name].append(round(child.wall_s - sum(step_seconds(manifest).values()), 3))
                startups[name].append(prefect_timeline(child))

    first = walls["first run"]
    rows = []
    for name, argv in kinds.items():
        fractions = [round(w / f, 4) for w, f in zip(walls[name], first)]
        rows.append({
            "name": name,
            "command": shlex.join(argv),
            "timings_s": walls[name],
            "median_s": median(walls[name]),
            "fractions_of_first": fractions,
            "median_fraction_of_first": median(fractions),
            "outside_steps_s": outside[name],
            "median_outside_steps_s": median(outside[name]),
            "startup": startups[name],
            "median_before_server_s": median(t["before_server_s"] for t in startups[name] if t),
            "median_prefect_server_start_s": median(t["server_start_s"] for t in startups[name] if t),
            "step_statuses": statuses[name][-1],
            "step_statuses_every_repeat": statuses[name],
        })
    identical = rows[1]["median_fraction_of_first"]
    served = rows[3]["median_fraction_of_first"]
    return {
        "description": "First run, identical re-run and train-only change, as fractions of the first run's wall time.",
        "rows": rows,
        "summary": {
            "identical_rerun_fraction": identical,
            "train_change_fraction": rows[2]["median_fraction_of_first"],
            "identical_rerun_with_server_fraction": served,
            # Steps the identical re-run did not take from the cache, in any repeat (promote never is).
            "identical_rerun_recomputed": sorted({step for run in statuses[rows[1]["name"]] for step, status in run.items() if status != "cached"}),
        },
        "goals": [goal("identical re-run < 10% of first", f"< {TARGET_FRACTION:.0%}", identical,
                       None if identical is None else identical < TARGET_FRACTION,
                       f"median of {opts.repeats} repeat(s), preset {opts.preset}, each re-run's wall time over its own first run's"),
                  goal("identical re-run < 10% of first, Prefect server running", f"< {TARGET_FRACTION:.0%}", served,
                       None if served is None else served < TARGET_FRACTION,
                       f"as above, the re-run reporting to a server started before it (PREFECT_API_URL), as scheduled runs do")],
        "notes": [
            "Wall time of each `rnnflow run` process, start to exit: a re-run still starts Python, imports TensorFlow and "
            "Prefect and starts Prefect's temporary server (unless PREFECT_API_URL names a running one).",
            "promote is never cached (it compares the run with the champion each time); identical_rerun_recomputed lists "
            "every step the identical re-run did not take from the cache.",
            f"'{SERVER_RERUN}' runs the identical re-run's command with PREFECT_API_URL naming a Prefect server the suite "
            "started once before the repeats (prefect.server.api.server.SubprocessASGIServer), as a deployment's scheduled "
            "runs find one: it starts no temporary server.",
            "outside_steps_s = wall time not inside any step: interpreter, imports, Prefect's temporary server, bookkeeping; "
            "of it, before_server_s runs from launch to Prefect's 'Starting temporary server' log line and "
            "prefect_server_start_s from there to 'Beginning flow run' (from the run's log timestamps).",
        ],
    }
