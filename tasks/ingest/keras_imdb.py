"""source=keras_imdb: Keras' imdb.npz (integer-encoded reviews), decoded back to text.

The file's own train and test arrays are the splits. data.path left at the aclImdb default means
data/imdb.npz, downloaded there once (sha256-checked) when missing.
"""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from tasks.config import DataConfig
from tasks.ingest.base import IMDB_LABELS, ROW_COLUMNS, DownloadError, IngestError, Reading, Source, existing_file, short
from tasks.store import fingerprint, sha256_file

# Keras' copy of the integer-encoded reviews, and its sha256 as keras.datasets.imdb.load_data checks it.
KERAS_IMDB_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz"
KERAS_IMDB_SHA256 = "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f"
KERAS_IMDB_DEFAULT_PATH = "data/imdb.npz"


class KerasImdbSource(Source):
    strips_html = False  # the texts are words joined by spaces: there was never any HTML to strip

    def input_path(self, cfg: DataConfig) -> str:
        """data.path, except that data.path left at the aclImdb default means data/imdb.npz."""
        if Path(cfg.path) == Path(DataConfig().path):
            return KERAS_IMDB_DEFAULT_PATH
        return cfg.path

    def locate(self, cfg: DataConfig, data_dir: Path) -> dict[str, Any]:
        """The imdb.npz (downloaded when it is the missing default) and the optional word index, hashed."""
        path = self.input_path(cfg)
        local = Path(path).expanduser()
        if not local.exists() and Path(path) == Path(KERAS_IMDB_DEFAULT_PATH):
            download_keras_imdb(local)
        local = existing_file(path, "data.path", "Keras' imdb.npz")
        word_index = existing_file(cfg.word_index_path, "data.word_index_path", "Keras' imdb_word_index.json") if cfg.word_index_path else None
        digest = fingerprint([sha256_file(local), sha256_file(word_index) if word_index else None])
        return {"source": "keras_imdb", "path": str(local), "word_index_path": str(word_index) if word_index else None, "fingerprint": digest}

    def read(self, cfg: DataConfig, located: dict[str, Any], batch_rows: int) -> Reading:
        """The file is read whole (numpy cannot stream it), then handed on in batches."""
        frames, classes = read_keras_imdb(Path(located["path"]), located.get("word_index_path"))
        return Reading(_frame_batches(frames, classes, batch_rows), classes=classes)


SOURCE = KerasImdbSource()


# --------------------------------------------------------------------------- downloading


def download_keras_imdb(target: Path, url: str | None = None, timeout: float = 60) -> Path:
    """Fetch Keras' imdb.npz into target through keras.utils.get_file, which checks its sha256."""
    import socket

    import keras

    target = Path(target).expanduser().resolve()
    url = url or KERAS_IMDB_URL
    target.parent.mkdir(parents=True, exist_ok=True)
    # get_file's urlretrieve has no timeout of its own: on a network that drops packets it would wait forever.
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        # get_file takes a bare file name plus a folder; it removes a partial file when the fetch fails.
        fetched = keras.utils.get_file(
            fname=target.name, origin=url, file_hash=KERAS_IMDB_SHA256, cache_dir=str(target.parent), cache_subdir=""
        )
    except Exception as err:  # get_file wraps every network failure in a bare Exception
        # "URL fetch failure on <url>: <code> -- <reason>": the url is in our sentence already.
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].rsplit(" -- ", 1)[-1]
        raise DownloadError(
            f"Could not download {url} ({reason}): this machine may have no network; "
            f"fetch imdb.npz elsewhere and pass it with --set data.path=/path/to/imdb.npz."
        ) from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
    if Path(fetched).resolve() != target:  # get_file falls back to /tmp when the folder is not writable
        shutil.copyfile(fetched, target)
    return target


# --------------------------------------------------------------------------- reading Keras' imdb.npz

# imdb.npz stores ragged sequences as numpy object arrays, which numpy can only save as a pickle
# stream: np.load refuses them unless allow_pickle=True, and a pickle can run any code it names.
# So object arrays are rebuilt with an unpickler that allows numpy's array-building functions
# and nothing else (the approach Keras' own load_data takes); numeric arrays load with pickling off.
# Still, read only imdb.npz files you trust (the README says so).
_NUMPY_PICKLE_GLOBALS = frozenset(
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
) | {("numpy", "ndarray"), ("numpy", "dtype")}
KERAS_IMDB_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks to run {module}.{name}, which an array never needs")


