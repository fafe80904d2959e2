"""source=synthetic: seeded review-like texts from tasks.synthetic, no input file.

Train comes from data.seed, test from data.seed + 1; the class names are IMDb's (neg, pos).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from tasks.config import DataConfig
from tasks.ingest.base import IMDB_LABELS, ROW_COLUMNS, Reading, Source
from tasks.store import fingerprint
from tasks.synthetic import synthetic_reviews
from tasks.text import clean_text

SYNTHETIC_CHUNK = 50_000  # reviews generated per seed; fixed, so the corpus never depends on the batch size


class SyntheticSource(Source):
    def locate(self, cfg: DataConfig, data_dir: Path) -> dict[str, Any]:
        """Nothing to find: the fingerprint is the generator's settings."""
        return {"source": "synthetic", "path": None, "fingerprint": fingerprint(["synthetic", cfg.synthetic_reviews, cfg.synthetic_positive_fraction, cfg.seed])}

    def read(self, cfg: DataConfig, located: dict[str, Any], batch_rows: int) -> Reading:
        return Reading(_synthetic_batches(cfg, batch_rows), classes=IMDB_LABELS)


SOURCE = SyntheticSource()


def _synthetic_batches(cfg: DataConfig, batch_rows: int) -> Iterator[pd.DataFrame]:
    """source=synthetic as batches of ROW_COLUMNS: train from data.seed, test from data.seed + 1, chunk by chunk."""
    for split, seed in (("train", cfg.seed), ("test", cfg.seed + 1)):
        for chunk, start in enumerate(range(0, cfg.synthetic_reviews, SYNTHETIC_CHUNK)):
            n = min(SYNTHETIC_CHUNK, cfg.synthetic_reviews - start)
            # The first chunk keeps the plain seed, so a corpus of one chunk is what it always was.
            frame = synthetic_reviews(n, cfg.synthetic_positive_fraction, seed=seed if chunk == 0 else [seed, chunk])
            frame = frame.assign(
                text=[clean_text(t, cfg.strip_html) for t in frame["text"]],
                label=[IMDB_LABELS[k] for k in frame["label"]],
                id=frame["id"] + start,
                split=split,
            )[ROW_COLUMNS]
            for first in range(0, n, batch_rows):
                yield frame.iloc[first : first + batch_rows]
