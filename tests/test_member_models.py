"""model.window and train.member_models: members of one ensemble that read different parts of each review."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.config import ConfigError, ModelConfig, RunConfig, TrainConfig, load_config, member_model
from tasks.encode import OOV, Vocabulary
from tasks.models import TokenWindow, VocabularyCap, build_model, cudnn_eligible
from tasks.report import write_report
from tasks.store import read_json
from tasks.train import train_model
from tests.helpers import REPORT_CONFIG as CONFIG
from tests.helpers import make_upstream
from tests.helpers import toy_encoding

ROWS = np.array(
    [
        [1, 5, 6, 7, 8, 0, 0, 0],  # right-padded, longer than the window
        [0, 0, 1, 5, 6, 7, 8, 9],  # left-padded, longer than the window
        [0, 0, 0, 0, 0, 0, 1, 4],  # left-padded, shorter
        [1, 4, 0, 0, 0, 0, 0, 0],  # right-padded, shorter
        [0, 0, 0, 0, 0, 0, 0, 0],  # no text at all
        [1, 2, 3, 4, 5, 6, 7, 8],  # fills the row
    ],
    dtype="int32",
)


@pytest.mark.parametrize("at, expected", [
    ("end", [[6, 7, 8], [7, 8, 9], [1, 4, 0], [1, 4, 0], [0, 0, 0], [6, 7, 8]]),
    ("start", [[1, 5, 6], [1, 5, 6], [1, 4, 0], [1, 4, 0], [0, 0, 0], [1, 2, 3]]),
])
def test_a_window_is_the_last_or_first_tokens_of_each_text_right_padded_whatever_the_padding(at: str, expected: list):
    assert np.asarray(TokenWindow(3, at)(ROWS)).tolist() == expected


def test_a_window_model_has_the_same_weights_and_survives_a_keras_file(tmp_path: Path):
    import keras

    config = ModelConfig(cell="gru", units=4, embedding_dim=4, bidirectional=False, word_dropout=0.3, window=3, window_at="start")
    model = build_model(config, num_tokens=10, max_len=8, n_classes=2)
    whole = build_model(config.model_copy(update={"window": None}), num_tokens=10, max_len=8, n_classes=2)
    assert model.count_params() == whole.count_params(), "a window adds no weights"
    assert model.get_layer("window_start").output.shape == (None, 3)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    np.testing.assert_allclose(loaded.predict(ROWS, verbose=0), model.predict(ROWS, verbose=0), rtol=1e-6)
    # A window as long as the rows, or longer, reads whole rows, right-padded: the layout the cuDNN path needs.
    longer = build_model(config.model_copy(update={"window": 20, "window_at": "end"}), num_tokens=10, max_len=8, n_classes=2)
    assert longer.get_layer("window_end").output.shape == (None, 8)
    assert np.asarray(longer.get_layer("window_end")(ROWS[1:3])).tolist() == [[1, 5, 6, 7, 8, 9, 0, 0], [1, 4, 0, 0, 0, 0, 0, 0]]
    assert cudnn_eligible(config.model_copy(update={"window": 20}), padding="pre")


def test_a_vocabulary_cap_gives_the_rows_a_smaller_encode_gives():
    from collections import Counter

    from tasks.config import EncodeConfig
    from tasks.text import tokenize

    texts = ["the film was good, the acting good", "a bad film: bad acting, bad plot", "plot twists and a good end", "the end"]
    counts = Counter(token for text in texts for token in tokenize(text))
    small, large = (Vocabulary.from_counts(counts, EncodeConfig(num_words=n, max_len=10), max_len=10) for n in (7, 30))
    assert large.size > 7
    capped = np.asarray(VocabularyCap(7, oov=OOV)(large.encode(texts)[0]))
    np.testing.assert_array_equal(capped, small.encode(texts)[0])
    config = ModelConfig(cell="gru", units=4, embedding_dim=4, bidirectional=False, num_words=7)
    model = build_model(config, num_tokens=large.size, max_len=10, n_classes=2)
    assert model.get_layer("embedding").input_dim == 7, "the embedding holds only the words the model reads"
    assert model.get_layer("first_7_words").oov == OOV
    assert model.count_params() == build_model(config.model_copy(update={"num_words": None}), num_tokens=7, max_len=10, n_classes=2).count_params()


def test_member_models_are_taken_in_turn():
    model, train = ModelConfig(window=400), TrainConfig(members=5, member_models=[{"window_at": "end"}, {"window_at": "start", "units": 32}])
    chosen = [member_model(model, train, k) for k in range(5)]
    assert [m.window_at for m in chosen] == ["end", "start", "end", "start", "end"]
    assert [m.units for m in chosen] == [64, 32, 64, 32, 64]
    assert member_model(model, TrainConfig(), 0) == model, "without member_models every member is the model section"


def test_the_pool_hands_out_the_member_that_reads_the_most_first():
    """A member over whole reviews handed out last would fit alone, the other processes idle."""
    from tasks.member_pool import first_the_costliest

    model = ModelConfig(window=400, units=64, bidirectional=False)
    whole = {"window": None, "bidirectional": True, "units": 128, "pooling": "max"}
    train = TrainConfig(members=5, member_models=[{"window_at": "end"}, {"window_at": "start"}, {"units": 32}, {"window": 800}, whole])
    assert first_the_costliest(model, train) == [4, 3, 0, 1, 2]
    assert first_the_costliest(model, TrainConfig(members=3)) == [0, 1, 2], "alike members keep their order"


@pytest.mark.parametrize("entry, message", [
    ("[{window_side: start}]", "train.member_models entry 1: model.window_side is not a model key; fix that entry"),
    ("[{window_at: end}, {window_at: middle}]", "train.member_models entry 2: model.window_at is invalid (Input should be 'end' or 'start', got 'middle'); fix that entry"),
    ("[{task: next_token}]", "train.member_models entry 1 changes model.task, which every member shares: leave task out of it"),
    ("[{}]", "train.member_models entry 1 changes nothing: give it model keys, for example {window_at: start}"),
    ("[start]", "Configuration key 'train.member_models.0' in --set is invalid (Input should be a valid dictionary, got 'start'): fix the value."),
])
def test_a_wrong_member_models_entry_is_one_sentence_naming_it(entry: str, message: str):
    with pytest.raises(ConfigError) as caught:
        load_config("default", overrides=[f"train.member_models={entry}"])
    assert message in str(caught.value)
    assert str(caught.value).count("\n") == 0


@pytest.mark.parametrize("key, value", [("window", 10), ("num_words", 20)])
def test_next_token_reads_the_whole_text_with_the_whole_vocabulary(key: str, value: int):
    with pytest.raises(ValueError, match=f"model.{key} does not apply"):
        RunConfig(encode={"tokenizer": "char"}, model={"task": "next_token", "bidirectional": False, key: value})


@pytest.fixture(scope="module")
def two_readers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("readers")
    encoded = toy_encoding(tmp_path / "encode")
    out = tmp_path / "train"
    out.mkdir()
    model = ModelConfig(cell="gru", units=8, embedding_dim=8, bidirectional=False, window=6)
    train = TrainConfig(epochs=2, patience=2, batch_size=16, learning_rate=0.02, members=2, member_processes=1,  # in turn: quicker on a toy
                        member_models=[{"window_at": "end"}, {"window_at": "start"}])
    train_model(model, train, encoded, out)
    return out


@pytest.mark.slow
def test_each_member_reads_as_its_entry_says_and_train_json_records_it(two_readers: Path):
    import keras

    info = read_json(two_readers / "train.json")
    assert [run["model_changes"] for run in info["member_runs"]] == [{"window_at": "end"}, {"window_at": "start"}]
    layers = [[layer.name for layer in keras.models.load_model(two_readers / f"member_{k}.keras", compile=False).layers] for k in (1, 2)]
    assert "window_end" in layers[0] and "window_start" in layers[1]
    assert info["cudnn_eligible"] is True, "a window is right-padded, so the GRUs stay on the cuDNN path"
    assert "└ window_end" in info["model_summary"] and "└ window_start" in info["model_summary"]


@pytest.mark.slow
def test_members_with_custom_layers_are_averaged_by_a_process_that_never_built_one(two_readers: Path, tmp_path: Path):
    # As train_model does after train.member_processes fitted the members in other processes: this process has only loaded files.
    script = (
        "import sys; from pathlib import Path; from types import SimpleNamespace; from tasks.train import ensemble; "
        "members = [SimpleNamespace(checkpoint=Path(sys.argv[1]) / f'member_{k}.keras') for k in (1, 2)]; "
        "print(ensemble(members, 12, Path(sys.argv[2]) / 'model.keras').name)"
    )
    done = subprocess.run([sys.executable, "-c", script, str(two_readers), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "model.keras").is_file() and done.stdout.strip().endswith("_ensemble")


def test_the_report_shows_what_each_member_changes(tmp_path: Path):
    upstream = make_upstream(tmp_path, ["neg", "pos"])
    train_json = Path(upstream["train"].dir) / "train.json"
    train = json.loads(train_json.read_text())
    train |= {"members": 2, "epochs_run": 7, "best_epoch": None, "member_runs": [
        {"seed": 1337, "epochs_run": 3, "best_epoch": 2, "best_val_accuracy": 0.74, "validation_rows": 20, "model_changes": {"window_at": "end"}},
        {"seed": 1338, "epochs_run": 4, "best_epoch": 3, "best_val_accuracy": 0.76, "validation_rows": 20,
         "model_changes": {"window_at": "start", "units": 32}},
    ]}
    train_json.write_text(json.dumps(train))
    write_report(CONFIG, upstream, tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "| Member | Seed | Model changes | Best epoch |" in markdown
    assert "| 1 | 1,337 | window_at=end | 2 of 3 |" in markdown
    assert "| 2 | 1,338 | window_at=start, units=32 | 3 of 4 |" in markdown


def test_the_best_preset_s_members_and_their_parameters():
    """README's best row: 3 x 217,025 (3,000 words) + 665,025 (10,000) + 1,305,025 (20,000), each member beside a bag of
    20,000 words and 2,097,152 hashed 2-3-grams started from an NB-weighted logistic regression (5 x 2,117,152) = 13,206,885."""
    config = load_config("best")
    members = [member_model(config.model, config.train, k) for k in range(config.train.members)]
    built = [build_model(m, num_tokens=config.encode.num_words, max_len=config.encode.max_len, n_classes=2) for m in members]
    assert [m.count_params() for m in built] == [n + 2_117_152 for n in (217_025, 217_025, 665_025, 217_025, 1_305_025)]
    assert sum(m.count_params() for m in built) == 13_206_885
    assert {(m.ngrams, m.ngram_start, tuple(m.ngram_c)) for m in members} == {(3, "logistic", (1.0, 10.0, 100.0))}
    assert [(m.window, m.window_at, m.num_words, m.pooling) for m in members] == [
        (400, "end", 3000, "last"), (400, "start", 3000, "last"), (400, "end", 10000, "last"),
        (400, "end", 3000, "last"), (400, "end", 20000, "max"),
    ]
