"""The wiring as code: each step called with what tasks/steps.py declares, and its code version found once per process."""

from __future__ import annotations

import pytest

from tasks.store import StepOutput
from tests.helpers import tiny_config


def test_a_step_called_otherwise_than_its_declaration_is_refused_before_it_runs():
    from flows.run_steps import check_inputs
    from tasks.steps import step, text_rule

    config = tiny_config()
    ingest = StepOutput(step="ingest", key="k", dir="/x", files={})
    check_inputs(step("encode"), config, {"encode": config.encode, "ingest": ingest})  # as declared
    check_inputs(step("evaluate"), config, {"ingest": ingest, "encode": ingest, "train": ingest, "baseline": None})  # optional: None
    with pytest.raises(TypeError, match="the encode step is called with sections"):
        check_inputs(step("encode"), config, {"encode": config.encode})  # its upstream left out
    with pytest.raises(TypeError, match="declares sections \\['validate'\\]"):
        check_inputs(step("validate"), config, {"encode": config.encode, "ingest": ingest, **text_rule(config)})
    with pytest.raises(TypeError, match="other \\['text_rule'\\]"):
        check_inputs(step("validate"), config, {"validate": config.validate_, "ingest": ingest, "text_rule": {"tokenizer": "char"}})


def test_the_code_version_is_found_once_per_process(monkeypatch: pytest.MonkeyPatch):
    import ast

    from tasks import caching

    first = {name: caching.code_version(name) for name in ("ingest", "train", "report")}

    def no_parse(*args, **kwargs):
        raise AssertionError("parsed again")

    monkeypatch.setattr(ast, "parse", no_parse)
    assert {name: caching.code_version(name) for name in first} == first, "the second time from memory, no file parsed"
