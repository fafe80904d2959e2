"""bench/gpu.py, the GPU check of issue 31, on a machine without a GPU: it says so and runs the CPU fallback."""

from __future__ import annotations

import pytest

from tasks.config import ModelConfig
from tests.helpers import TINY


def test_on_a_cpu_the_train_step_has_the_loop_and_no_cudnn_kernel():
    from bench.gpu import recurrent_op_types

    types = recurrent_op_types(ModelConfig(cell="gru", units=4, embedding_dim=4))
    assert "While" in types or "StatelessWhile" in types
    assert not any(t.startswith("CudnnRNN") for t in types)


@pytest.mark.slow
def test_gpu_script_runs_the_cpu_fallback(prefect_api, tmp_path, capsys, monkeypatch):
    from prefect.settings import PREFECT_API_URL

    from bench.gpu import main

    # The script's `rnnflow run` processes report to the session's Prefect API rather than each starting a temporary server.
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())

    overrides = [item for entry in TINY for item in ("--set", entry)]
    assert main(["--presets", "demo", "--artifacts", str(tmp_path / "art"), *overrides]) == 0
    out = capsys.readouterr().out
    assert "no GPU visible to TensorFlow: CPU fallback" in out
    assert "preset demo ok True" in out and "fused_input True" in out and "test_accuracy" in out
