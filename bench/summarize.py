"""Build BENCHMARKS.md from whatever artifacts/bench/<suite>.json exist: python bench/summarize.py [--bench-dir DIR] [--output FILE].

Standard library only, so it runs anywhere the JSON is. A suite without JSON gets "not run yet".
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "bench" / "profiles.md"  # hand-written profiles of the missed goals, included in BENCHMARKS.md
SUITES = ("overhead", "reruns", "steps", "train", "memory", "growth", "object_store")
GOALS = {  # the goals, by the suite that measures them, in the order the issue lists them
    "overhead": ["pipeline ≤ 1.10× plain script"],
    "reruns": ["identical re-run < 10% of first", "identical re-run < 10% of first, Prefect server running"],
    "steps": ["encode ≥ 5× faster than TextVectorization"],
    "train": ["default preset's train step ≥ 1.6× faster"],
    "growth": ["growth linear", "memory flat where streamed"],
}
ABOUT = {
    "overhead": "The whole `rnnflow run` against a plain Keras script of the same recipe (bench/plain_keras.py), run side by side, alternating.",
    "reruns": "A first run, an identical re-run and a train-only change, in one artifacts root, as fractions of the first run.",
    "steps": "Ingest, validate and encode called as plain functions in-process; encode against keras.layers.TextVectorization.",
    "train": "Training samples per second per preset on the CPU, `train.fused_input` off and on side by side, test accuracy after the short fit, "
             "and each row's training FLOP rate against this machine's matmul rate (the roofline).",
    "memory": "Peak resident memory of each step in its own process, and of a whole `rnnflow run --preset seed-onehot`.",
    "growth": "Ingest, validate and encode on synthetic corpora of growing size: time, peak memory and growth exponents.",
    "object_store": "The default preset's first run and identical re-run with the artifacts root on local disk, then on an S3 bucket (moto's server on 127.0.0.1).",
}


def num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{digits}g}".rstrip(".")
    return str(value)


def raw(values: list | None) -> str:
    return ", ".join(num(v) for v in values or []) or "–"


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|").replace("\n", " ") for cell in row) + " |")
    return lines


def commands(pairs: list[tuple[str, str]], heading: str = "Commands (run from the repository root):") -> list[str]:
    """The exact command of each row, as run from the repository root (or, for in-process rows, the call timed)."""
    if not pairs:
        return []
    width = max(len(label) for label, _ in pairs)
    return ["", heading, "", "```", *(f"{label:<{width}}  {command}" for label, command in pairs), "```"]


IN_PROCESS = "What each row times, inside the `python -m bench` process named above:"


def observed_text(item: dict[str, Any]) -> str:
    """The observed value in the target's own unit: a share as a percentage, a ratio with ×."""
    value = item.get("observed")
    if value is None:
        return "–"
    if "%" in item["target"]:
        return f"{100 * value:.1f}%"
    if "×" in item["target"]:
        return f"{num(value)}×"
    return num(value)


def verdict(item: dict[str, Any], record: dict[str, Any]) -> str:
    word = {True: "**met**", False: "**missed**", None: "not measured"}[item.get("met")]
    caveats = []
    if record.get("mode") == "quick":
        caveats.append("quick run: indicative only")
    repeats = (record.get("options") or {}).get("repeats") or 0
    if repeats < 3:
        caveats.append(f"{repeats} run(s), not ≥ 3")
    return word + (f" ({'; '.join(caveats)})" if caveats else "")


# --------------------------------------------------------------------------- one renderer per suite


def render_overhead(record: dict[str, Any]) -> list[str]:
    rows, summary = record["rows"], record["summary"]
    lines = table(
        ["row", "median s", "raw s", "peak RSS MiB", "test accuracy"],
        [[r["name"], num(r["median_s"]), raw(r["timings_s"]), raw(r["peak_rss_mib"]), raw(r["test_accuracy"])] for r in rows],
    )
    parts = summary["fixed_cost_parts_median_s"]
    lines += [
        "",
        f"- Median ratio pipeline / plain: **{num(summary['median_ratio'])}×** (per pair: {raw(summary['ratios'])}; "
        f"ratio of medians {num(summary['ratio_of_medians'])}×; without the plain script's Prefect import "
        f"{num(summary['median_ratio_without_plain_prefect_import'])}×).",
        f"- Orchestration on top of the same work (pipeline − plain, median): {num(summary.get('median_extra_s'))} s.",
        f"- Fixed orchestration cost, median: **{num(summary['fixed_cost_median_s'])} s** "
        f"({num(100 * summary['fixed_cost_share_of_pipeline'], 3)}% of the pipeline's wall time) = outside any step "
        f"{num(parts['outside_steps_s'])} s + validate {num(parts.get('validate_s'))} s + promote {num(parts.get('promote_s'))} s "
        f"+ report {num(parts.get('report_s'))} s"
        + (f"; of the time outside steps, {num(parts['of_which_before_server_s'])} s pass before Prefect's temporary server "
           f"starts (interpreter, imports) and {num(parts['of_which_prefect_server_start_s'])} s starting it."
           if "of_which_before_server_s" in parts else "."),
        f"- Same test accuracy from both (the same model was trained): {num(summary['same_test_accuracy'])}.",
        "",
        "Pipeline steps, median seconds: " + ", ".join(f"{k} {num(v)}" for k, v in rows[0]["step_median_s"].items()) + ".  ",
        "Plain script phases, median seconds: " + ", ".join(f"{k} {num(v)}" for k, v in rows[1]["phase_median_s"].items()) + ".",
    ]
    return lines + commands([(r["name"], r["command"]) for r in rows])


