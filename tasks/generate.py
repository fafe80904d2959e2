"""Generate: continue a text with a finished next_token run's model, one character at a time.

The prompt takes the path training texts took: ingest's cleaning (recorded in vocab.json) and the
run's own Vocabulary.to_ids, so it starts with the start id like every training row. Then, step by
step, the model's distribution over the next token picks one (the most likely, or a draw at a
temperature), until it picks padding (train taught it that padding follows a text's last token)
or the length is reached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.architectures import TASKS
from tasks.encode import INDEX_FROM, OOV, PAD, Vocabulary
from tasks.errors import RnnflowError
from tasks.predict import load_run_model
from tasks.provenance import rerunnable_steps
from tasks.store import RunFiles, read_json, require_run_files
from tasks.text import clean_text


class GenerationError(RnnflowError, ValueError):
    """A run or prompt that generate cannot use; the message is one sentence that says what to do."""


@dataclass(frozen=True)
class Generator:
    """What generating needs from a run: its encoder and its trained next_token model."""

    run_folder: Path
    vocabulary: Vocabulary
    model: Any  # keras.Model, (batch, steps) ids -> (batch, steps, vocabulary) probabilities

    @property
    def window(self) -> int:
        """The most steps the model reads at once: the max_len - 1 steps it was trained on."""
        return max(1, self.vocabulary.max_len - 1)


def load_generator(run_folder: Path) -> Generator:
    """The run's vocabulary and cleaning (encode/vocab.json) and its next_token model (train/model.keras)."""
    run_folder = Path(run_folder)
    needed = require_run_files(run_folder, RunFiles.VOCABULARY, RunFiles.TRAINING, RunFiles.MODEL, optional=(RunFiles.SUBWORD_MODEL,),
                               rerunnable=rerunnable_steps())
    task = read_json(needed[1]).get("task", "classify")  # runs from before model.task are classifiers
    if task not in TASKS or not TASKS[task].generates:
        raise GenerationError(
            f"Run {run_folder.name} holds a {task} model, which labels texts rather than continuing them: "
            f"give --run a run trained with model.task next_token (e.g. rnnflow run --preset seed-char-next), "
            f"or label texts with 'rnnflow predict --run {run_folder.name}'."
        )
    return Generator(run_folder=run_folder, vocabulary=Vocabulary.load(needed[0]), model=load_run_model(needed[2]))


def prompt_ids(vocabulary: Vocabulary, prompt: str) -> list[int]:
    """The prompt as the model saw training texts: cleaned as ingest cleans, then the start id and token ids."""
    cleaned = clean_text(prompt, vocabulary.strip_html)
    # clean_text trims the ends; a trailing space is part of a prompt ("the " asks for a new word).
    if cleaned and prompt[-1:].isspace():
        cleaned += " "
    ids = vocabulary.to_ids(cleaned)
    if len(ids) > 1 and all(token_id == OOV for token_id in ids[1:]):
        known = "".join(token for token in vocabulary.tokens[:40] if token.isprintable() and not token.isspace())
        raise GenerationError(
            f"Prompt {prompt!r} has no character the run's vocabulary knows: write it with the characters the model "
            f"was trained on (the commonest: {known!r})."
        )
    return ids


class _NextTokenFunction:
    """The model's distribution over the next token after a sequence of ids, for sequences of any length.

    One traced TensorFlow function for every length (model.predict would trace again at each new
    length); other Keras backends call the model eagerly.
    """

    def __init__(self, model: Any):
        import keras

        self.model = model
        self.call = lambda ids: model(ids, training=False)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            self.call = tf.function(self.call, input_signature=[tf.TensorSpec((1, None), tf.int32)])

    def __call__(self, ids: list[int]) -> np.ndarray:
        probabilities = self.call(np.asarray([ids], dtype=np.int32))
        return np.asarray(probabilities, dtype=np.float64)[0, -1]


def choose(probabilities: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """The next id: the most likely (temperature 0), or a draw from the distribution sharpened or flattened by temperature."""
    if temperature <= 0:
        return int(np.argmax(probabilities))
    logits = np.log(np.clip(probabilities, 1e-12, None)) / temperature
    logits[probabilities <= 0] = -np.inf  # what cannot be chosen stays unchosen at any temperature
    weights = np.exp(logits - logits.max())
    return int(rng.choice(len(weights), p=weights / weights.sum()))


def continue_ids(generator: Generator, ids: list[int], length: int, temperature: float = 0.0, seed: int | None = None) -> list[int]:
    """Up to length new token ids after ids; fewer when the model ends the text (picks padding)."""
    next_token = _NextTokenFunction(generator.model)
    vocabulary = generator.vocabulary
    rng = np.random.default_rng(seed)
    sequence, added = list(ids), []
    for _ in range(length):
        probabilities = next_token(sequence[-generator.window:])
        # Only padding (the end) or a real token can follow: not the start id, not "unknown", not
        # the output units beyond the vocabulary (the model has encode.num_words of them).
        allowed = np.zeros_like(probabilities)
        allowed[PAD] = probabilities[PAD]
        allowed[INDEX_FROM:vocabulary.size] = probabilities[INDEX_FROM:vocabulary.size]
        chosen = choose(allowed, temperature, rng)
        if chosen == PAD:
            break
        sequence.append(chosen)
        added.append(chosen)
    return added


def generate(generator: Generator, prompt: str, length: int = 100, temperature: float = 0.0, seed: int | None = None) -> str:
    """The prompt continued by up to length characters: greedily (temperature 0) or drawn at a temperature."""
    if length < 0:
        raise GenerationError(f"--length must be 0 or more characters, not {length}.")
    if not math.isfinite(temperature) or temperature < 0:  # NaN passes `< 0` and then poisons every probability
        raise GenerationError(f"--temperature must be 0 (always the likeliest character) or more, not {temperature:g}.")
    added = continue_ids(generator, prompt_ids(generator.vocabulary, prompt), length, temperature, seed)
    return prompt + "".join(generator.vocabulary.tokens[token_id - INDEX_FROM] for token_id in added)
