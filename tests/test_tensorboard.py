"""train.tensorboard: Keras' TensorBoard events in the train step's folder, one run per member."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.caching import step_key
from tasks.config import ConfigError, ModelConfig, TrainConfig
from tasks.store import StepOutput
from tasks.tensorboard_events import TENSORBOARD_DIR
from tasks.train import train_model
from tests.helpers import toy_encoding

MODEL = ModelConfig(cell="gru", units=4, embedding_dim=4, bidirectional=False)
SMALL = TrainConfig(epochs=2, patience=2, batch_size=16, learning_rate=0.02)


def epoch_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in a folder's event files, read back with TensorFlow alone: {tag: [(step, value), ...]}."""
    import tensorflow as tf

    found: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":  # not the model's graph (a text summary)
                    found.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return found


def trained(tmp_path: Path, train_cfg: TrainConfig, n_train: int = 48) -> Path:
    encoded = toy_encoding(tmp_path / "encode", n_train=n_train, n_val=16)
    out = tmp_path / "train"
    out.mkdir()
    train_model(MODEL, train_cfg, encoded, out)
    return out


def test_events_are_written_when_asked_with_each_epoch_s_figures(tmp_path: Path):
    out = trained(tmp_path, SMALL.model_copy(update={"tensorboard": True}))
    train, validation = epoch_scalars(out / TENSORBOARD_DIR / "train"), epoch_scalars(out / TENSORBOARD_DIR / "validation")
    assert [step for step, _ in train["epoch_loss"]] == [0, 1]
    assert [step for step, _ in validation["epoch_accuracy"]] == [0, 1]
    assert all(0 <= value <= 1 for _, value in validation["epoch_accuracy"])
    assert (out / "model.keras").is_file()  # the events sit beside the model, not instead of anything


def test_no_events_by_default(tmp_path: Path):
    assert TrainConfig().tensorboard is False
    out = trained(tmp_path, SMALL)
    assert not (out / TENSORBOARD_DIR).exists()
    assert not list(out.rglob("events.out.tfevents.*"))


@pytest.mark.slow
def test_each_member_process_writes_its_own_run(tmp_path: Path):
    config = SMALL.model_copy(update={"tensorboard": True, "members": 2, "member_processes": 2, "epochs": 1})
    out = trained(tmp_path, config, n_train=64)
    assert sorted(p.name for p in (out / TENSORBOARD_DIR).iterdir()) == ["member_1", "member_2"]
    for member in ("member_1", "member_2"):
        assert [step for step, _ in epoch_scalars(out / TENSORBOARD_DIR / member / "validation")["epoch_loss"]] == [0]


def test_the_setting_is_part_of_the_train_step_s_cache_key():
    upstream = {"encode": StepOutput(step="encode", key="k", dir="/nowhere", files={})}
    section = {"model": MODEL.model_dump(mode="json"), "train": SMALL.model_dump(mode="json")}
    with_events = {**section, "train": {**section["train"], "tensorboard": True}}
    assert step_key("train", section, upstream) != step_key("train", with_events, upstream)


def test_without_the_package_the_setting_is_one_sentence_saying_how_to_get_it(monkeypatch):
    import importlib.util

    import tasks.tensorboard_events as events

    real = importlib.util.find_spec
    monkeypatch.setattr(events.importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    events.check_tensorboard(SMALL)  # off: nothing needed
    with pytest.raises(ConfigError, match=r"^train.tensorboard needs the tensorboard package, which is not installed: run `uv sync --extra tensorboard`"):
        events.tensorboard_callbacks(SMALL.model_copy(update={"tensorboard": True}), 0, Path("unused"))
