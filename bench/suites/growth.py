"""growth: ingest, validate and encode at growing corpus sizes; time, peak memory and growth exponents.

The corpus is tasks.synthetic's review-like texts, generated once in seeded chunks (so every
size is a prefix of the largest) and written once per size as a Parquet table with text,
label and split columns (every other row train, the rest test, as IMDb's halves), which ingest
reads as source=table with data.split_column=split. Each step runs in its own child process
(bench.step_child) per size and repeat: time is the step function's own (imports excluded),
peak memory is read with os.wait4. The growth exponent is the log-log slope over the sizes:
1 is linear; for memory it is fitted on peak minus the step's import-only baseline.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

from bench.measure import fresh_dir, goal, growth_exponent, median, python_argv, relative, run_child
from bench.options import BenchOptions

STEPS = ("ingest", "validate", "encode")
CHUNK = 25_000
SEED = 2024
LINEAR_SLOPE = 1.10  # time slope at most this counts as linear
FLAT_SLOPE = 0.20  # memory slope at most this counts as flat


def corpus_dir(opts: BenchOptions) -> Path:
    """Kept between runs under artifacts/bench/corpora: the same sizes need not be generated again."""
    return opts.out_dir / "corpora"


def synthetic_tables(opts: BenchOptions, sizes: list[int]) -> dict[int, Path]:
    """One Parquet table per size, named by the generator's source hash so a changed generator makes new ones."""
    import pandas as pd

    import tasks.synthetic as synthetic
    from tasks.store import atomic_path

    version = hashlib.sha256(inspect.getsource(synthetic).encode()).hexdigest()[:10]
    folder = corpus_dir(opts)
    tables = {n: folder / f"synthetic-{n}-{SEED}-{version}.parquet" for n in sizes}
    missing = [n for n, path in tables.items() if not path.exists()]
    if missing:
        largest = max(missing)
        chunks = [synthetic.synthetic_reviews(min(CHUNK, largest - start), seed=SEED + i)
                  for i, start in enumerate(range(0, largest, CHUNK))]
        corpus = pd.concat(chunks, ignore_index=True)[["text", "label"]]
        corpus["split"] = ["train" if i % 2 == 0 else "test" for i in range(len(corpus))]
        for n in missing:
            with atomic_path(tables[n]) as tmp:
                corpus.head(n).to_parquet(tmp, index=False, compression="zstd")
    return tables


def run(opts: BenchOptions) -> dict[str, Any]:
    sizes = sorted(set(opts.sizes))
    work = fresh_dir(opts.work_dir / "growth")
    logs = opts.log_dir / "growth"
    tables = synthetic_tables(opts, sizes)

    baselines = {step: run_child(python_argv("-m", "bench.step_child", "imports", "--step", step), logs, f"imports-{step}") for step in STEPS}
    rows = []
    for n in sizes:
        measured: dict[str, dict[str, list]] = {step: {"seconds": [], "peak": [], "wall": []} for step in STEPS}
        commands: dict[str, str] = {}
        rows_per_step: dict[str, int] = {}
        for repeat in range(opts.repeats):
            base = work / f"{n}"
            ingest_out = relative(base / "ingest")
            fresh_dir(base)
            argvs = {
                "ingest": python_argv("-m", "bench.step_child", "ingest", "--table", relative(tables[n]), "--out", ingest_out),
                "validate": python_argv("-m", "bench.step_child", "validate", "--ingest", ingest_out, "--out", relative(base / "validate")),
                "encode": python_argv("-m", "bench.step_child", "encode", "--ingest", ingest_out, "--preset", opts.preset,
                                      "--out", relative(base / "encode")),
            }
            for step, argv in argvs.items():
                child = run_child(argv, logs, f"{n}-{step}-{repeat + 1}")
                reported = json.loads(child.last_line)
                measured[step]["seconds"].append(reported["seconds"])
                measured[step]["peak"].append(child.peak_rss_mib)
                measured[step]["wall"].append(child.wall_s)
                commands[step], rows_per_step[step] = child.command, reported["rows"]
        for step in STEPS:
            mid = median(measured[step]["seconds"])
            peak = median(measured[step]["peak"])
            rows.append({
                "name": f"{step} @ {n:,}",
                "step": step,
                "size": n,
                "rows": rows_per_step[step],
                "command": commands[step],
                "timings_s": measured[step]["seconds"],
                "median_s": mid,
                "rows_per_s": round(rows_per_step[step] / mid, 1) if mid else None,
                "wall_s": measured[step]["wall"],
                "peak_rss_mib": measured[step]["peak"],
                "median_peak_rss_mib": peak,
                "data_rss_mib": round(peak - baselines[step].peak_rss_mib, 1) if peak is not None else None,
            })

    exponents = {}
    for step in STEPS:
        mine = [r for r in rows if r["step"] == step]
        exponents[step] = {
            "time": growth_exponent([r["size"] for r in mine], [r["median_s"] for r in mine]),
            "memory": growth_exponent([r["size"] for r in mine], [r["data_rss_mib"] for r in mine]),
        }
    time_slopes = [e["time"] for e in exponents.values() if e["time"] is not None]
    worst_time = max(time_slopes) if time_slopes else None
    memory_flat = {step: e["memory"] is not None and e["memory"] <= FLAT_SLOPE for step, e in exponents.items()}
    worst_memory = max((e["memory"] for e in exponents.values() if e["memory"] is not None), default=None)
    basis = f"log-log slope over sizes {', '.join(f'{n:,}' for n in sizes)}, median of {opts.repeats} run(s) each"
    return {
        "description": "ingest, validate and encode at growing synthetic corpus sizes: time, peak memory, growth exponents.",
        "rows": rows,
        "summary": {
            "sizes": sizes,
            "exponents": exponents,
            "baseline_rss_mib": {step: child.peak_rss_mib for step, child in baselines.items()},
            "baseline_commands": {step: child.command for step, child in baselines.items()},
            "tables": {str(n): relative(path) for n, path in tables.items()},
        },
        "goals": [
            goal("growth linear", f"time exponent ≤ {LINEAR_SLOPE:.2f} for every step", worst_time,
                 None if worst_time is None else worst_time <= LINEAR_SLOPE, basis,
                 "; ".join(f"{s} {e['time']}" for s, e in exponents.items())),
            goal("memory flat where streamed", f"memory exponent ≤ {FLAT_SLOPE:.2f}", worst_memory,
                 None if worst_memory is None else all(memory_flat.values()), basis,
                 "; ".join(f"{s} {e['memory']}" for s, e in exponents.items())
                 + ". All three stream record batches; what still grows is what each keeps per review "
                   "(ingest: labels, ids and places to decide the splits; validate: a few numbers for Great Expectations; "
                   "encode: lengths)."),
        ],
        "notes": [
            "Time = the step function's own seconds inside its child (imports excluded); peak memory = the child's peak RSS.",
            "Memory exponents are fitted on peak minus the step's import-only baseline (data_rss_mib).",
            f"Corpora are kept in {relative(corpus_dir(opts))} and reused while tasks/synthetic.py is unchanged.",
        ],
    }
