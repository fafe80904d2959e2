"""The model registry (tasks/architectures.py): the configuration's choices, the report's words and the run names come from it."""

from __future__ import annotations

import re
import typing

from tasks.architectures import CELLS, INPUTS, TASKS, cudnn_eligible, describe_model, reads_padding, run_name_label
from tasks.config import ModelConfig
from tasks.flow_run_labels import flow_run_name


def _choices(annotation) -> tuple:
    """The Literal's values inside a field's annotation (list[...] | None unwrapped)."""
    while typing.get_origin(annotation) is not typing.Literal:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return typing.get_args(annotation)


def test_the_configuration_offers_exactly_the_registry_s_names():
    fields = ModelConfig.model_fields
    assert _choices(fields["cell"].annotation) == tuple(CELLS) == ("simple_rnn", "lstm", "gru")
    assert _choices(fields["stack_cells"].annotation) == tuple(CELLS)
    assert _choices(fields["input"].annotation) == tuple(INPUTS) == ("embedding", "onehot")
    assert _choices(fields["task"].annotation) == tuple(TASKS) == ("classify", "next_token")


def test_the_report_describes_the_model_with_the_registry_s_labels():
    assert describe_model({"cell": "lstm", "units": 64, "bidirectional": True, "embedding_dim": 64}) == "Bidirectional LSTM(64), embedding 64"
    stacked = {"stack_cells": ["gru", "simple_rnn"], "stack_units": [256, 128], "input": "onehot"}
    assert describe_model(stacked) == "GRU(256) → SimpleRNN(128), one-hot input"
    assert describe_model({"cell": "mystery", "units": 8, "layers": 2}) == "mystery(8) → mystery(8), embedding ?"
    assert describe_model({}) == "model not described in the configuration"
    bag = {"cell": "gru", "units": 64, "embedding_dim": 64, "ngrams": 3}
    assert describe_model({**bag, "ngram_start": "naive_bayes"}).endswith("beside a bag of token 1-3-grams started from Naive Bayes")
    assert describe_model({**bag, "ngram_start": "logistic"}).endswith("beside a bag of token 1-3-grams started from an NB-weighted logistic regression")


def test_run_names_name_the_cell():
    assert run_name_label({"cell": "gru"}) == "gru" and run_name_label({}) == "lstm"
    assert re.fullmatch(r"seed-gru-\d{8}-\d{6}", flow_run_name({"preset": "seed", "model": {"cell": "gru"}}))
    assert re.fullmatch(r"default-lstm-\d{8}-\d{6}", flow_run_name({}))


def test_cudnn_and_padding_follow_the_entries():
    masked_pre = ModelConfig(cell="gru", mask_padding=True)
    assert not cudnn_eligible(masked_pre, "pre")  # cuDNN's masked kernel needs right padding
    assert cudnn_eligible(masked_pre, "post") and not cudnn_eligible(ModelConfig(cell="simple_rnn"), "post")
    next_token = ModelConfig(task="next_token", cell="gru", bidirectional=False)
    assert cudnn_eligible(next_token, "pre")  # its rows are laid out right-padded whatever encode says
    assert reads_padding(ModelConfig(mask_padding=False)) and not reads_padding(ModelConfig())
    assert not reads_padding(ModelConfig(task="next_token", mask_padding=False, bidirectional=False))  # causal

