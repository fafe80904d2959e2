"""steps: throughput of ingest, validate and encode called as plain functions, and encode vs TextVectorization.

Everything runs in this process; the libraries a step imports lazily (Great Expectations,
Keras) are imported before any clock starts, so the figures are the steps' own work.

TextVectorization gets the same train texts with max_tokens=num_words and
output_sequence_length=max_len, twice: with the standardize model_text.keras uses
(tasks.export.TextStandardizer: tasks.text's rule in tf.strings ops) and with its
defaults (lower_and_strip_punctuation, whitespace split). Agreement is read three ways:
the token strings before any vocabulary, the ids after mapping TextVectorization's through
the token strings into ours, and the raw ids (ours are TextVectorization's + 1: we reserve a
start id). Ours starts every review with the start id and pads/truncates as the preset says;
the comparison drops the start id and keeps the first max_len tokens, as TextVectorization does.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from tasks.config import DataConfig, ValidateConfig, load_config
from tasks.encode import OOV, PAD, Vocabulary, count_tokens, encode_batch, encode_reviews
from tasks.ingest import ingest_reviews, load_split, locate_source, read_imdb
from tasks.store import read_json
from tasks.text import tokenize

from bench.measure import fresh_dir, goal, median, relative, timed
from bench.options import BenchOptions

TARGET_SPEEDUP = 5.0


def matched_standardize(texts: Any) -> Any:
    """tasks.text's word rule in tf.strings ops, as model_text.keras runs it (texts are cleaned already: no HTML)."""
    from tasks.export import TextStandardizer

    return TextStandardizer("word", lowercase=True, strip_html=False)(texts)


def step_encode(texts: list[str], cfg: Any, max_len: int) -> tuple[Vocabulary, list[list[int]]]:
    """The encode step's work on one list of texts, in memory: one tokenising pass to count, the vocabulary,
    then every text's ids written into a preallocated padded matrix (tasks.encode's per-batch functions)."""
    counts, _ = count_tokens(texts, cfg)
    vocab = Vocabulary.from_counts(counts, cfg, max_len)
    values, lengths = encode_batch(vocab, texts, np.zeros((len(texts), max_len), dtype=np.int32))
    return vocab, [ids.tolist() for ids in np.split(values, np.cumsum(lengths)[:-1])]


def _row(name: str, what: str, n: int, timings: list[float], unit: str, **extra: Any) -> dict[str, Any]:
    timings = [round(t, 4) for t in timings]
    mid = median(timings)
    return {"name": name, "command": what, "n": n, "timings_s": timings, "median_s": mid,
            "per_second": round(n / mid, 1) if mid else None, "unit": unit, **extra}


def _ours_window(sequences: list[list[int]], max_len: int) -> np.ndarray:
    """Our id lists without the start id, first max_len tokens, padded after: TextVectorization's window."""
    window = np.zeros((len(sequences), max_len), dtype=np.int64)
    for i, sequence in enumerate(sequences):
        kept = sequence[1 : max_len + 1]
        window[i, : len(kept)] = kept
    return window


def _agreement(vectorizer: Any, texts: list[str], vocab: Vocabulary, sequences: list[list[int]], max_len: int) -> dict[str, Any]:
    import tensorflow as tf

    their_vocab = vectorizer.get_vocabulary()  # ["", "[UNK]", most frequent first ...]
    their_tokens = their_vocab[2:]
    theirs = vectorizer(tf.constant(texts)).numpy().astype(np.int64)
    ours = _ours_window(sequences, max_len)
    through_tokens = np.array([PAD, OOV] + [vocab.ids.get(token, OOV) for token in their_tokens])[theirs]
    raw_shifted = np.where(theirs >= 2, theirs + 1, np.where(theirs == 1, OOV, PAD))
    ranked_same = sum(a == b for a, b in zip(vocab.tokens, their_tokens))
    return {
        "reviews_identical_ids_through_tokens": round(float((through_tokens == ours).all(axis=1).mean()), 4),
        "reviews_identical_raw_ids": round(float((raw_shifted == ours).all(axis=1).mean()), 4),
        "vocabulary_shared_share": round(len(set(vocab.tokens) & set(their_tokens)) / max(1, len(vocab.tokens)), 4),
        "vocabulary_same_rank_share": round(ranked_same / max(1, len(vocab.tokens)), 4),
        "their_vocabulary_size": len(their_vocab),
        "our_vocabulary_size": vocab.size,
    }


def _token_agreement(texts: list[str], lowercase: bool) -> float:
    """Share of reviews whose matched-standardize tokens equal tasks.text.tokenize's, before any vocabulary."""
    import tensorflow as tf

    theirs = tf.strings.split(matched_standardize(tf.constant(texts))).to_list()
    same = sum([t.decode() for t in split] == tokenize(text, lowercase) for split, text in zip(theirs, texts))
    return round(same / max(1, len(texts)), 4)


