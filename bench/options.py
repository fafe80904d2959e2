"""The benchmark options every suite reads, and what --quick shrinks them to."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SUITE_NAMES = ("overhead", "reruns", "steps", "train", "memory", "growth", "object_store")
DEFAULT_PRESET = "seed-simple-rnn"
DEFAULT_TRAIN_PRESETS = ("seed-simple-rnn", "seed-embedding", "seed-lstm", "default")
DEFAULT_TRAIN_REVIEWS = 5000
DEFAULT_SIZES = (25_000, 100_000, 400_000, 1_000_000)
DEFAULT_REPEATS = 3
MEMORY_PRESET = "seed-onehot"
QUICK_DIVISOR = 10
IMDB_REVIEWS_PER_SPLIT = 25_000  # what --quick divides when --max-reviews is not given


@dataclass
class BenchOptions:
    archive: Path
    repeats: int = DEFAULT_REPEATS
    quick: bool = False
    max_reviews: int | None = None  # data.max_reviews (per split) for every suite that reads the archive
    epochs: int | None = None  # train.epochs for every pipeline run and the plain script; None keeps the preset's
    preset: str = DEFAULT_PRESET
    train_presets: tuple[str, ...] = DEFAULT_TRAIN_PRESETS
    train_reviews: int = DEFAULT_TRAIN_REVIEWS
    sizes: tuple[int, ...] = DEFAULT_SIZES
    out_dir: Path = Path("artifacts/bench")
    keep_work: bool = False
    bench_command: str = ""
    suites: tuple[str, ...] = field(default=SUITE_NAMES)

    @property
    def work_dir(self) -> Path:
        """Scratch space (artifact roots, corpora, step outputs); removed after each suite unless --keep-work."""
        return self.out_dir / "work"

    @property
    def log_dir(self) -> Path:
        """Each child process's stdout and stderr, kept for reading when a figure looks odd."""
        return self.out_dir / "logs"

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(archive=str(self.archive), out_dir=str(self.out_dir), mode=self.mode)
        data.pop("bench_command")
        return data


def shrink_for_quick(
    *, repeats: int | None, max_reviews: int | None, epochs: int | None, train_reviews: int | None, sizes: tuple[int, ...] | None
) -> dict[str, Any]:
    """--quick: sizes / 10, one repeat, one epoch; any option given explicitly wins."""
    return {
        "repeats": repeats if repeats is not None else 1,
        "max_reviews": max_reviews if max_reviews is not None else IMDB_REVIEWS_PER_SPLIT // QUICK_DIVISOR,
        "epochs": epochs if epochs is not None else 1,
        "train_reviews": train_reviews if train_reviews is not None else DEFAULT_TRAIN_REVIEWS // QUICK_DIVISOR,
        "sizes": sizes if sizes is not None else tuple(n // QUICK_DIVISOR for n in DEFAULT_SIZES),
    }
