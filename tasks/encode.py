"""Encode: a vocabulary from the train split, token ids padded to max_len, as .npy and Parquet."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task

from tasks.caching import StepCachePolicy, produce_step
from tasks.config import EncodeConfig
from tasks.ingest import SPLITS, load_split
from tasks.store import StepOutput, atomic_path, read_json, write_json
from tasks.text import clean_text, tokenize

# Keras' IMDb conventions: 0 pads, 1 starts a review, 2 stands for a word out of the vocabulary.
PAD, START, OOV = 0, 1, 2
INDEX_FROM = 3


class Vocabulary:
    """Token -> id for the tokens kept from training; the one encoder for training and prediction alike.

    Tokens are words or single characters (encode.tokenizer); either way ids 0, 1 and 2 are
    reserved (padding, start, out of vocabulary) and kept tokens count up from 3 by frequency.
    """

    def __init__(
        self, tokens: Sequence[str], *, lowercase: bool = True, max_len: int, padding: str, truncating: str, tokenizer: str = "word",
        strip_html: bool = True,
    ):
        self.tokens = list(tokens)
        self.strip_html = strip_html  # the cleaning ingest gave the training texts, repeated for raw input
        self.ids = {token: i + INDEX_FROM for i, token in enumerate(self.tokens)}
        self.tokenizer = tokenizer
        self.lowercase = lowercase
        self.max_len = max_len
        self.padding = padding
        self.truncating = truncating

    @classmethod
    def build(cls, texts: Iterable[str], cfg: EncodeConfig, max_len: int) -> "Vocabulary":
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(tokenize(text, cfg.lowercase, cfg.tokenizer))
        # Ties broken alphabetically so the same corpus always gives the same ids.
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        kept = [token for token, _ in ranked[: cfg.num_words - INDEX_FROM]]
        return cls(kept, lowercase=cfg.lowercase, max_len=max_len, padding=cfg.padding, truncating=cfg.truncating, tokenizer=cfg.tokenizer)

    @classmethod
    def load(cls, path: Path) -> "Vocabulary":
        data = read_json(path)
        return cls(
            data["tokens"], lowercase=data["lowercase"], max_len=data["max_len"], padding=data["padding"], truncating=data["truncating"],
            tokenizer=data.get("tokenizer", "word"),  # vocab.json files from before the char tokenizer are word-level
            strip_html=data.get("strip_html", True),  # and from before the setting, ingest always stripped HTML
        )

    def save(self, path: Path) -> None:
        write_json(
            path,
            {
                "tokenizer": self.tokenizer,
                "strip_html": self.strip_html,
                "pad": PAD, "start": START, "oov": OOV, "index_from": INDEX_FROM,
                "lowercase": self.lowercase, "max_len": self.max_len,
                "padding": self.padding, "truncating": self.truncating,
                "tokens": self.tokens,
            },
        )

    @property
    def size(self) -> int:
        return len(self.tokens) + INDEX_FROM

    def to_ids(self, text: str) -> list[int]:
        get = self.ids.get
        return [START] + [get(token, OOV) for token in tokenize(text, self.lowercase, self.tokenizer)]

    def encode_raw(self, texts: Iterable[str]) -> tuple[np.ndarray, list[list[int]]]:
        """encode() for texts as they arrive from outside: first the cleaning ingest applied in training."""
        return self.encode(clean_text(text, self.strip_html) for text in texts)

    def encode(self, texts: Iterable[str]) -> tuple[np.ndarray, list[list[int]]]:
        """(padded int32 matrix, unpadded id lists) for texts already cleaned as ingest cleans them."""
        import keras

        sequences = [self.to_ids(text) for text in texts]
        padded = keras.utils.pad_sequences(
            sequences, maxlen=self.max_len, dtype="int32", padding=self.padding, truncating=self.truncating, value=PAD
        )
        return padded, sequences


def resolve_max_len(cfg: EncodeConfig, lengths: np.ndarray) -> int:
    """A fixed max_len, or 'auto': the chosen percentile of train lengths (the seeds read 100 off a histogram)."""
    if cfg.max_len != "auto":
        return int(cfg.max_len)
    return max(1, int(np.ceil(np.percentile(lengths, cfg.max_len_percentile))))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)


def _save_tokens(path: Path, ids: np.ndarray, labels: np.ndarray, sequences: list[list[int]]) -> None:
    table = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "label": pa.array(labels, pa.int64()),
            "length": pa.array([len(s) for s in sequences], pa.int32()),
            "token_ids": pa.array(sequences, pa.list_(pa.int32())),
        }
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def encode_reviews(cfg: EncodeConfig, ingest_dir: Path, out_dir: Path) -> dict[str, Any]:
    frames = {split: load_split(ingest_dir, split) for split in SPLITS}
    train_texts = frames["train"]["text"].tolist()
    provisional = Vocabulary.build(train_texts, cfg, max_len=1)
    train_lengths = np.fromiter((len(provisional.to_ids(t)) for t in train_texts), dtype=np.int64)
    max_len = resolve_max_len(cfg, train_lengths)
    ingest_info = read_json(Path(ingest_dir) / "ingest.json")
    vocab = Vocabulary(
        provisional.tokens, lowercase=cfg.lowercase, max_len=max_len, padding=cfg.padding, truncating=cfg.truncating,
        tokenizer=cfg.tokenizer, strip_html=ingest_info.get("strip_html", True),
    )
    vocab.save(out_dir / "vocab.json")
    write_json(out_dir / "labels.json", ingest_info["labels"])

    truncated, counts = {}, {}
    for split, frame in frames.items():
        padded, sequences = vocab.encode(frame["text"].tolist())
        labels = frame["label"].to_numpy(dtype=np.int32)
        _save_npy(out_dir / f"X_{split}.npy", padded)
        _save_npy(out_dir / f"y_{split}.npy", labels)
        _save_tokens(out_dir / f"tokens_{split}.parquet", frame["id"].to_numpy(), labels, sequences)
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64)
        truncated[split] = round(float((lengths > max_len).mean()), 4)
        counts[split] = len(frame)

    hist_counts, edges = np.histogram(train_lengths, bins=50)
    oov_share = float(np.mean([tid == OOV for tid in provisional.to_ids(" ".join(train_texts[:2000]))]))
    info = {
        "tokenizer": cfg.tokenizer,
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
        "oov_token_share": round(oov_share, 4),
        "length_histogram": {"edges": edges.round(1).tolist(), "counts": hist_counts.tolist()},
    }
    write_json(out_dir / "encode.json", info)
    return {"max_len": max_len, "vocab_size": vocab.size, "n": counts}


def load_arrays(encode_dir: Path, split: str, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of a split, memory-mapped so training reads without a second copy."""
    mode = "r" if mmap else None
    return np.load(Path(encode_dir) / f"X_{split}.npy", mmap_mode=mode), np.load(Path(encode_dir) / f"y_{split}.npy")


@task(name="encode", cache_policy=StepCachePolicy(step="encode"))
def encode_task(root: str, section: dict, upstream: dict) -> StepOutput:
    return produce_step(root, "encode", section, upstream, lambda out: encode_reviews(EncodeConfig(**section), upstream["ingest"].path, out))
