"""python -m bench.api_stall --archive PATH --out DIR: the train step's clock while Prefect's temporary server is busy.

Runs `rnnflow run --preset default` on a slice of the archive (fused, --epochs epochs, no early stopping), from the
current directory's code, and once the first epoch line is in run.log holds an exclusive lock on the run's temporary
Prefect database for --hold seconds: what a busy server does to its callers (its API answers 503 while SQLite is
locked, and Prefect's client retries after 2, 4, 8, 16 and 32 s). Prints train.json's seconds against the epochs'
own seconds (the epoch lines) and what held training between epoch lines (gap less the later epoch's seconds,
the epoch lines rounding to whole seconds). Before the progress artifact's calls left the
training thread (tasks/progress.py) the lock showed in the train step's clock; after, it does not
(docs/training-speed.md §8). Run it from a copy of an older tree to see the old behaviour.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

EPOCH = re.compile(r"^(\S+ \S+) \| INFO .* epoch (\d+)/\d+ .*\((\d+) s\)$")


def database_of(pid: int) -> Path | None:
    """The temporary server's database of rnnflow process pid (flows/prefect_server.py), once it exists."""
    found = glob.glob(f"/tmp/rnnflow-prefect-{pid}-*/prefect.db")
    return Path(found[0]) if found else None


def hold_lock(database: Path, seconds: float) -> None:
    """An exclusive SQLite lock on database for seconds (readers and writers wait, as behind a long write)."""
    connection = sqlite3.connect(database, timeout=30, isolation_level=None)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        time.sleep(seconds)
        connection.execute("ROLLBACK")
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", required=True)
    parser.add_argument("--out", required=True, help="artifacts root (ingest, validate, encode cached there between calls)")
    parser.add_argument("--reviews", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hold", type=float, default=30.0, help="seconds the database stays locked (0: not locked)")
    args = parser.parse_args()
    before = set(glob.glob(f"{args.out}/runs/*/"))
    command = [
        sys.executable, "-m", "flows.cli", "run", "--preset", "default", "--set", f"data.path={args.archive}",
        "--set", f"data.max_reviews={args.reviews}", "--set", f"train.epochs={args.epochs}", "--set", f"train.patience={args.epochs}",
        "--set", "train.fused_input=true", "--refresh", "train", "--artifacts", args.out,
    ]
    started = time.time()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    output = open(Path(args.out) / "api_stall.log", "w")  # the run's own output, for when it fails
    child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    locked_at = None
    while child.poll() is None:
        runs = set(glob.glob(f"{args.out}/runs/*/")) - before
        log = Path(sorted(runs)[0]) / "run.log" if runs else None
        if locked_at is None and args.hold > 0 and log and log.exists() and " epoch 1/" in log.read_text():
            database = database_of(child.pid)
            if database is not None:
                locked_at = time.time() - started
                hold_lock(database, args.hold)
        time.sleep(0.2)
    output.close()
    made = sorted(set(glob.glob(f"{args.out}/runs/*/")) - before)
    if child.returncode != 0 or not made:
        sys.exit(f"rnnflow run exited {child.returncode}: see {Path(args.out) / 'api_stall.log'}")
    run = Path(made[0])
    train = json.loads((run / "train" / "train.json").read_text())
    lines = [m.groups() for m in map(EPOCH.match, (run / "run.log").read_text().splitlines()) if m]
    epoch_seconds = [int(s) for _, _, s in lines]
    times = [datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f").timestamp() for t, _, _ in lines]
    # Between two epoch lines: the later epoch's own seconds, plus whatever held the training thread after the first line.
    waits = [round(later - earlier - seconds, 1) for earlier, later, seconds in zip(times, times[1:], epoch_seconds[1:])]
    print(json.dumps({
        "code": os.getcwd(), "rc": child.returncode, "hold_s": args.hold, "locked_at_s": locked_at,
        "train_seconds": train["seconds"], "epoch_lines_s": epoch_seconds, "sum_epoch_lines_s": sum(epoch_seconds),
        "outside_epochs_s": round(train["seconds"] - sum(epoch_seconds), 1),
        "waits_between_epoch_lines_s": waits, "epoch_line_times": [t for t, _, _ in lines],
        "load_average": os.getloadavg(),
    }), flush=True)


if __name__ == "__main__":
    main()
