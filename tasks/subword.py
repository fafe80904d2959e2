"""The subword tokenizer: a SentencePiece model learnt from the train split, the one encoder of training, predict and export.

Why SentencePiece (over Hugging Face `tokenizers`, also well kept and faster to train): the
string-in export has to run the very same tokenizer inside TensorFlow, and tensorflow-text ships
SentencePiece's own C++ code as a graph op (tensorflow_text.SentencepieceTokenizer) that loads the
same model bytes, normalisation rules included; `tokenizers` has no TensorFlow op. It also needs
no pre-tokenisation, so it works for scripts without spaces and for agglutinative languages
(Korean particles: 영화가, 영화는 share the piece 영화).

BPE rather than SentencePiece's default unigram model: a unigram model splits "..." or "ㅋㅋㅋ"
into pieces of equal score either way, and the SentencePiece inside tensorflow-text breaks those
ties otherwise than the one on PyPI (29 of 5,000 Korean test reviews got other ids); BPE's merges
leave no such ties (5,000 of 5,000 the same), and it trains in 0.3 s on 20,000 short reviews
(unigram: 2.2 s).

The model is trained with rnnflow's reserved ids (0 pad, 1 start, 2 unknown), so a piece's id is
its SentencePiece id: no mapping table between the two. Normalisation is SentencePiece's own
(NFKC, with case folding when encode.lowercase), stored inside the model.
"""

from __future__ import annotations

import io
import re
from functools import cached_property
from typing import Iterable, Sequence

import numpy as np

from tasks.store import RunFiles

MODEL_FILE = RunFiles.SUBWORD_MODEL.name
MODEL_TYPE = "bpe"
# The share of the train split's characters the pieces must cover; rarer characters become
# unknown pieces (SentencePiece's default for languages with large alphabets).
CHARACTER_COVERAGE = 0.9995
# Texts longer than this many bytes are skipped in training (SentencePiece's default is 4,192).
MAX_TRAINING_TEXT_BYTES = 1 << 16
# Training reads at most this many texts, a seeded sample of a larger split.
MAX_TRAINING_TEXTS = 500_000


def train_subword_model(texts: Iterable[str], num_words: int, lowercase: bool, seed: int = 1337) -> bytes:
    """A BPE model of at most num_words pieces (the three reserved ids included), as bytes."""
    import sentencepiece as spm

    spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    try:
        _train(spm, texts, model, num_words, lowercase)
    except RuntimeError as error:
        needed = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", str(error))
        if not needed:
            raise
        raise ValueError(
            f"encode.num_words {num_words} is too small for a subword model of this train split, whose alphabet needs "
            f"{int(needed.group(2)) - 3} pieces of its own besides the 3 reserved ids: raise encode.num_words above {needed.group(2)}."
        ) from None
    return model.getvalue()


def _train(spm, texts: Iterable[str], model: io.BytesIO, num_words: int, lowercase: bool) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=num_words,
        hard_vocab_limit=False,  # a small corpus gets the pieces it has, not an error
        model_type=MODEL_TYPE,
        pad_id=0, bos_id=1, unk_id=2, eos_id=-1,
        normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
        character_coverage=CHARACTER_COVERAGE,
        max_sentence_length=MAX_TRAINING_TEXT_BYTES,
        input_sentence_size=MAX_TRAINING_TEXTS,
        shuffle_input_sentence=True,
        num_threads=2,
        minloglevel=2,
    )


class SubwordModel:
    """A trained model's pieces and ids, for whole batches of texts."""

    def __init__(self, model: bytes):
        self.model = bytes(model)

    @cached_property
    def processor(self):
        import sentencepiece as spm

        return spm.SentencePieceProcessor(model_proto=self.model)

    @property
    def pieces(self) -> list[str]:
        """Every piece after the reserved ids, in id order (piece i has id i + 3)."""
        return [self.processor.id_to_piece(i) for i in range(3, self.processor.get_piece_size())]

    def ids_many(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(every text's piece ids end to end as int32, offsets): text i's at offsets[i]:offsets[i+1]."""
        lists = self.processor.encode(list(texts)) if len(texts) else []
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum([len(ids) for ids in lists], out=offsets[1:])
        values = np.fromiter((i for ids in lists for i in ids), dtype=np.int32, count=int(offsets[-1]))
        return values, offsets