def render_reruns(record: dict[str, Any]) -> list[str]:
    rows, summary = record["rows"], record["summary"]
    lines = table(
        ["row", "median s", "raw s", "fraction of first (median)", "per repeat", "outside steps s (median)",
         "of which: launch to Prefect server start s", "Prefect server start s", "steps not from the cache"],
        [[r["name"], num(r["median_s"]), raw(r["timings_s"]), num(r["median_fraction_of_first"]), raw(r["fractions_of_first"]),
          num(r.get("median_outside_steps_s")), num(r.get("median_before_server_s")), num(r.get("median_prefect_server_start_s")), ", ".join(s for s, status in r["step_statuses"].items() if status != "cached") or "none"]
         for r in rows],
    )
    percent = lambda share: "–" if share is None else f"{100 * share:.1f}%"  # noqa: E731
    lines += ["", f"- Identical re-run: **{percent(summary['identical_rerun_fraction'])}** of the first run's wall time; "
                  f"train-only change: {percent(summary['train_change_fraction'])}"
                  + (f"; identical re-run with a Prefect server already running: **{percent(summary['identical_rerun_with_server_fraction'])}**"
                     if "identical_rerun_with_server_fraction" in summary else "") + ".",
              f"- Steps the identical re-run recomputed: {', '.join(summary.get('identical_rerun_recomputed') or []) or 'none'}."]
    return lines + commands([(r["name"], r["command"]) for r in rows])


def render_steps(record: dict[str, Any]) -> list[str]:
    rows, summary = record["rows"], record["summary"]
    lines = table(
        ["row", "items", "median s", "raw s", "rate"],
        [[r["name"], num(r["n"]), num(r["median_s"]), raw(r["timings_s"]), f"{num(r['per_second'])} {r['unit']}"] for r in rows],
    )
    lines += ["", f"- encode is **{num(summary['speedup_vs_textvectorization_matched'])}×** as fast as TextVectorization with matched "
                  f"rules ({num(summary['speedup_vs_textvectorization_default'])}× against its defaults)."]
    agreement = summary["agreement"]
    keys = [("reviews_identical_tokens", "reviews with identical tokens (before any vocabulary)"),
            ("reviews_identical_ids_through_tokens", "reviews with identical ids, TextVectorization's mapped to ours through the tokens"),
            ("reviews_identical_raw_ids", "reviews with identical raw ids (ours = theirs + 1)"),
            ("vocabulary_shared_share", "share of our vocabulary also in theirs"),
            ("vocabulary_same_rank_share", "share of our vocabulary at the same rank in theirs")]
    lines += ["", "Agreement with TextVectorization (same train texts, max_tokens=num_words, output_sequence_length=max_len):", ""]
    lines += table(["measure", "matched rules", "defaults"],
                   [[label, num(agreement["matched_rules"].get(key)), num(agreement["default_rules"].get(key))] for key, label in keys])
    return lines + commands([(r["name"], r["command"]) for r in rows], IN_PROCESS)


def _epochs_raw(epoch_s: list | None) -> str:
    """Each repeat's epoch seconds, repeats separated by ';' (older records: one list of one-epoch timings)."""
    if not epoch_s:
        return "–"
    return "; ".join(raw(r) if isinstance(r, list) else num(r) for r in epoch_s)


