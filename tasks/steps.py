"""The steps of a run, declared once, as data: what the CLI, the cache, provenance and the manifest know about each.

The flow itself is code: flows/pipeline.py calls each step's task (validate_task, encode_task, ...) in order, with
its typed configuration section(s) and the upstream outputs it reads, through flows/run_steps.py (run_step). This
table says what that code cannot: the order a run executes the steps in (the CLI's names, a rerun's plan), which
sections and derived values a step is made with (its manifest record, what a rerun may change), which steps it reads
(what `rnnflow step NAME --run ID` checks), whether it is cached, retried or rerun alone, and which tasks/ package is
its code (tasks/caching.py finds the package's files and their imports). run_step checks each call against it.

No task is named here, so this module stays import-light: the CLI and tasks/caching.py read it without Keras.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from tasks.config import RunConfig

WHOLE_CONFIG = "*"  # a `sections` entry: the whole run configuration without its reporting sections (the report's)


@dataclass(frozen=True)
class Step:
    """One step: what configuration and upstream outputs it reads, its code, how it is cached and retried."""

    name: str  # also its Prefect task's name
    sections: tuple[str, ...] = ()  # the RunConfig sections its task takes (WHOLE_CONFIG: all of it, as `config`)
    upstream: tuple[str, ...] = ()  # steps whose outputs it reads (parameters of the same names, in its cache key)
    derived: Callable[["RunConfig"], dict[str, Any]] | None = None  # inputs computed from other sections (in its key)
    package: str = ""  # its own tasks/ module or package (default: its name); the code version also covers what it imports
    cached: bool = True  # False: never cached, it writes into the run folder itself (promote)
    retries: bool = False  # reads a network or disk: retried with data.retries and backoff, unless the input is bad
    rerun_alone: bool = True  # `rnnflow step NAME --run ID` can recompute it from a recorded run
    optional: bool = False  # runs from before the step lack it: a rerun derived from one goes on without, and so do its readers

    @property
    def own_package(self) -> str:
        return self.package or self.name


def model_name(config: "RunConfig") -> dict[str, Any]:
    """promote's: the model whose champion the run is compared with (promote.model, or derived from the data keys)."""
    return {"model_name": config.model_name}


def text_rule(config: "RunConfig") -> dict[str, Any]:
    """validate's: what encode's tokenizer keeps and counts, for the kept_text and token_length checks.

    For auto, validate makes encode's choice from train's words, by num_words and auto_min_coverage. Those two enter
    the rule (and validate's cache key) only for auto: for another tokenizer they do not change validate's output.
    """
    encode = config.encode
    rule = {"tokenizer": encode.tokenizer, "lowercase": encode.lowercase}
    if encode.tokenizer == "auto":
        rule.update(num_words=encode.num_words, auto_min_coverage=encode.auto_min_coverage)
    if encode.analyzer != "none":  # the counts read the morphemes, as encode does (unset: the keys of runs before the key stay)
        rule["analyzer"] = encode.analyzer
    return {"text_rule": rule}


def baseline_inputs(config: "RunConfig") -> dict[str, Any]:
    """baseline's: the model task (a classifier only; skipped for next_token) and, for baseline.analyzer auto, the rule
    encode.tokenizer auto chooses by."""
    rule = {"num_words": config.encode.num_words, "auto_min_coverage": config.encode.auto_min_coverage}
    return {"task": config.model.task, "word_rule": rule if config.baseline.analyzer == "auto" else None}


STEP_TABLE: tuple[Step, ...] = (
    Step("ingest", ("data",), retries=True, rerun_alone=False),
    Step("validate", ("validate",), ("ingest",), derived=text_rule),
    Step("encode", ("encode",), ("ingest",)),
    # A linear model on the same splits: the yardstick evaluate, the report and promote.beat_baseline compare with.
    Step("baseline", ("baseline",), ("ingest",), derived=baseline_inputs, optional=True),
    Step("train", ("model", "train"), ("encode",)),
    # ingest: the texts as written of the most confident mistakes (evaluate/mistakes.parquet).
    Step("evaluate", (), ("ingest", "encode", "train", "baseline")),
    # The report leaves the promotion out: it changes from run to run, and the report is cached.
    Step("report", (WHOLE_CONFIG,), ("validate", "encode", "train", "evaluate")),
    Step("promote", ("promote",), ("ingest", "validate", "encode", "evaluate"), derived=model_name, cached=False),
)

# The scoring flow's steps (flows/score.py): not a training run's, so not in STEPS, but cached the same way.
SCORE_STEP_TABLE: tuple[Step, ...] = (
    Step("score_label", ("score",), package="score", retries=True, rerun_alone=False),
    Step("score_drift", ("score",), ("score_label",), package="score", rerun_alone=False),
)

STEP_BY_NAME: dict[str, Step] = {step.name: step for step in STEP_TABLE}
STEPS: tuple[str, ...] = tuple(STEP_BY_NAME)  # in the order a run executes them
_ANY_STEP: dict[str, Step] = {**STEP_BY_NAME, **{step.name: step for step in SCORE_STEP_TABLE}}


def step(name: str) -> Step:
    try:
        return _ANY_STEP[name]
    except KeyError:
        raise ValueError(f"{name!r} is not a step: use one of {', '.join(STEPS)}") from None


def is_step(name: str) -> bool:
    """Whether a task's parameter named so is a step's output (an upstream)."""
    return name in _ANY_STEP
