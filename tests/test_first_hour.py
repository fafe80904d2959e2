"""A new user's first hour (issue 34, item 5): input errors in a second, before Prefect or TensorFlow start, each
printed once and leaving no run folder; "did you mean" for keys, presets, columns and steps; TensorFlow's C++
start-up lines silenced; a progress line within an epoch on a terminal only."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import main
from tasks import progress, quiet_tensorflow
from tasks.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def _run(capsys, tmp_path: Path, *args: str) -> tuple[int, list[str], str]:
    """rnnflow run ARGS on a fresh root: exit code, stderr's lines, stdout."""
    code = main(["run", *args, "--artifacts", str(tmp_path / "artifacts")])
    printed = capsys.readouterr()
    return code, printed.err.splitlines(), printed.out


def _table(path: Path, header: str = "review,label") -> Path:
    path.write_text(f'{header}\n"a fine film",pos\n"a dull film",neg\n', encoding="utf-8")
    return path


def test_a_missing_table_is_one_sentence_exit_2_and_no_run_folder(tmp_path, capsys):
    missing = tmp_path / "no-such.csv"
    code, err, out = _run(capsys, tmp_path, "--set", "data.source=table", "--set", f"data.path={missing}")
    assert code == 2
    assert err == [f"rnnflow: error: Input {missing} does not exist: pass a .csv, .tsv, .parquet or .jsonl table with --set data.path=PATH."]
    assert out == ""
    assert not (tmp_path / "artifacts" / "runs").exists() or not any((tmp_path / "artifacts" / "runs").iterdir())


def test_a_table_without_the_text_column_is_refused_with_the_likely_column(tmp_path, capsys):
    table = _table(tmp_path / "reviews.csv", "txt,label")
    code, err, _ = _run(capsys, tmp_path, "--set", "data.source=table", "--set", f"data.path={table}")
    assert code == 2
    assert err == [
        f"rnnflow: error: {table} has no column 'text' for data.text_column (its columns: 'txt', 'label'): "
        "is it 'txt'? Then --set data.text_column=txt."
    ]
    code, err, _ = _run(capsys, tmp_path, "--set", "data.source=table", "--set", f"data.path={table}", "--set", "data.text_column=txt",
                        "--set", "data.label_column=sentiment")
    assert err == [f"rnnflow: error: {table} has no column 'sentiment' for data.label_column (its columns: 'txt', 'label'): "
                   "name the right one with --set data.label_column=NAME."]


def test_the_other_inputs_a_run_names_are_checked_first(tmp_path, capsys):
    table = _table(tmp_path / "reviews.csv", "text,label")
    cases = {
        ("data.source=table",): "source=table reads the file named by data.path, which is still the IMDb archive default",
        ("data.source=table", f"data.path={table}", f"data.test_path={tmp_path / 'test.csv'}"): f"Input {tmp_path / 'test.csv'} does not exist: pass the test table with --set data.test_path=PATH.",
        ("data.source=table", f"data.path={tmp_path / 'reviews.xlsx'}"): "does not exist",
        (f"data.path={tmp_path / 'aclImdb.tar.gz'}",): "pass the IMDb archive or its unpacked folder with --set data.path=PATH.",
        ("data.source=keras_imdb", f"data.path={tmp_path / 'imdb.npz'}"): "pass Keras' imdb.npz with --set data.path=PATH.",
    }
    for items, expected in cases.items():
        code, err, _ = _run(capsys, tmp_path, *[arg for item in items for arg in ("--set", item)])
        assert code == 2 and len(err) == 1 and expected in err[0], (items, err)
    (tmp_path / "reviews.xlsx").write_bytes(b"PK")
    code, err, _ = _run(capsys, tmp_path, "--set", "data.source=table", "--set", f"data.path={tmp_path / 'reviews.xlsx'}")
    assert code == 2 and "has the extension '.xlsx', which source=table cannot read" in err[0]


