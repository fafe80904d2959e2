"""The rnnflow command line's arguments: one subcommand each, as `rnnflow COMMAND --help` shows them."""

from __future__ import annotations

import argparse
import sys

from tasks.errors import RnnflowError
from tasks.steps import STEP_TABLE, STEPS


class UsageError(RnnflowError):
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
    parser.add_argument("--artifacts", metavar="ROOT", help="artifacts root: a folder, or a URL such as s3://BUCKET/PREFIX (default: $RNNFLOW_ARTIFACTS or artifacts/)")


MODEL_HELP = "the model whose champion 'champion' means, where the root holds several ('rnnflow champion' lists them)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="rnnflow", description="Train recurrent text classifiers as a Prefect flow.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = commands.add_parser("run", help="run the whole pipeline and print the run folder")
    _config_args(run)
    run.add_argument("--refresh", nargs="?", const="all", action="append", metavar="STEP",
                     help="recompute STEP (or, alone, every step) instead of reusing the cache")
    run.add_argument("--data-dir", default="data", help="where downloads go (default: data/)")
    run.add_argument("--from", dest="start_from", choices=STEPS, metavar="STEP",
                     help="recompute STEP and every later step (with --run, the earlier ones come from that run)")
    run.add_argument("--run", dest="derived_from", metavar="RUN_ID",
                     help="with --from: the run whose earlier steps to reuse, with the configuration they were made with")
    run.add_argument("--model", metavar="NAME", help=MODEL_HELP)

    _step_and_sweep_commands(commands)
    _serve_and_inspect_commands(commands)
    _model_commands(commands)
    _serve_model_command(commands)
    return parser


def _step_and_sweep_commands(commands: argparse._SubParsersAction) -> None:
    step = commands.add_parser("step", help="rerun one step of a recorded run, as a new run folder")
    alone = [spec.name for spec in STEP_TABLE if spec.rerun_alone]
    step.add_argument("step", choices=alone, metavar="STEP", help=f"one of {', '.join(alone)}")
    step.add_argument("--run", dest="derived_from", required=True, metavar="RUN_ID", help="the run whose inputs to use ('latest' for the newest completed)")
    step.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    step.add_argument("--model", metavar="NAME", help=MODEL_HELP)
    step.add_argument("--artifacts", metavar="ROOT")

    sweep = commands.add_parser("sweep", help="one run per grid point, in parallel, and sweep.html comparing them")
    _config_args(sweep)
    sweep.add_argument("--grid", action="append", required=True, metavar="SECTION.KEY=V1,V2",
                       help="values to try for one model.* or train.* key, e.g. --grid model.cell=lstm,gru (repeatable: every combination runs)")
    sweep.add_argument("--runner", choices=("thread", "dask"), help="run the points in threads of this process (default) or on Dask")
    sweep.add_argument("--dask-address", metavar="tcp://HOST:PORT", help="an existing Dask scheduler (implies --runner dask); default: a local cluster")
    sweep.add_argument("--workers", type=int, metavar="N", help="points at a time: threads, or local Dask worker processes (default: 2)")
    sweep.add_argument("--data-dir", default="data", help="where downloads go (default: data/)")



def _serve_and_inspect_commands(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="serve the flow as a scheduled deployment (needs a Prefect server)")
    _config_args(serve)
    when = serve.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help='a cron schedule, e.g. "0 3 * * *" (03:00 every night)')
    when.add_argument("--interval", type=float, metavar="SECONDS", help="run every SECONDS")
    serve.add_argument("--name", default="rnnflow-nightly", help="deployment name (default: rnnflow-nightly)")

    runs = commands.add_parser("runs", help="list runs with status and test accuracy")
    runs.add_argument("--artifacts", metavar="ROOT")

    commands.add_parser("presets", help="list the shipped presets")

    show = commands.add_parser("config", help="print the resolved configuration as JSON (with --run: what a run's outputs were made with)")
    _config_args(show)
    show.add_argument("--run", dest="recorded", metavar="RUN_ID", help="a recorded run: its configuration, step by step, from its manifest")
    show.add_argument("--model", metavar="NAME", help=MODEL_HELP)



def _model_commands(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser("predict", help="label texts with a run's model: a table, or a file with --output")
    predict.add_argument("texts", nargs="*", metavar="TEXT", help="texts to label (or --input FILE)")
    predict.add_argument("--run", default="latest", metavar="ID|latest|champion", help="the run whose model to use (default: latest completed)")
    predict.add_argument("--input", metavar="FILE", help=".txt (one text per line), .csv or .parquet")
    predict.add_argument("--text-column", default="text", metavar="NAME", help="the text column of a .csv or .parquet input (default: text)")
    predict.add_argument("--output", metavar="FILE.parquet|.csv", help="write every prediction there instead of printing a table")
    predict.add_argument("--model", metavar="NAME", help=MODEL_HELP)
    predict.add_argument("--artifacts", metavar="ROOT")

    score = commands.add_parser("score", help="label a table with a model's champion into scores/<id>/ and check it for drift")
    _config_args(score)
    score.add_argument("--input", required=True, metavar="FILE", help="a .csv, .tsv, .parquet or .jsonl table of texts")
    score.add_argument("--text-column", metavar="NAME", help="its text column (default: score.text_column, text)")
    score.add_argument("--model", metavar="NAME", help=MODEL_HELP)

    generate = commands.add_parser("generate", help="continue a text with a next_token run's model and print it")
    generate.add_argument("--run", default="latest", metavar="ID|latest|champion", help="a run trained with model.task next_token (default: latest completed)")
    generate.add_argument("--prompt", required=True, metavar="TEXT", help="the start of the text to continue")
    generate.add_argument("--length", type=int, default=200, metavar="N", help="at most N more characters; the model may end the text sooner (default: 200)")
    generate.add_argument("--temperature", type=float, default=0.0, metavar="T",
                          help="0 takes the likeliest character each time (the default); above 0 draws one, more varied as T grows")
    generate.add_argument("--model", metavar="NAME", help=MODEL_HELP)
    generate.add_argument("--artifacts", metavar="ROOT")

    champion = commands.add_parser("champion", help="print each model's champion (the promoted run) and its test metrics")
    champion.add_argument("--model", metavar="NAME", help="only this model's champion")
    champion.add_argument("--artifacts", metavar="ROOT")

    promote = commands.add_parser("promote", help="make a run the champion by hand, if it beats the champion (or with --force)")
    promote.add_argument("run", metavar="RUN_ID", help="the run to promote ('latest' for the newest completed)")
    promote.add_argument("--force", action="store_true", help="promote even when it does not beat the champion or a check failed")
    promote.add_argument("--reason", metavar="TEXT", help="why, for champion.json and the run's manifest")
    promote.add_argument("--model", metavar="NAME", help=MODEL_HELP)
    promote.add_argument("--artifacts", metavar="ROOT")


def _serve_model_command(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve-model", help="serve a model's champion over HTTP: POST /predict, GET /health")
    serve.add_argument("--model", metavar="NAME", help=MODEL_HELP)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    serve.add_argument("--config", metavar="FILE.yaml", help="a YAML file whose serve section sets the limits")
    serve.add_argument("--set", dest="overrides", action="append", default=[], metavar="serve.KEY=VALUE",
                       help="e.g. --set serve.max_texts=64 (serve.max_text_bytes, serve.check_seconds)")
    serve.add_argument("--artifacts", metavar="ROOT")
