"""One step as a plain function in a process of its own, so its peak memory can be read from outside.

    python -m bench.step_child imports --step ingest|validate|encode
    python -m bench.step_child ingest (--archive PATH [--max-reviews N] | --table FILE.parquet) --out DIR
    python -m bench.step_child validate --ingest DIR --out DIR
    python -m bench.step_child encode --ingest DIR --preset NAME --out DIR

`imports` loads what that step loads and stops: the baseline its peak memory is read against.
The last stdout line is JSON: the step, its rows and the seconds of the function call alone
(the imports come first and are not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def import_for(step: str) -> None:
    """What the step imports, including what it imports lazily when called (GX for validate, Keras for encode)."""
    if step == "ingest":
        import tasks.ingest  # noqa: F401
    elif step == "validate":
        import great_expectations  # noqa: F401
        import great_expectations.expectations  # noqa: F401

        import tasks.validate  # noqa: F401
    elif step == "encode":
        import keras  # noqa: F401

        import tasks.encode  # noqa: F401
    else:
        raise SystemExit(f"unknown step {step!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.step_child")
    parser.add_argument("step", choices=("imports", "ingest", "validate", "encode"))
    parser.add_argument("--step", dest="for_step", choices=("ingest", "validate", "encode"), help="imports: for which step")
    parser.add_argument("--archive")
    parser.add_argument("--table", help="a Parquet table with text, label and split columns (source=table)")
    parser.add_argument("--max-reviews", type=int)
    parser.add_argument("--ingest", help="an ingest output folder")
    parser.add_argument("--preset", default="seed-simple-rnn")
    parser.add_argument("--out")
    args = parser.parse_args(argv)

    if args.step == "imports":
        import_for(args.for_step)
        print(json.dumps({"step": "imports", "for": args.for_step}))
        return 0
    import_for(args.step)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.step == "ingest":
        from tasks.config import DataConfig
        from tasks.ingest import ingest_reviews, locate_source

        if args.table:
            cfg = DataConfig(source="table", path=args.table, split_column="split")
        else:
            cfg = DataConfig(path=args.archive, max_reviews=args.max_reviews)
        summary = ingest_reviews(cfg, locate_source(cfg), out)
    elif args.step == "validate":
        from tasks.config import ValidateConfig
        from tasks.validate import validate_reviews

        summary = validate_reviews(ValidateConfig(), Path(args.ingest), out)
        summary = {"n": _split_counts(Path(args.ingest)), "passed": summary["passed"]}
    else:
        from tasks.config import load_config
        from tasks.encode import encode_reviews

        summary = encode_reviews(load_config(args.preset).encode, Path(args.ingest), out)
    seconds = time.perf_counter() - started
    rows = sum(summary["n"].values())
    print(json.dumps({"step": args.step, "rows": rows, "n": summary["n"], "seconds": round(seconds, 3)}))
    return 0


def _split_counts(ingest_dir: Path) -> dict[str, int]:
    from tasks.store import read_json

    return read_json(ingest_dir / "ingest.json")["n"]


if __name__ == "__main__":
    sys.exit(main())
