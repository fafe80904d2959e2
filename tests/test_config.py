from pathlib import Path

import pytest

from tasks.config import ConfigError, load_config, preset_names


def test_defaults_then_preset_then_overrides_in_that_order(tmp_path: Path):
    config_file = tmp_path / "mine.yaml"
    config_file.write_text("train:\n  epochs: 7\n  batch_size: 32\n")
    config = load_config("demo", config_file, ["train.epochs=2", "model.cell=lstm", "encode.max_len=50"])
    assert config.preset == "demo"
    assert config.data.source == "synthetic"  # from the preset
    assert config.train.batch_size == 32  # from the file
    assert config.train.epochs == 2  # --set wins
    assert config.model.cell == "lstm"
    assert config.encode.max_len == 50


def test_one_c_for_the_bag_s_regression_is_a_list_of_one():
    assert load_config(overrides=["model.ngram_c=10"]).model.ngram_c == [10.0]  # as a user types it, and as YAML would
    assert load_config(overrides=["model.ngram_c=[1,3]"]).model.ngram_c == [1.0, 3.0]


def test_every_shipped_preset_loads():
    assert {"default", "demo"} <= set(preset_names())
    for name in preset_names():
        assert load_config(name).preset == name


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["train.epochs=abc"], ["train.epochs", "abc"]),
        (["encode.max_len=-5"], ["encode.max_len", "positive"]),
        (["model.colour=red"], ["Unknown configuration key", "model.colour"]),
        (["epochs=3"], ["section and a key"]),
        (["train.epochs"], ["section.key=value"]),
        (["model.cell=transformer"], ["model.cell"]),
        (["train.member_processes=0"], ["'train.member_processes'", "auto or a whole number"]),
        (["train.member_processes=many"], ["'train.member_processes'", "auto or a whole number", "'many'"]),
        (["train.refit=maybe"], ["'train.refit'", "'auto', True or False", "'maybe'"]),
    ],
)
def test_bad_overrides_get_one_sentence_naming_the_key(overrides, words):
    with pytest.raises(ConfigError) as caught:
        load_config(overrides=overrides)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="Unknown preset 'nope'.*default"):
        load_config("nope")


def test_yaml_with_a_wrong_type_names_the_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1, 2]\n")
    with pytest.raises(ConfigError, match="train.epochs.*bad.yaml"):
        load_config(config_file=bad)


def test_retry_settings_stay_out_of_the_ingest_cache_key():
    assert "retries" not in load_config().section("data")
    assert load_config(overrides=["data.retries=5"]).section("data") == load_config().section("data")