def render_train(record: dict[str, Any]) -> list[str]:
    rows = record["rows"]
    lines = table(
        ["preset", "device", "fused_input", "bucket_by_length", "model", "params", "max_len", "mean batch width", "batch", "cuDNN eligible",
         "reviews", "epochs", "first epoch s", "median epoch s", "raw epoch s", "samples/s", "on / off", "train GFLOP/s", "of matmul peak",
         "test accuracy"],
        [[r["name"], r["device"], r.get("fused_input", "off"), r.get("bucket_by_length", "off"),
          f"{r['model']['input']} → {r['model']['cell']} {r['model']['units']}", num(r["model"]["params"]), r["max_len"],
          num(r.get("mean_batch_width", r["max_len"])), r["batch_size"], num(r["cudnn_eligible"]), num(r["n"]), num(r.get("epochs", 1)),
          num(r.get("first_epoch_s")), num(r["median_s"]), _epochs_raw(r.get("epoch_s", r.get("timings_s"))), num(r["samples_per_s"]),
          f"{num(r['speedup'])}×" if r.get("speedup") else "–", num(r.get("train_gflop_s")),
          f"{100 * r['of_matmul_peak']:.1f}%" if r.get("of_matmul_peak") else "–", num(r.get("test_accuracy"), 4)] for r in rows],
    )
    roof = record["summary"].get("roofline")
    if roof:
        lines += ["", "Roofline: TensorFlow's float32 matmul on this machine, GFLOP/s sustained (bench/roofline.py):", ""]
        lines += table(["product", "GFLOP/s", "of the large square"],
                       [[name, num(rate), f"{100 * rate / roof['peak_gflop_s']:.1f}%"] for name, rate in roof["matmul_gflop_s"].items()])
    lines += ["", f"- {record['summary']['gpu']}"]
    pairs = [(f"{r['name']} ({r['device']}, fused_input {r.get('fused_input', 'off')})", r["command"]) for r in rows]
    return lines + commands(pairs, IN_PROCESS)


def render_memory(record: dict[str, Any]) -> list[str]:
    rows = record["rows"]
    lines = table(
        ["row", "reviews", "peak RSS MiB", "import-only baseline MiB", "peak − baseline MiB", "step s", "wall s"],
        [[r["name"], num(r["rows"]), num(r["peak_rss_mib"]), num(r.get("baseline_rss_mib")), num(r.get("data_rss_mib")),
          num(r["step_s"]) if not isinstance(r["step_s"], dict) else f"{num(sum(r['step_s'].values()))} (all steps)", num(r["wall_s"])]
         for r in rows],
    )
    pairs = [(r["name"], r["command"]) for r in rows]
    pairs += [(f"{r['name']} baseline", r["baseline_command"]) for r in rows if r.get("baseline_command")]
    return lines + commands(pairs)


def render_object_store(record: dict[str, Any]) -> list[str]:
    rows, summary = record["rows"], record["summary"]
    lines = table(
        ["root", "run", "wall s", "peak RSS MiB", "uploaded MiB", "test accuracy", "steps not from the cache"],
        [[r["root"], r["run"], num(r["wall_s"]), num(r["peak_rss_mib"]), num(r["uploaded_bytes"] / 2**20, 1), num(r["test_accuracy"], 4),
          ", ".join(s for s, status in r["step_statuses"].items() if status != "cached") or "none"] for r in rows],
    )
    lines += ["", f"- On the bucket / on local disk: first run **{num(summary['first_run_s3_over_local'])}×**, identical re-run "
                  f"**{num(summary['rerun_s3_over_local'])}×**; uploaded {num(summary['first_run_uploaded_mib'], 1)} MiB, then {num(summary['rerun_uploaded_mib'], 1)} MiB."]
    return lines + commands([(f"{r['root']}, {r['run']}", r["command"]) for r in rows])


def render_growth(record: dict[str, Any]) -> list[str]:
    rows, summary = record["rows"], record["summary"]
    lines = table(
        ["step", "corpus", "rows", "median s", "raw s", "rows/s", "peak RSS MiB (median)", "peak − baseline MiB"],
        [[r["step"], num(r["size"]), num(r["rows"]), num(r["median_s"]), raw(r["timings_s"]), num(r["rows_per_s"]),
          num(r["median_peak_rss_mib"]), num(r["data_rss_mib"])] for r in rows],
    )
    lines += ["", "Growth exponents (log-log slope; 1 = linear, 0 = flat):", ""]
    lines += table(["step", "time", "memory (peak − baseline)", "import-only baseline MiB"],
                   [[step, num(e["time"]), num(e["memory"]), num(summary["baseline_rss_mib"].get(step))] for step, e in summary["exponents"].items()])
    pairs = [(r["name"], r["command"]) for r in rows] + [(f"{s} baseline", c) for s, c in summary.get("baseline_commands", {}).items()]
    return lines + commands(pairs)


RENDERERS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "overhead": render_overhead, "reruns": render_reruns, "steps": render_steps,
    "train": render_train, "memory": render_memory, "growth": render_growth,
    "object_store": render_object_store,
}


def machine_line(machine: dict[str, Any]) -> str:
    return (f"{machine.get('cpu_model')}, {machine.get('cores_usable')} of {machine.get('cores')} cores, {machine.get('memory_gib')} GiB; "
            f"Python {machine.get('python')}, TensorFlow {machine.get('tensorflow')}, Keras {machine.get('keras')}, "
            f"Prefect {machine.get('prefect')}; load average {machine.get('load_average_1_5_15')} at the start; {machine.get('date')}")


