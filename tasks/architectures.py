"""The model registry: every kind of model rnnflow builds, declared once.

Three axes, each a table: the recurrent cell (model.cell, model.stack_cells), how token ids become vectors
(model.input) and what the model predicts (model.task). An entry says how its part is built (a builder
function), how the report and run names describe it, whether it runs on cuDNN on a GPU, whether it has a
fused-input variant (train.fused_input), and whether its padding can change what it computes. The
configuration's choices are these tables' names; models, train, the report, run names and generate read
the entries rather than keeping their own lists. Adding one is an entry here plus its builder
(docs/design-notes.md, "Adding an architecture").

Light on purpose: the configuration imports this module, and a run whose steps all come from the cache loads
no Keras (tests/test_imports.py), so each builder imports Keras, tasks/fused_rnn.py or tasks/model_builders.py
when it is called. Those modules import nothing from here: the registry hands a task's builder its parts
(Parts), so the import graph stays one-way.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

DEFAULT_CELL = "lstm"


# --------------------------------------------------------------------------- cells: model.cell, model.stack_cells


def _simple_rnn(fused: bool, turn: int | None) -> Callable[..., Any]:
    import keras

    return keras.layers.SimpleRNN


def _lstm(fused: bool, turn: int | None) -> Callable[..., Any]:
    if fused:
        from tasks.fused_rnn import FusedLSTM

        return FusedLSTM
    import keras

    return keras.layers.LSTM


def _gru(fused: bool, turn: int | None) -> Callable[..., Any]:
    if fused:
        from tasks.fused_rnn import FusedGRU

        return FusedGRU if turn is None else partial(FusedGRU, turn=turn)
    import keras

    return keras.layers.GRU


@dataclass(frozen=True)
class Cell:
    """A recurrent cell: one layer of the stack."""

    name: str  # model.cell's value
    label: str  # the report's header and the model summary: "LSTM(64)"
    # (fused, turn) -> the Keras layer class; fused: its fused-input variant where it has one, its turn set (FusedGRU)
    layer: Callable[[bool, int | None], Callable[..., Any]]
    cudnn: bool  # Keras runs it on cuDNN's fused kernel on a GPU (the builders keep tanh, sigmoid, no recurrent dropout)
    fused: bool  # tasks/fused_rnn.py has a variant with the input product out of the time loop (train.fused_input)


CELLS: dict[str, Cell] = {
    cell.name: cell
    for cell in (
        Cell("simple_rnn", "SimpleRNN", _simple_rnn, cudnn=False, fused=False),
        Cell("lstm", "LSTM", _lstm, cudnn=True, fused=True),
        Cell("gru", "GRU", _gru, cudnn=True, fused=True),
    )
}


# --------------------------------------------------------------------------- inputs: model.input


def _embedding(cfg: Any, num_tokens: int) -> Any:
    from keras import layers

    return layers.Embedding(num_tokens, cfg.embedding_dim, mask_zero=cfg.mask_padding, name="embedding")


def _one_hot(cfg: Any, num_tokens: int) -> Any:
    from tasks.model_layers import OneHotTokens

    return OneHotTokens(num_tokens, mask_zero=cfg.mask_padding, name="one_hot")


@dataclass(frozen=True)
class Input:
    """How token ids become vectors, padding (id 0) masked when model.mask_padding says so."""

    name: str  # model.input's value
    layer: Callable[[Any, int], Any]  # (model section, number of token ids) -> the Keras layer
    describe: Callable[[dict[str, Any]], str]  # the report's words for it, from the recorded model section


INPUTS: dict[str, Input] = {
    entry.name: entry
    for entry in (
        Input("embedding", _embedding, lambda model: f"embedding {model.get('embedding_dim', '?')}"),
        Input("onehot", _one_hot, lambda model: "one-hot input"),
    )
}


# --------------------------------------------------------------------------- tasks: model.task


@dataclass(frozen=True)
class Parts:
    """What a task's builder gets from the registry, resolved: the builders import nothing from here."""

    embed: Callable[[int], Any]  # number of token ids -> the input layer (model.input)
    recurrent: list[tuple[type, int, str]]  # per layer, bottom to top: (layer class, units, cell name)


def _classifier(cfg: Any, parts: Parts, **shape: Any) -> Any:
    from tasks.model_builders import build_classifier

    return build_classifier(cfg, parts.embed, parts.recurrent, **shape)


def _next_token(cfg: Any, parts: Parts, **shape: Any) -> Any:
    from tasks.model_builders import build_next_token_model

    return build_next_token_model(cfg, parts.embed, parts.recurrent, num_tokens=shape["num_tokens"])


@dataclass(frozen=True)
class Task:
    """What the model predicts, and what follows from it for training, export and padding."""

    name: str  # model.task's value
    summary: str  # its meaning in the configuration's description
    build: Callable[..., Any]  # (model section, Parts, num_tokens=, max_len=, n_classes=) -> keras.Model
    per_step: bool  # predicts at every step from the steps before (next_token_arrays: inputs, targets, weights), not once per text
    right_padded: bool  # its rows reach the recurrence right-padded whatever encode.padding says (cuDNN's masked kernel needs it)
    causal: bool  # a step reads only the steps before it: padding after a text changes no step that counts, masked or not
    text_model: bool  # train exports model_text.keras (raw strings in, probabilities out)
    generates: bool  # rnnflow generate continues texts with it


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("classify", "one label per text", _classifier, per_step=False, right_padded=False, causal=False, text_model=True, generates=False),
        Task(
            "next_token", "predict every next character (char tokenizer)", _next_token,
            per_step=True, right_padded=True, causal=True, text_model=False, generates=True,
        ),
    )
}

