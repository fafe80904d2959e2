"""python -m bench [--archive PATH] [--repeats N] [--only NAME ...] [--quick] [...]: run the suites, one JSON file each.

Suites: overhead, reruns, steps, train, memory, growth, object_store (see each module under bench/suites/).
Results go to artifacts/bench/<suite>.json; `python bench/summarize.py` turns them into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import shutil
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from tasks.config import DataConfig  # noqa: E402
from tasks.ingest import IngestError, locate_source  # noqa: E402
from tasks.store import write_json  # noqa: E402

from bench.machine import describe_machine  # noqa: E402
from bench.measure import ROOT  # noqa: E402
from bench.options import (  # noqa: E402
    DEFAULT_PRESET, DEFAULT_REPEATS, DEFAULT_SIZES, DEFAULT_TRAIN_PRESETS, DEFAULT_TRAIN_REVIEWS, SUITE_NAMES, BenchOptions,
    shrink_for_quick,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="rnnflow's benchmarks (not tests): JSON under artifacts/bench/.")
    parser.add_argument("--archive", default=DataConfig().path,
                        help=f"the IMDb archive or its folder (default: {DataConfig().path}, downloaded there when absent, as rnnflow run does)")
    parser.add_argument("--repeats", type=int, help=f"runs per timing, median reported (default {DEFAULT_REPEATS}; --quick: 1)")
    parser.add_argument("--only", nargs="+", choices=SUITE_NAMES, metavar="NAME", help=f"run these suites only: {', '.join(SUITE_NAMES)}")
    parser.add_argument("--quick", action="store_true", help="sizes / 10, 1 repeat, 1 epoch: the whole set in minutes, figures indicative only")
    parser.add_argument("--max-reviews", type=int, help="data.max_reviews (per split) wherever the archive is read (default: all; --quick: 2500)")
    parser.add_argument("--epochs", type=int, help="train.epochs for every pipeline run and the plain script (default: the preset's; --quick: 1)")
    parser.add_argument("--preset", default=DEFAULT_PRESET, help=f"preset of overhead, reruns and steps (default {DEFAULT_PRESET})")
    parser.add_argument("--train-presets", nargs="+", metavar="NAME", help=f"presets of the train suite (default {' '.join(DEFAULT_TRAIN_PRESETS)})")
    parser.add_argument("--train-reviews", type=int, help=f"train reviews per epoch in the train suite (default {DEFAULT_TRAIN_REVIEWS}; --quick: 500)")
    parser.add_argument("--sizes", nargs="+", type=int, metavar="N",
                        help=f"growth corpus sizes (default {' '.join(map(str, DEFAULT_SIZES))}; --quick: each / 10)")
    parser.add_argument("--out", default=str(ROOT / "artifacts" / "bench"), help="where the JSON goes (default artifacts/bench)")
    parser.add_argument("--keep-work", action="store_true", help="keep the scratch folder (artifact roots, corpora) after each suite")
    return parser


def options_from(args: argparse.Namespace, argv: list[str]) -> BenchOptions:
    sizes = tuple(args.sizes) if args.sizes else None
    if args.quick:
        chosen = shrink_for_quick(repeats=args.repeats, max_reviews=args.max_reviews, epochs=args.epochs,
                                  train_reviews=args.train_reviews, sizes=sizes)
    else:
        chosen = {"repeats": args.repeats or DEFAULT_REPEATS, "max_reviews": args.max_reviews, "epochs": args.epochs,
                  "train_reviews": args.train_reviews or DEFAULT_TRAIN_REVIEWS, "sizes": sizes or DEFAULT_SIZES}
    if chosen["repeats"] < 1:
        raise SystemExit("--repeats must be at least 1.")
    try:  # the archive once, up front: a wrong path stops here with one sentence, not in the third suite
        located = Path(locate_source(DataConfig(path=args.archive))["path"])
    except IngestError as err:
        raise SystemExit(f"bench: {err}") from None
    return BenchOptions(
        archive=located, quick=args.quick, preset=args.preset,
        train_presets=tuple(args.train_presets or DEFAULT_TRAIN_PRESETS), out_dir=Path(os.path.abspath(args.out)),
        keep_work=args.keep_work, bench_command=shlex.join([".venv/bin/python", "-m", "bench", *argv]),
        suites=tuple(args.only or SUITE_NAMES), **chosen,
    )


def run_suite(name: str, opts: BenchOptions) -> dict:
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    record = {"suite": name, "mode": opts.mode, "bench_command": opts.bench_command, "options": opts.as_dict(), "machine": describe_machine()}
    try:
        record.update(status="ok", **importlib.import_module(f"bench.suites.{name}").run(opts))
    except Exception as err:  # one broken suite must not lose the others' results
        record.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    finally:
        if not opts.keep_work:
            shutil.rmtree(opts.work_dir / name, ignore_errors=True)
    record.update(started_at=started.isoformat(timespec="seconds"), seconds=round(time.perf_counter() - clock, 1),
                  load_average_after=[round(x, 2) for x in os.getloadavg()])
    return record


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = options_from(build_parser().parse_args(argv), argv)
    failed = []
    for name in opts.suites:
        print(f"bench: {name} ({opts.mode}) ...", flush=True)
        record = run_suite(name, opts)
        path = write_json(opts.out_dir / f"{name}.json", record)
        if record["status"] != "ok":
            failed.append(name)
            print(f"bench: {name} FAILED after {record['seconds']} s: {record['error']}", file=sys.stderr, flush=True)
            continue
        verdicts = "; ".join(
            f"{g['goal']}: {g['observed']} ({'met' if g['met'] else 'missed' if g['met'] is False else 'not measured'})"
            for g in record.get("goals", [])
        )
        print(f"bench: {name} done in {record['seconds']} s -> {os.path.relpath(path)}" + (f"  [{verdicts}]" if verdicts else ""), flush=True)
    print("bench: python bench/summarize.py writes BENCHMARKS.md from these files.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