def test_mistyped_keys_presets_and_steps_get_did_you_mean(tmp_path, capsys):
    expected = {
        ("--set", "data.pathh=x"): "Unknown configuration key 'data.pathh' in --set (did you mean 'data.path'?): check its spelling",
        ("--set", "trian.epochs=3"): "Unknown configuration key 'trian' in --set (did you mean 'train'?)",
        ("--set", "validate.min_token=2"): "(did you mean 'validate.min_tokens'?)",
        ("--preset", "demoo"): "Unknown preset 'demoo' (did you mean 'demo'?): choose one of",
        ("--refresh", "trian"): "--refresh 'trian' is not a step (did you mean 'train'?)",
    }
    for args, sentence in expected.items():
        code, err, _ = _run(capsys, tmp_path, *args)
        assert code == 2 and len(err) == 1 and sentence in err[0], (args, err)
    with pytest.raises(ConfigError) as caught:
        load_config("default", overrides=["model.zzz=1"])
    assert "did you mean" not in str(caught.value), "no suggestion when nothing is close"


@pytest.mark.slow
def test_an_input_error_comes_before_prefect_and_tensorflow_load(tmp_path):
    code = (
        "import sys; from flows.cli import main; "
        f"code = main(['run', '--set', 'data.source=table', '--set', 'data.path={tmp_path / 'absent.csv'}', '--artifacts', '{tmp_path / 'a'}']); "
        "print(code, *sorted(m for m in ('prefect', 'tensorflow', 'keras', 'pandas') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2"], done.stdout + done.stderr[-2000:]


@pytest.mark.slow
def test_tensorflows_start_up_lines_are_silenced_and_other_output_kept(tmp_path):
    """A stand-in `tensorflow` package that writes what TensorFlow's C++ start-up writes to file descriptor 2."""
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os\n"
        "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n')\n"
        "os.write(2, b'I0000 00:00:1796520835.623194   28129 port.cc:153] oneDNN custom operations are on.\\n')\n"
        "os.write(2, b'E0000 00:00:1796520858.736285   28129 cuda_platform.cc:52] failed call to cuInit\\n')\n"
        "os.write(2, b'a line of its own\\n')\n"
    )
    code = "import importlib.util, tasks; importlib.util.find_spec('tensorflow'); import tensorflow; print(type(tensorflow.__loader__).__name__)"
    for level, expected in (("3", "a line of its own\n"), ("2", "E0000 00:00:1796520858.736285   28129 cuda_platform.cc:52] failed call to cuInit\na line of its own\n")):
        env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "TF_CPP_MIN_LOG_LEVEL": level}
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert done.stderr == expected, done.stderr
        assert done.stdout.strip() == "SourceFileLoader", "the module keeps its own loader"
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", "import tasks, os; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"], cwd=ROOT,
                          env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == quiet_tensorflow.DEFAULT_LEVEL


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_line_rewrites_itself_on_a_terminal_and_is_wiped_at_the_epoch_end():
    now = [0.0]
    stream = _Terminal()
    line = progress.ProgressLine(stream, batch_size=32, clock=lambda: now[0])
    line.begin()
    line.begin_epoch(0, 3)
    for batch in range(10):
        now[0] += 0.1
        line.batch(batch, steps=10, loss=0.6931)
    line.end_epoch()
    line.finish()
    shown = stream.getvalue()
    assert shown.count("\r") == 3, "two updates in one second, then the wipe"
    assert "\repoch 1/3  160/320 samples  320 samples/s  loss 0.6931" in shown
    assert shown.endswith("\r" + " " * len("epoch 1/3  320/320 samples  320 samples/s  loss 0.6931") + "\r")
    assert not progress._claim.locked()


def test_no_progress_line_off_a_terminal():
    assert progress.batch_progress(64, stream=io.StringIO()) == []
    assert progress.line(1_280, None, 2.0, None) == "1,280 samples  640 samples/s"