def previous_sections(text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """From a BENCHMARKS.md written before: each suite's section (its lines after the heading) and its goal rows,
    so a suite whose JSON is not here (run on another day, or its files cleaned) keeps its last figures."""
    sections: dict[str, str] = {}
    goal_rows: dict[str, list[str]] = {}
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        heading, _, body = part.partition("\n")
        if heading.strip() in SUITES:
            sections[heading.strip()] = body.strip("\n")
    for line in text.splitlines():
        found = re.search(r"\| `(\w+)`[:|]", line)
        if line.startswith("| ") and found and found.group(1) in SUITES:
            goal_rows.setdefault(found.group(1), []).append(line)
    return sections, goal_rows


def render(records: dict[str, dict[str, Any] | None], previous: str = "") -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `python bench/summarize.py` from `artifacts/bench/<suite>.json`, which `python -m bench` writes "
        "(`make bench` runs both; `make bench-quick` a shrunk set in minutes). Edit the code, not this file.",
        "Benchmarks are not tests: nothing in tests/ times anything. Raw timings, every run's details and the machine "
        "are in the JSON; here are medians, with the raw values beside them.",
        "",
        "## Goals",
        "",
    ]
    kept_sections, kept_goals = previous_sections(previous)
    goal_rows = []
    kept_lines: list[str] = []
    for suite, names in GOALS.items():
        record = records.get(suite)
        if record is None and suite in kept_goals:  # not run since: its rows as they were
            kept_lines += kept_goals[suite]
            continue
        found = {g["goal"]: g for g in (record or {}).get("goals", [])} if record and record.get("status") == "ok" else {}
        for name in names:
            item = found.get(name)
            if item is None:
                state = "not run yet" if record is None else f"suite {record.get('status')}"
                goal_rows.append([name, "–", "–", state, f"`{suite}`"])
            else:
                observed = observed_text(item) + ("" if item.get("note") is None else f" ({item['note'].split('. ')[0]})")
                goal_rows.append([name, item["target"], observed, verdict(item, record), f"`{suite}`: {item['basis']}"])
    lines += table(["goal", "target", "observed", "verdict", "measured by"], goal_rows) + kept_lines

    if PROFILES.is_file():  # hand-written: what the profiles of the missed goals show, and what was changed
        lines += ["", PROFILES.read_text(encoding="utf-8").strip()]

    latest = max((r for r in records.values() if r), key=lambda r: r.get("started_at", ""), default=None)
    lines += ["", "## Machine", "", f"Latest suite: {machine_line(latest['machine'])}." if latest else next(
                  (line for line in previous.splitlines() if line.startswith("Latest suite: ")), "No suite has run yet."),
              "Each suite below names the machine and load it ran with: other jobs may share the machine, so read timings "
              "against the load average."]

    for suite in SUITES:
        record = records.get(suite)
        lines += ["", f"## {suite}", "", ABOUT[suite], ""]
        if record is None and suite in kept_sections:  # as the last summary wrote it (its run's date and command are in it)
            lines[-2:] = [kept_sections[suite]]
            continue
        if record is None:
            lines.append(f"Not run yet: `python -m bench --only {suite}` (or `make bench`), then `python bench/summarize.py`.")
            continue
        lines.append(f"Ran {record.get('started_at')} for {num(record.get('seconds'))} s with `{record.get('bench_command')}` "
                     f"({record.get('mode')} mode, {(record.get('options') or {}).get('repeats')} repeat(s)).")
        if record.get("mode") == "quick":
            lines.append("**Quick mode: tiny sizes, one run, one epoch; indicative only, not the figures the goals are judged on.**")
        lines.append(f"Machine: {machine_line(record['machine'])}; load average at the end {record.get('load_average_after')}.")
        lines.append("")
        if record.get("status") != "ok":
            lines.append(f"Failed: {record.get('error')} (traceback in artifacts/bench/{suite}.json).")
            continue
        lines += RENDERERS[suite](record)
        if record.get("notes"):
            lines += ["", *(f"- {note}" for note in record["notes"])]
    return "\n".join(lines) + "\n"


def load(bench_dir: Path) -> dict[str, dict[str, Any] | None]:
    records: dict[str, dict[str, Any] | None] = {}
    for suite in SUITES:
        path = bench_dir / f"{suite}.json"
        records[suite] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/summarize.py", description="Build BENCHMARKS.md from artifacts/bench/*.json.")
    parser.add_argument("--bench-dir", default=str(ROOT / "artifacts" / "bench"))
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    output = Path(args.output)
    text = render(load(Path(args.bench_dir)), output.read_text(encoding="utf-8") if output.is_file() else "")
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(output)  # complete or absent, like every other file the project writes
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
