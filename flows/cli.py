"""The rnnflow command line: run the pipeline, list runs and presets."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import flows  # noqa: F401  (telemetry defaults before Prefect loads)
from tasks.config import ConfigError, RunConfig, load_config, preset_description, preset_names
from tasks.store import STEPS, ArtifactStore, new_run_id, read_json

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad usage or configuration: exit 2 with one sentence."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too; keep its message to one line
        self.print_usage(sys.stderr)
        raise UsageError(message)


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="a shipped preset (rnnflow presets lists them)")
    parser.add_argument("--config", metavar="FILE.yaml", help="a YAML file of configuration sections")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one key, e.g. --set train.epochs=3 (repeatable)")
    parser.add_argument("--artifacts", metavar="DIR", help="artifacts root (default: $RNNFLOW_ARTIFACTS or artifacts/)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="rnnflow", description="Train recurrent text classifiers as a Prefect flow.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = commands.add_parser("run", help="run the whole pipeline and print the run folder")
    _config_args(run)
    run.add_argument("--refresh", nargs="?", const="all", action="append", metavar="STEP",
                     help="recompute STEP (or, alone, every step) instead of reusing the cache")
    run.add_argument("--data-dir", default="data", help="where downloads go (default: data/)")

    runs = commands.add_parser("runs", help="list runs with status and test accuracy")
    runs.add_argument("--artifacts", metavar="DIR")

    commands.add_parser("presets", help="list the shipped presets")

    show = commands.add_parser("config", help="print the resolved configuration as JSON")
    _config_args(show)
    return parser


def _store(args: argparse.Namespace) -> ArtifactStore:
    return ArtifactStore(args.artifacts)


def _load(args: argparse.Namespace) -> RunConfig:
    return load_config(args.preset, args.config, args.overrides)


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args)
    refresh = sorted(set(args.refresh or []))
    unknown = [s for s in refresh if s not in (*STEPS, "all")]
    if unknown:
        raise UsageError(f"--refresh {unknown[0]!r} is not a step: use one of {', '.join(STEPS)}, or --refresh alone for all.")
    store = _store(args)
    run_id = new_run_id()

    from prefect import tags

    from flows.pipeline import rnnflow_pipeline

    with tags(f"preset:{config.preset}", f"cell:{config.model.cell}"):
        state = rnnflow_pipeline(
            config=config, artifacts_root=str(store.root), run_id=run_id, refresh=refresh, data_dir=args.data_dir, return_state=True
        )
    folder = store.run_dir(run_id)
    if state.is_completed():
        metrics = read_json(folder / "evaluate" / "metrics.json")["test"]
        print(f"test accuracy {metrics['accuracy']:.4f}  f1 {metrics['f1']:.4f}  roc_auc {metrics['roc_auc']}")
        print(folder)
        return EXIT_OK
    manifest = read_json(folder / "manifest.json") if (folder / "manifest.json").exists() else {}
    failed = [(name, step.get("error")) for name, step in manifest.get("steps", {}).items() if step.get("status") == "failed"]
    reason = f"step {failed[0][0]} failed: {failed[0][1]}" if failed else (manifest.get("error") or state.message)
    print(f"rnnflow: {reason}", file=sys.stderr)
    print(folder)
    return EXIT_FAILED


def cmd_runs(args: argparse.Namespace) -> int:
    runs = _store(args).list_runs()
    if not runs:
        print(f"no runs under {_store(args).runs_dir}")
        return EXIT_OK
    print(f"{'run id':<28} {'status':<10} {'preset':<18} {'cell':<11} {'test acc':>8}")
    for manifest in runs:
        accuracy = (manifest.get("steps", {}).get("evaluate", {}).get("summary") or {}).get("accuracy")
        config = manifest.get("config") or {}
        print(
            f"{manifest.get('run_id', '?'):<28} {manifest.get('status', '?'):<10} {config.get('preset', '?'):<18} "
            f"{(config.get('model') or {}).get('cell', '?'):<11} {accuracy if accuracy is None else format(accuracy, '.4f'):>8}"
        )
    return EXIT_OK


def cmd_presets(args: argparse.Namespace) -> int:
    for name in preset_names():
        print(f"{name:<18} {preset_description(name)}")
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(_load(args).as_dict(), indent=2))
    return EXIT_OK


COMMANDS = {"run": cmd_run, "runs": cmd_runs, "presets": cmd_presets, "config": cmd_config}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except (UsageError, ConfigError) as error:
        print(f"rnnflow: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as error:
        print(f"rnnflow: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("rnnflow: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
