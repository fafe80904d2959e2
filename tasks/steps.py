"""The steps of a run, declared once, as data.

Everything else derives from STEP_TABLE: the flow's order (flows/pipeline.py), what each task is
called with (`task_inputs`), which code makes up a step's cache key (tasks/caching.py finds its
package's files and their imports), the CLI's step names, and the manifest's steps.

A step's task is named as "module:attribute" and imported only when the flow calls it, so this
module stays import-light: tasks/caching.py and tasks/store/ read it without loading Keras.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from tasks.config import RunConfig

WHOLE_CONFIG = "*"  # a `sections` entry: the whole run configuration, under "config"


@dataclass(frozen=True)
class Step:
    """One step: its task, what configuration and upstream outputs it reads, its code, how it is retried."""

    name: str
    task: str  # "module:attribute" of its Prefect task
    sections: tuple[str, ...] = ()  # one: that section's dict; several: {name: section}; WHOLE_CONFIG: {"config": all}
    upstream: tuple[str, ...] = ()  # steps whose outputs it reads (passed as `upstream`, and in its cache key)
    context: tuple[str, ...] = ()  # what the run hands it besides: "source" (the located input), "run_folder"
    derived: Callable[["RunConfig"], dict[str, Any]] | None = None  # further task inputs computed from the config
    package: str = ""  # its own tasks/ module or package (default: its name); the code version also covers what it imports
    cached: bool = True  # False: never cached, it writes into the run folder itself (promote)
    retries: bool = False  # reads a network or disk: retried with data.retries and backoff, unless the input is bad
    rerun_alone: bool = True  # `rnnflow step NAME --run ID` can recompute it from a recorded run
    after: str | None = None  # "module:function(run, output)" called once its outputs are in the run folder
    optional: bool = False  # runs from before the step lack it: a rerun derived from one goes on without, and so do its readers

    @property
    def own_package(self) -> str:
        return self.package or self.name


def _model_name(config: "RunConfig") -> dict[str, Any]:
    # The model whose champion the run is compared with (promote.model, or derived from the data keys).
    return {"model_name": config.model_name}


def _text_rule(config: "RunConfig") -> dict[str, Any]:
    # The kept_text and token_length checks measure what encode's tokenizer keeps and counts; for auto, validate
    # makes encode's choice from train's words, by num_words and auto_min_coverage. Those two enter the rule
    # (and validate's cache key) only for auto: for another tokenizer they do not change validate's output.
    encode = config.encode
    rule = {"tokenizer": encode.tokenizer, "lowercase": encode.lowercase}
    if encode.tokenizer == "auto":
        rule.update(num_words=encode.num_words, auto_min_coverage=encode.auto_min_coverage)
    return {"text_rule": rule}


def _baseline_inputs(config: "RunConfig") -> dict[str, Any]:
    # The baseline is a classifier (skipped for next_token); baseline.analyzer auto chooses by encode.tokenizer auto's rule.
    rule = {"num_words": config.encode.num_words, "auto_min_coverage": config.encode.auto_min_coverage}
    return {"task": config.model.task, "word_rule": rule if config.baseline.analyzer == "auto" else None}


STEP_TABLE: tuple[Step, ...] = (
    Step("ingest", "tasks.ingest:ingest_task", ("data",), context=("source",), retries=True, rerun_alone=False),
    Step("validate", "tasks.validate:validate_task", ("validate",), ("ingest",), derived=_text_rule),
    Step("encode", "tasks.encode:encode_task", ("encode",), ("ingest",)),
    # A linear model on the same splits: the yardstick evaluate, the report and promote.beat_baseline compare with.
    Step("baseline", "tasks.baseline:baseline_task", ("baseline",), ("ingest",), derived=_baseline_inputs, optional=True),
    Step("train", "tasks.train:train_task", ("model", "train"), ("encode",)),
    # ingest: the texts as written of the most confident mistakes (evaluate/mistakes.parquet).
    Step("evaluate", "tasks.evaluate:evaluate_task", (), ("ingest", "encode", "train", "baseline")),
    # The report leaves the promotion out: it changes from run to run, and the report is cached.
    Step("report", "tasks.report:report_task", (WHOLE_CONFIG,), ("validate", "encode", "train", "evaluate"),
         after="tasks.report:publish_run_report"),
    Step("promote", "tasks.promote:promote_task", ("promote",), ("ingest", "validate", "encode", "evaluate"),
         context=("run_folder",), derived=_model_name, cached=False, after="tasks.promote:record_promotion"),
)

# The scoring flow's steps (flows/score.py): not a training run's, so not in STEPS, but cached the same way.
SCORE_STEP_TABLE: tuple[Step, ...] = (
    Step("score_label", "tasks.score:score_label_task", ("score",), package="score", retries=True, rerun_alone=False),
    Step("score_drift", "tasks.score:score_drift_task", ("score",), ("score_label",), package="score", rerun_alone=False),
)

STEP_BY_NAME: dict[str, Step] = {step.name: step for step in STEP_TABLE}
STEPS: tuple[str, ...] = tuple(STEP_BY_NAME)  # in the order a run executes them
_ANY_STEP: dict[str, Step] = {**STEP_BY_NAME, **{step.name: step for step in SCORE_STEP_TABLE}}


def step(name: str) -> Step:
    try:
        return _ANY_STEP[name]
    except KeyError:
        raise ValueError(f"{name!r} is not a step: use one of {', '.join(STEPS)}") from None


def config_section(spec: Step, config: "RunConfig") -> dict[str, Any]:
    """The configuration a step's task gets as `section` (and its cache key hangs on)."""
    if spec.sections == (WHOLE_CONFIG,):
        from tasks.config_reporting import without_reporting

        return {"config": without_reporting(config.as_dict())}
    if len(spec.sections) == 1:
        return config.section(spec.sections[0])
    return {name: config.section(name) for name in spec.sections}


def task_inputs(name: str, config: "RunConfig", outputs: dict[str, Any], context: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a step's task is called with: its section, its upstream outputs, and what the run hands it."""
    spec = step(name)
    context = context or {}
    upstream = {n: outputs[n] for n in spec.upstream if n in outputs or not step(n).optional}
    inputs: dict[str, Any] = {"section": config_section(spec, config), "upstream": upstream}
    inputs.update({key: context[key] for key in spec.context})
    if spec.derived is not None:
        inputs.update(spec.derived(config))
    return inputs


def load_attribute(reference: str) -> Any:
    """The object "module:attribute" names, importing the module."""
    import importlib

    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)