CELL_NAMES = tuple(CELLS)
INPUT_NAMES = tuple(INPUTS)
TASK_NAMES = tuple(TASKS)
TASKS_DESCRIPTION = "; ".join(f"{task.name}: {task.summary}" for task in TASKS.values())


# --------------------------------------------------------------------------- what the rest of rnnflow asks


def recurrent_stack(cfg: Any) -> list[tuple[str, int]]:
    """(cell, units) per recurrent layer, bottom to top."""
    if cfg.stack_cells:
        units = cfg.stack_units or [cfg.units] * len(cfg.stack_cells)
        if len(units) != len(cfg.stack_cells):
            raise ValueError("model.stack_units must give one number per entry of model.stack_cells")
        return list(zip(cfg.stack_cells, units))
    return [(cfg.cell, cfg.units)] * cfg.layers


def recurrent_layer(cell: str, fused: bool, turn: int | None = None) -> Callable[..., Any]:
    """The layer class for a cell: its fused-input one when fused (train.fused_input) and it has one, else Keras' own."""
    entry = CELLS[cell]
    return entry.layer(fused and entry.fused, turn)


def build_model(
    cfg: Any, *, num_tokens: int, max_len: int | None, n_classes: int, fused_input: bool = True, turn: int | None = None,
) -> Any:
    """The model section's model: its task's builder, given its input layer and recurrent layers from the tables above.

    max_len None: rows of any length (train.bucket_by_length pads each batch to its own longest review).
    fused_input (train.fused_input): GRU and LSTM layers that project their inputs outside the loop (tasks/fused_rnn.py);
    turn: their GRU's steps a compiled turn, 0 graph steps (tasks.fused_rnn.turn_for); None, FusedGRU's default.
    """
    parts = Parts(
        embed=lambda tokens: INPUTS[cfg.input].layer(cfg, tokens),
        recurrent=[(recurrent_layer(cell, fused_input, turn), units, cell) for cell, units in recurrent_stack(cfg)],
    )
    return TASKS[cfg.task].build(cfg, parts, num_tokens=num_tokens, max_len=max_len, n_classes=n_classes)


def cudnn_eligible(cfg: Any, padding: str) -> bool:
    """Whether every recurrent layer can run on the fused cuDNN kernel on a GPU.

    Keras picks cuDNN for LSTM/GRU only with tanh/sigmoid, no recurrent dropout, unroll off,
    biases on, GRU reset_after, and (with masking) right-padded sequences. Our builders keep
    the first four always; the cells and the padding are the configuration's choice. Rows a
    window cuts (model.window) are laid out right-padded whatever encode.padding says, and so are
    those of a task that lays them out so (next_token_arrays).
    """
    cells_ok = all(CELLS[cell].cudnn for cell, _ in recurrent_stack(cfg))
    mask_ok = not cfg.mask_padding or padding == "post" or TASKS[cfg.task].right_padded or bool(cfg.window)
    return cells_ok and mask_ok


def reads_padding(cfg: Any) -> bool:
    """Whether padding can change what the model computes: it neither masks it (model.mask_padding) nor reads causally."""
    return not (cfg.mask_padding or TASKS[cfg.task].causal)


def describe_model(model: dict[str, Any]) -> str:
    """One line for the report's header, from a recorded model section: 'Bidirectional LSTM(64), embedding 64'."""
    if not model:
        return "model not described in the configuration"
    cells = list(model.get("stack_cells") or [model.get("cell", "?")] * int(model.get("layers") or 1))
    units = list(model.get("stack_units") or [model.get("units", "?")] * len(cells))
    units += [model.get("units", "?")] * (len(cells) - len(units))
    stack = " → ".join(f"{CELLS[cell].label if cell in CELLS else cell}({size})" for cell, size in zip(cells, units))
    if model.get("bidirectional"):
        stack = f"Bidirectional {stack}"
    line = f"{stack}, {INPUTS.get(model.get('input'), INPUTS['embedding']).describe(model)}"
    if not model.get("ngrams"):
        return line
    start = {  # older runs: from zeros
        "naive_bayes": " started from Naive Bayes",
        "logistic": " started from an NB-weighted logistic regression",
    }.get(model.get("ngram_start"), "")
    drop = f" (left out of {float(model['ngram_drop']):.0%} of training rows)" if model.get("ngram_drop") else ""
    return f"{line}, beside a bag of token 1-{model['ngrams']}-grams{start}{drop}"


def run_name_label(model: dict[str, Any]) -> str:
    """The model's part of a flow run's name ("default-lstm-20261206-041500"): its cell."""
    return str(model.get("cell", DEFAULT_CELL))