def run(opts: BenchOptions) -> dict[str, Any]:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations  # noqa: F401  (validate imports it on first call)
    import great_expectations.expectations  # noqa: F401
    import keras
    import tensorflow as tf

    from tasks.validate import validate_reviews

    work = fresh_dir(opts.work_dir / "steps")
    cfg = load_config(opts.preset, overrides=[f"data.path={opts.archive}"] + ([f"data.max_reviews={opts.max_reviews}"] if opts.max_reviews else []))
    data_cfg: DataConfig = cfg.data
    source = locate_source(data_cfg)
    where = f"in-process, {relative(opts.archive)}"

    read_times, ingest_times, validate_times, encode_times = [], [], [], []
    n_archive = n_ingested = 0
    for repeat in range(opts.repeats):
        frames, seconds = timed(lambda: read_imdb(Path(source["path"]), data_cfg.strip_html))
        read_times.append(seconds)
        n_archive = sum(len(f) for f in frames.values())
        del frames
        ingest_dir = fresh_dir(work / f"ingest-{repeat}")
        summary, seconds = timed(lambda: ingest_reviews(data_cfg, source, ingest_dir))
        ingest_times.append(seconds)
        n_ingested = sum(summary["n"].values())
        _, seconds = timed(lambda: validate_reviews(ValidateConfig(), ingest_dir, fresh_dir(work / f"validate-{repeat}")))
        validate_times.append(seconds)
        _, seconds = timed(lambda: encode_reviews(cfg.encode, ingest_dir, fresh_dir(work / f"encode-{repeat}")))
        encode_times.append(seconds)
        if repeat:  # keep the first repeat's ingest for the comparison below
            shutil.rmtree(ingest_dir)

    ingest_dir = work / "ingest-0"
    train_texts = load_split(ingest_dir, "train")["text"].tolist()
    max_len = read_json(work / "encode-0" / "encode.json")["max_len"]
    num_words = cfg.encode.num_words
    ours_times, matched_times, default_times = [], [], []
    vocab = sequences = matched = default = None
    for _ in range(opts.repeats):
        (vocab, sequences), ours_s = timed(lambda: step_encode(train_texts, cfg.encode, max_len))
        ours_times.append(ours_s)
        for standardize, times in ((matched_standardize, matched_times), ("lower_and_strip_punctuation", default_times)):
            keras.backend.clear_session()
            layer = keras.layers.TextVectorization(max_tokens=num_words, output_sequence_length=max_len, standardize=standardize)
            dataset = tf.data.Dataset.from_tensor_slices(train_texts).batch(1024)
            adapt_s = timed(lambda: layer.adapt(dataset))[1]
            call_s = timed(lambda: layer(tf.constant(train_texts)))[1]
            times.append(adapt_s + call_s)
            if standardize is matched_standardize:
                matched = layer
            else:
                default = layer

    n_train = len(train_texts)
    comparison = f"train texts of {relative(ingest_dir)}, num_words={num_words}, max_len={max_len}"
    rows = [
        _row("read archive (read_imdb)", f"tasks.ingest.read_imdb, {where}", n_archive, read_times, "reviews/s"),
        _row("ingest", f"tasks.ingest.ingest_reviews, {where}" + (f", data.max_reviews={opts.max_reviews}" if opts.max_reviews else ""),
             n_archive, ingest_times, "archive reviews/s", reviews_written=n_ingested),
        _row("validate", "tasks.validate.validate_reviews (defaults) on the ingest output", n_ingested, validate_times, "rows/s"),
        _row("encode (step)", f"tasks.encode.encode_reviews (preset {opts.preset}) on the ingest output, files included", n_ingested, encode_times, "reviews/s"),
        _row("encode: count, vocabulary, ids (the step's code)", f"in memory, {comparison}", n_train, ours_times, "reviews/s"),
        _row("TextVectorization, matched rules: adapt + call", f"keras.layers.TextVectorization(standardize=matched), {comparison}",
             n_train, matched_times, "reviews/s"),
        _row("TextVectorization, defaults: adapt + call", f"keras.layers.TextVectorization(lower_and_strip_punctuation), {comparison}",
             n_train, default_times, "reviews/s"),
    ]
    ours_median = rows[4]["median_s"]
    speedup = round(rows[5]["median_s"] / ours_median, 3) if ours_median else None
    agreement = {
        "matched_rules": {"reviews_identical_tokens": _token_agreement(train_texts, cfg.encode.lowercase),
                          **_agreement(matched, train_texts, vocab, sequences, max_len)},
        "default_rules": _agreement(default, train_texts, vocab, sequences, max_len),
    }
    return {
        "description": "Throughput of ingest, validate and encode as plain functions; encode vs keras.layers.TextVectorization.",
        "rows": rows,
        "summary": {
            "speedup_vs_textvectorization_matched": speedup,
            "speedup_vs_textvectorization_default": round(rows[6]["median_s"] / ours_median, 3) if ours_median else None,
            "agreement": agreement,
        },
        "goals": [goal("encode ≥ 5× faster than TextVectorization", f"≥ {TARGET_SPEEDUP:g}×", speedup,
                       None if speedup is None else speedup >= TARGET_SPEEDUP,
                       f"median of {opts.repeats} run(s): TextVectorization (matched rules) adapt + call over the encode step's count, vocabulary and ids, "
                       f"{n_train} train texts")],
        "notes": [
            "Imports (Great Expectations, TensorFlow/Keras) happen before any clock starts.",
            "ingest reads the whole archive whatever data.max_reviews says (it samples after reading): its rate is archive reviews/s.",
            "Agreement, matched rules: reviews_identical_tokens compares the token strings; ..._through_tokens maps "
            "TextVectorization's ids to ours through their tokens (tokenisation and vocabulary membership); ..._raw_ids "
            "compares the ids themselves (also needs the same frequency ranking and tie order). TextVectorization keeps "
            "num_words - 2 tokens, we keep num_words - 3 (we also reserve a start id).",
        ],
    }
