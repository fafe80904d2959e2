"""Encode: a vocabulary from the train split, token ids padded to max_len, as .npy and Parquet.

Every split is read in record batches (tasks.store.iter_parquet) and written batch by batch, so
memory stays near one batch of text however large the corpus grows: one pass over train counts
tokens and lengths (for subwords: one pass trains the subword model, one measures lengths), then
one pass per split writes its rows into preallocated .npy files and counts the tokens outside the
vocabulary (encode.json's oov_share).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks import store
from tasks.caching import CacheSlot, produce_step, step_task
from tasks.config import EncodeConfig
from tasks.errors import RnnflowError
from tasks.morphemes import analyse_many, analyzer_version, check_analyzer
from tasks.store import SPLITS, RunFiles, StepOutput, atomic_path, iter_parquet, parquet_rows, read_json, write_json
from tasks.subword import MODEL_FILE as SUBWORD_MODEL_FILE, SubwordModel, train_subword_model
from tasks.text import clean_text, tokenize_many
# The reserved ids and the vocabulary rule live beside tokenizer auto's choice, which validate makes too.
from tasks.vocabulary_rule import INDEX_FROM, OOV, PAD, START, choose_tokenizer, ranked_tokens, token_frequencies

TOKENS_SCHEMA = pa.schema(
    [("id", pa.int64()), ("label", pa.int64()), ("length", pa.int32()), ("token_ids", pa.list_(pa.int32()))]
)


class NotEnoughSpaceError(RnnflowError, OSError):
    """The output folder's disk cannot hold encode's arrays: one sentence naming the folder, the bytes needed and free."""

    def __init__(self, message: str):
        super().__init__(message)  # one argument, so str() is the sentence alone, without "[Errno 28]"
        self.errno = errno.ENOSPC


# A .npy header is a few hundred bytes at most; a page covers it and the file system's rounding.
NPY_HEADER_BYTES = 4096
# tokens_<split>.parquet per row: id, label, length and a list offset (8 + 8 + 4 + 4 bytes), before compression.
TOKEN_ROW_BYTES = 24


def _space_sentence(folder: Path, needed: int | None, free: int) -> str:
    # The step writes into a hidden scratch folder that is removed on failure: name its visible parent.
    shown = folder.parent if folder.name.startswith(".") else folder
    need = f"{needed:,} bytes needed" if needed is not None else "the disk filled while writing"
    return (f"Not enough free space in {shown} for encode's arrays: {need}, {free:,} free; "
            "free some space or point --artifacts at a larger disk.")


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def split_bytes(rows: int, max_len: int, mean_length: float) -> int:
    """What one split's files take at most: X (rows x max_len int32), y (rows int32), each with its header,
    and tokens_<split>.parquet uncompressed (every unpadded id, int32, plus its row's other columns)."""
    return rows * max_len * 4 + rows * 4 + 2 * NPY_HEADER_BYTES + int(rows * (mean_length * 4 + TOKEN_ROW_BYTES))


def check_free_space(folder: Path, needed: int) -> None:
    """Refuse before writing: a memory-mapped .npy on a full disk does not raise, the process dies of SIGBUS."""
    free = _free_bytes(folder)
    if free < needed:
        raise NotEnoughSpaceError(_space_sentence(folder, needed, free))


def _reserve(path: Path, size: int, folder: Path) -> None:
    """Allocate a preallocated .npy's blocks now, so a disk that fills meanwhile (another run writing beside
    this one) fails here with ENOSPC instead of SIGBUS at a later page write."""
    try:
        with open(path, "r+b") as handle:
            os.posix_fallocate(handle.fileno(), 0, size)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise NotEnoughSpaceError(_space_sentence(folder, size, _free_bytes(folder))) from None
        if error.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # a file system without fallocate: the check above stands
            raise
    except AttributeError:  # no posix_fallocate (macOS): the check above stands
        pass


def _raise_if_disk_full(error: OSError, folder: Path) -> None:
    if error.errno == errno.ENOSPC and not isinstance(error, NotEnoughSpaceError):
        raise NotEnoughSpaceError(_space_sentence(folder, None, _free_bytes(folder))) from None


class Vocabulary:
    """Token -> id for the tokens kept from training; the one encoder for training and prediction alike.

    Tokens are words or single characters (tasks/text.py's rules), or the pieces of a subword model
    learnt from the train split (tasks/subword.py); either way ids 0, 1 and 2 are reserved
    (padding, start, out of vocabulary) and kept tokens count up from 3: by frequency for words
    and characters, in the subword model's own order for pieces. With an analyser
    (encode.analyzer, tasks/morphemes.py) the tokenizer reads each text's morphemes instead.
    """

    def __init__(
        self, tokens: Sequence[str], *, lowercase: bool = True, max_len: int, padding: str, truncating: str, tokenizer: str = "word",
        strip_html: bool = True, subword: SubwordModel | None = None, analyzer: str = "none", analyzer_version: str | None = None,
    ):
        if (tokenizer == "subword") != (subword is not None):
            raise ValueError("A subword vocabulary needs its subword model, and only it has one.")
        self.tokens = list(tokens)
        self.strip_html = strip_html  # the cleaning ingest gave the training texts, repeated for raw input
        self.ids = {token: i + INDEX_FROM for i, token in enumerate(self.tokens)}
        self._token_array = None
        self.tokenizer = tokenizer
        self.subword = subword
        self.analyzer = analyzer  # tasks/morphemes.py: what runs before the tokenizer, "none" for nothing
        self.analyzer_version = analyzer_version
        self.lowercase = lowercase
        self.max_len = max_len
        self.padding = padding
        self.truncating = truncating

    @classmethod
    def build(cls, texts: Iterable[str], cfg: EncodeConfig, max_len: int) -> "Vocabulary":
        texts = list(texts)
        if cfg.tokenizer == "subword":
            subword = SubwordModel(train_subword_model(analyse_many(texts, cfg.analyzer), cfg.num_words, cfg.lowercase))
            return cls(subword.pieces, lowercase=cfg.lowercase, max_len=max_len, padding=cfg.padding, truncating=cfg.truncating,
                       tokenizer="subword", subword=subword, analyzer=cfg.analyzer, analyzer_version=analyzer_version(cfg.analyzer))
        return cls.from_counts(count_tokens(texts, cfg)[0], cfg, max_len)

    @classmethod
    def from_counts(cls, counts: Counter[str], cfg: EncodeConfig, max_len: int, strip_html: bool = True) -> "Vocabulary":
        """The vocabulary of token counts gathered however (whole, or one record batch at a time)."""
        return cls(
            ranked_tokens(counts, cfg.num_words), lowercase=cfg.lowercase, max_len=max_len, padding=cfg.padding,
            truncating=cfg.truncating, tokenizer=cfg.tokenizer, strip_html=strip_html, analyzer=cfg.analyzer,
            analyzer_version=analyzer_version(cfg.analyzer),
        )

    @classmethod
    def load(cls, path: Path) -> "Vocabulary":
        """vocab.json, and for the subword tokenizer the subword.model beside it."""
        path = Path(path)
        data = read_json(path)
        tokenizer = data.get("tokenizer", "word")  # vocab.json files from before the char tokenizer are word-level
        subword = SubwordModel((path.parent / SUBWORD_MODEL_FILE).read_bytes()) if tokenizer == "subword" else None
        return cls(
            data["tokens"], lowercase=data["lowercase"], max_len=data["max_len"], padding=data["padding"], truncating=data["truncating"],
            tokenizer=tokenizer, subword=subword,
            strip_html=data.get("strip_html", True),  # and from before the setting, ingest always stripped HTML
            analyzer=data.get("analyzer", "none"), analyzer_version=data.get("analyzer_version"),  # none before encode.analyzer
        )

    def save(self, path: Path) -> None:
        """vocab.json at path; a subword model goes beside it as subword.model, part of the step's files and fingerprint."""
        path = Path(path)
        if self.subword is not None:
            with atomic_path(path.parent / SUBWORD_MODEL_FILE) as tmp:
                tmp.write_bytes(self.subword.model)
        write_json(
            path,
            {
                "tokenizer": self.tokenizer,
                "analyzer": self.analyzer, "analyzer_version": self.analyzer_version,
                "strip_html": self.strip_html,
                "pad": PAD, "start": START, "oov": OOV, "index_from": INDEX_FROM,
                "lowercase": self.lowercase, "max_len": self.max_len,
                "padding": self.padding, "truncating": self.truncating,
                "tokens": self.tokens,
            },
        )

    @property
    def token_array(self) -> Any:
        """The kept tokens as an Arrow string array (id = place + INDEX_FROM), built once, for batch lookups."""
        if self._token_array is None:
            self._token_array = pa.array(self.tokens, pa.string())
        return self._token_array

    @property
    def size(self) -> int:
        return len(self.tokens) + INDEX_FROM

    def ids_many(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(every text's token ids end to end, int32, no start ids; offsets): text i's at offsets[i]:offsets[i+1].

        The one place texts become ids: tokens by tokenize_many and their places in the vocabulary
        by Arrow's index_in, or the subword model's own ids, from each text's morphemes where the run has an
        analyser (tasks/morphemes.py). No Keras, so encode does not load TensorFlow.
        """
        texts = analyse_many(texts, self.analyzer) if self.analyzer != "none" else texts
        if self.subword is not None:
            return self.subword.ids_many(texts)
        tokens, offsets = tokenize_many(texts, self.lowercase, self.tokenizer)
        found = pc.index_in(tokens, value_set=self.token_array)  # place in self.tokens, null when absent
        ids = pc.fill_null(pc.add(found, INDEX_FROM), OOV).to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
        return ids, offsets

    def to_ids(self, text: str) -> list[int]:
        return self.encode([text])[1][0]

    def encode_raw(self, texts: Iterable[str]) -> tuple[np.ndarray, list[list[int]]]:
        """encode() for texts as they arrive from outside: first the cleaning ingest applied in training."""
        return self.encode([clean_text(text, self.strip_html) for text in texts])

    def encode(self, texts: Iterable[str]) -> tuple[np.ndarray, list[list[int]]]:
        """(padded int32 matrix, unpadded id lists, start id first) for texts already cleaned as ingest cleans them."""
        import keras

        ids, offsets = self.ids_many(list(texts))
        ids = ids.tolist()
        sequences = [[START] + ids[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
        padded = keras.utils.pad_sequences(
            sequences, maxlen=self.max_len, dtype="int32", padding=self.padding, truncating=self.truncating, value=PAD
        )
        return padded, sequences


def resolve_max_len(cfg: EncodeConfig, lengths: np.ndarray) -> int:
    """A fixed max_len, or 'auto': the chosen percentile of train lengths (the seeds read 100 off a histogram)."""
    if cfg.max_len != "auto":
        return int(cfg.max_len)
    return max(1, int(np.ceil(np.percentile(lengths, cfg.max_len_percentile))))


def count_tokens(texts: list[str], cfg: EncodeConfig) -> tuple[Counter[str], np.ndarray]:
    """Token counts over texts (their morphemes with encode.analyzer), and each text's id-sequence length (start id
    included): one tokenising pass."""
    tokens, offsets = tokenize_many(analyse_many(texts, cfg.analyzer), cfg.lowercase, cfg.tokenizer)
    return token_frequencies(tokens), np.diff(offsets) + 1


def _train_texts(path: Path, batch_rows: int, analyzer: str = "none") -> Iterator[str]:
    """The train split's texts as the tokenizer reads them: their morphemes with an analyser."""
    for frame in iter_parquet(path, columns=["text"], batch_rows=batch_rows):
        yield from analyse_many(frame["text"].tolist(), analyzer)


def _learn_train(path: Path, cfg: EncodeConfig, batch_rows: int) -> tuple[str, list[str], SubwordModel | None, np.ndarray, dict[str, Any]]:
    """What encode learns from the train split: (tokenizer, tokens in id order, the subword model or None,
    id-sequence lengths, how tokenizer auto chose).

    Words and characters: one pass counts tokens and lengths. Subwords: one pass trains the
    model, a second measures the lengths in its pieces. auto counts words first and goes on with
    characters or subwords when num_words of them cover too little of the split's words (characters for
    Korean, Japanese or Chinese, pieces for Turkish): tasks.vocabulary_rule.choose_tokenizer, which validate
    calls on the same counts to measure lengths in the same units.
    """
    lengths = np.empty(parquet_rows(path), dtype=np.int64)
    choice: dict[str, Any] = {}
    if cfg.tokenizer != "subword":
        counts: Counter[str] = Counter()
        row = 0
        word_cfg = cfg.model_copy(update={"tokenizer": "word"}) if cfg.tokenizer == "auto" else cfg
        for frame in iter_parquet(path, columns=["text"], batch_rows=batch_rows):
            texts = frame["text"].tolist()
            batch_counts, batch_lengths = count_tokens(texts, word_cfg)
            counts.update(batch_counts)
            lengths[row : row + len(texts)] = batch_lengths
            row += len(texts)
        tokens = ranked_tokens(counts, cfg.num_words)
        if cfg.tokenizer != "auto":
            return cfg.tokenizer, tokens, None, lengths, choice
        auto = choose_tokenizer(counts, cfg.num_words, cfg.auto_min_coverage)
        choice = auto.record()
        if auto.chosen == "word":
            return "word", tokens, None, lengths, choice
        if auto.chosen == "char":  # a second pass counts the characters
            counts, row, char_cfg = Counter(), 0, cfg.model_copy(update={"tokenizer": "char"})
            for frame in iter_parquet(path, columns=["text"], batch_rows=batch_rows):
                batch_counts, batch_lengths = count_tokens(frame["text"].tolist(), char_cfg)
                counts.update(batch_counts)
                lengths[row : row + len(frame)] = batch_lengths
                row += len(frame)
            return "char", ranked_tokens(counts, cfg.num_words), None, lengths, choice
    subword = SubwordModel(train_subword_model(_train_texts(path, batch_rows, cfg.analyzer), cfg.num_words, cfg.lowercase))
    row = 0
    for texts in _batches(_train_texts(path, batch_rows, cfg.analyzer), batch_rows):
        offsets = subword.ids_many(texts)[1]
        lengths[row : row + len(texts)] = np.diff(offsets) + 1
        row += len(texts)
    return "subword", subword.pieces, subword, lengths, choice


def _batches(texts: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def encode_batch(vocab: Vocabulary, texts: list[str], padded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Write texts' ids into padded (rows x max_len, PAD-filled) as keras.utils.pad_sequences lays them out;
    return every id end to end (int32, each text's start id first) and each text's length.

    The ids Vocabulary.encode gives (tests/test_encode.py), laid out for the whole batch at once.
    """
    ids, offsets = vocab.ids_many(texts)
    n = len(texts)
    lengths = (np.diff(offsets) + 1).astype(np.int32)
    starts = offsets[:-1] + np.arange(n)
    values = np.empty(len(ids) + n, dtype=np.int32)
    values[starts] = START
    words = np.ones(len(values), dtype=bool)
    words[starts] = False
    values[words] = ids
    max_len, pre_truncating, post_padding = vocab.max_len, vocab.truncating == "pre", vocab.padding == "post"
    for row, (first, length) in enumerate(zip(starts.tolist(), lengths.tolist())):
        kept = min(length, max_len)
        first = first + length - kept if pre_truncating else first
        if post_padding:
            padded[row, :kept] = values[first : first + kept]
        else:
            padded[row, max_len - kept :] = values[first : first + kept]
    return values, lengths


def _encode_split(
    vocab: Vocabulary, source: Path, out_dir: Path, split: str, batch_rows: int, mean_length: float = 0.0
) -> tuple[int, int, float]:
    """Stream one split into X_<split>.npy, y_<split>.npy and tokens_<split>.parquet;
    (rows, rows longer than max_len, share of its tokens outside the vocabulary; nan without tokens).

    The .npy files are preallocated and filled batch by batch; all three appear by rename only once
    complete.
    """
    n, max_len = parquet_rows(source), vocab.max_len
    changed = f"{source} holds other rows than its footer says ({n}): the file changed while encode read it; run encode again."
    truncated = unknown = tokens = 0
    check_free_space(out_dir, split_bytes(n, max_len, mean_length))
    with contextlib.ExitStack() as files:
        x_tmp = files.enter_context(atomic_path(out_dir / f"X_{split}.npy"))
        y_tmp = files.enter_context(atomic_path(out_dir / f"y_{split}.npy"))
        tokens_tmp = files.enter_context(atomic_path(out_dir / f"tokens_{split}.parquet"))
        x = np.lib.format.open_memmap(x_tmp, mode="w+", dtype=np.int32, shape=(n, max_len))
        x_offset = x.offset  # where row 0 starts, after the .npy header
        del x
        _reserve(x_tmp, x_offset + n * max_len * 4, out_dir)
        y = np.lib.format.open_memmap(y_tmp, mode="w+", dtype=np.int32, shape=(n,))
        _reserve(y_tmp, y.offset + n * 4, out_dir)
        start = 0
        with pq.ParquetWriter(tokens_tmp, TOKENS_SCHEMA, compression="zstd") as writer:
            for frame in iter_parquet(source, columns=["text", "label", "id"], batch_rows=batch_rows):
                stop = start + len(frame)
                if stop > n:
                    raise ValueError(changed)
                # Only this batch's rows of X are mapped, so the pages written stay out of the
                # process's resident memory once the batch is done, however long the split.
                padded = np.memmap(x_tmp, dtype=np.int32, mode="r+", offset=x_offset + start * max_len * 4, shape=(stop - start, max_len))
                padded[...] = PAD
                values, lengths = encode_batch(vocab, frame["text"].tolist(), padded)
                padded.flush()
                del padded
                labels = frame["label"].to_numpy(dtype=np.int32)
                y[start:stop] = labels
                offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
                np.cumsum(lengths, out=offsets[1:])
                batch = pa.table(
                    {
                        "id": pa.array(frame["id"].to_numpy(), pa.int64()),
                        "label": pa.array(labels, pa.int64()),
                        "length": pa.array(lengths, pa.int32()),
                        "token_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)),
                    },
                    schema=TOKENS_SCHEMA,
                )
                writer.write_table(batch)
                truncated += int((lengths > max_len).sum())
                unknown += int(np.count_nonzero(values == OOV))
                tokens += len(values) - len(lengths)  # start ids are not tokens
                start = stop
        if start != n:
            raise ValueError(changed)
        y.flush()
        del y  # unmapped before the rename
    return n, truncated, unknown / tokens if tokens else float("nan")


def encode_reviews(cfg: EncodeConfig, ingest_dir: Path, out_dir: Path, *, batch_rows: int | None = None) -> dict[str, Any]:
    """Vocabulary and max_len from train, then every split encoded to .npy and Parquet, batch_rows rows at a time.

    batch_rows defaults to tasks.store.STREAM_ROWS (read at call time).
    """
    batch_rows = batch_rows or store.STREAM_ROWS
    ingest_dir, out_dir = Path(ingest_dir), Path(out_dir)
    check_analyzer(cfg.analyzer)  # a missing extra fails before the first pass, in one sentence
    tokenizer, tokens, subword, train_lengths, auto_choice = _learn_train(ingest_dir / "train.parquet", cfg, batch_rows)
    max_len = resolve_max_len(cfg, train_lengths)
    ingest_info = read_json(ingest_dir / "ingest.json")
    vocab = Vocabulary(
        tokens, lowercase=cfg.lowercase, max_len=max_len, padding=cfg.padding, truncating=cfg.truncating, tokenizer=tokenizer,
        strip_html=ingest_info.get("strip_html", True), subword=subword, analyzer=cfg.analyzer, analyzer_version=analyzer_version(cfg.analyzer),
    )
    try:
        return _write_encoding(vocab, cfg, ingest_dir, out_dir, ingest_info, train_lengths, auto_choice, batch_rows)
    except OSError as error:  # a disk that fills under a plain write (vocab.json, Parquet) says so in one sentence too
        _raise_if_disk_full(error, out_dir)
        raise


def _write_encoding(
    vocab: Vocabulary, cfg: EncodeConfig, ingest_dir: Path, out_dir: Path, ingest_info: dict[str, Any], train_lengths: np.ndarray,
    auto_choice: dict[str, Any], batch_rows: int,
) -> dict[str, Any]:
    tokenizer, max_len = vocab.tokenizer, vocab.max_len
    mean_length = float(train_lengths.mean()) if len(train_lengths) else 0.0
    # Every split at once first, so a disk too small fails before the long train split is written.
    check_free_space(out_dir, sum(split_bytes(parquet_rows(ingest_dir / f"{split}.parquet"), max_len, mean_length) for split in SPLITS))
    vocab.save(RunFiles.VOCABULARY.of_step(out_dir))
    write_json(RunFiles.LABELS.of_step(out_dir), ingest_info["labels"])

    truncated, counts, oov = {}, {}, {}
    for split in SPLITS:
        rows, too_long, unknown_share = _encode_split(vocab, ingest_dir / f"{split}.parquet", out_dir, split, batch_rows, mean_length)
        # As numpy's mean of a boolean array: nan for an empty split.
        truncated[split] = round(float(too_long / rows), 4) if rows else float("nan")
        counts[split] = rows
        oov[split] = round(unknown_share, 4)

    hist_counts, edges = np.histogram(train_lengths, bins=50)
    info = {
        "tokenizer": tokenizer,
        **({"tokenizer_auto": auto_choice} if auto_choice else {}),
        "analyzer": vocab.analyzer,
        "num_words": cfg.num_words,
        "vocab_size": vocab.size,
        "max_len": max_len,
        "max_len_rule": "fixed" if cfg.max_len != "auto" else f"p{cfg.max_len_percentile:g} of train lengths",
        "padding": cfg.padding,
        "truncating": cfg.truncating,
        "n": counts,
        "truncated_fraction": truncated,
        "train_length_stats": {
            "mean": round(float(train_lengths.mean()), 1),
            "median": float(np.median(train_lengths)),
            "p90": float(np.percentile(train_lengths, 90)),
            "max": int(train_lengths.max()),
        },
        "oov_token_share": oov["train"],  # before oov_share, the one figure: kept for older readers
        "oov_share": oov,
        "length_histogram": {"edges": edges.round(1).tolist(), "counts": hist_counts.tolist()},
    }
    write_json(RunFiles.ENCODING.of_step(out_dir), info)
    return {"max_len": max_len, "vocab_size": vocab.size, "n": counts}


def load_arrays(encode_dir: Path, split: str, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of a split, memory-mapped so training reads without a second copy."""
    mode = "r" if mmap else None
    return np.load(Path(encode_dir) / f"X_{split}.npy", mmap_mode=mode), np.load(Path(encode_dir) / f"y_{split}.npy")


@step_task("encode")
def encode_task(encode: EncodeConfig, *, ingest: StepOutput, slot: CacheSlot) -> StepOutput:
    return produce_step(slot, lambda out: encode_reviews(encode, ingest.path, out))