def _read_npy(raw: bytes) -> np.ndarray:
    import io

    handle = io.BytesIO(raw)
    try:
        return np.lib.format.read_array(handle, allow_pickle=False)
    except ValueError:  # an object array: read past the header, then unpickle numpy types only
        handle.seek(0)
        version = np.lib.format.read_magic(handle)
        # Format 3.0 differs from 2.0 only in the header's text encoding, so 2.0's reader skips both.
        (np.lib.format.read_array_header_1_0 if version[0] == 1 else np.lib.format.read_array_header_2_0)(handle)
        return _NumpyOnlyUnpickler(handle).load()


def _word_index(path: Path) -> dict[int, str]:
    """id -> word from Keras' imdb_word_index.json ({word: id})."""
    try:
        index = json.loads(Path(path).read_text(encoding="utf-8"))
        return {int(i): str(word) for word, i in index.items()}
    except (ValueError, AttributeError, TypeError) as err:
        raise IngestError(f"{path} is not a word index ({short(err)}): pass Keras' imdb_word_index.json, a JSON object of word to id.") from None


def read_keras_imdb(path: Path, word_index_path: str | Path | None = None) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Keras' imdb.npz as {train, test} frames of text, and the class names.

    The file holds word ids as imdb_word_index.json numbers them (1 = "the"), without the start id
    and the index_from=3 shift that keras.datasets.imdb.load_data adds when loading. Downstream
    steps need text, so each id becomes its word from the word index, or the token "w<id>" without
    one (or for an id the index lacks); encode then builds its own vocabulary with the same
    reserved ids (0 pad, 1 start, 2 out of vocabulary) and encode.num_words.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            present = [name[: -len(".npy")] for name in archive.namelist() if name.endswith(".npy")]
            missing = [name for name in KERAS_IMDB_ARRAYS if name not in present]
            if missing:
                raise IngestError(
                    f"{path} has no array {missing[0]!r} (its arrays: {', '.join(present) or 'none'}): pass Keras' imdb.npz, which holds x_train, y_train, x_test and y_test."
                )
            arrays = {name: _read_npy(archive.read(f"{name}.npy")) for name in KERAS_IMDB_ARRAYS}
    except IngestError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, pickle.UnpicklingError, AttributeError, TypeError) as err:
        raise IngestError(f"{path} could not be read as Keras' imdb.npz ({short(err)}): download it again, or pass a file saved with numpy.savez.") from None
    words = _word_index(Path(word_index_path)) if word_index_path else {}

    all_labels = np.concatenate([np.asarray(arrays["y_train"]).reshape(-1), np.asarray(arrays["y_test"]).reshape(-1)])
    if all_labels.dtype.kind not in "iub" and not (all_labels.dtype.kind == "f" and np.all(all_labels % 1 == 0)):
        raise IngestError(f"{path} holds labels of type {all_labels.dtype} in y_train/y_test: they must be whole numbers (0 and 1 for IMDb).")
    values = sorted(int(v) for v in np.unique(all_labels))
    classes = IMDB_LABELS if set(values) <= {0, 1} else [str(v) for v in values]
    codes = {v: (v if classes is IMDB_LABELS else i) for i, v in enumerate(values)}

    frames = {}
    for split in ("train", "test"):
        sequences, y = arrays[f"x_{split}"], np.asarray(arrays[f"y_{split}"]).reshape(-1)
        if len(sequences) != len(y):
            raise IngestError(f"{path} holds {len(sequences)} x_{split} sequences but {len(y)} y_{split} labels: pass an unmodified imdb.npz.")
        texts = []
        for row, sequence in enumerate(sequences):
            try:
                texts.append(" ".join(words.get(i) or f"w{int(i)}" for i in sequence))
            except (TypeError, ValueError):
                raise IngestError(f"x_{split}[{row}] of {path} is not a list of word ids: pass Keras' imdb.npz (object arrays of integer lists).") from None
        frames[split] = pd.DataFrame(
            {
                "text": texts,
                "label": np.array([codes[int(v)] for v in y], dtype=np.int64),
                "rating": pd.array([None] * len(y), dtype="Int64"),
                "id": np.arange(len(y), dtype=np.int64),  # the position in x_train / x_test
            }
        )
    return frames, classes


def _frame_batches(frames: dict[str, pd.DataFrame], classes: list[str], batch_rows: int) -> Iterator[pd.DataFrame]:
    """Frames already in memory (Keras' imdb.npz is read whole) as batches of ROW_COLUMNS."""
    for split, frame in frames.items():
        for start in range(0, len(frame), batch_rows):
            part = frame.iloc[start : start + batch_rows]
            yield part.assign(label=[classes[k] for k in part["label"]], split=split)[ROW_COLUMNS]
