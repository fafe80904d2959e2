# The commands a new user runs: `make demo`, `make run` and `make test`. Each sets everything up first.
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
ARGS ?=
PYTEST_ARGS ?=
TEST_WORKERS ?= 2  # pytest-xdist processes for `make test` (TEST_WORKERS=0: one process)

.PHONY: setup run demo test test-quick bench bench-quick ui deploy clean

# uv itself lives in its own small venv, so `uv sync` can manage .venv exactly.
$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Two stamps: .synced-run for what rnnflow needs to run (no dev group: moto, pytest and their ~100 MB), .synced
# for that plus the dev group (tests, benchmarks). --inexact: a `make run` after `make test` keeps the dev tools.
# --compile-bytecode: the .pyc files written once here, not compiled again by every process that imports TensorFlow
# (where PYTHONDONTWRITEBYTECODE is set, Python never keeps them: `import tensorflow` took 12 CPU-s, 4.4 with them).
$(VENV)/.synced-run: $(UV) pyproject.toml uv.lock Makefile
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --no-dev --inexact --compile-bytecode
	@touch $@

$(VENV)/.synced: $(UV) pyproject.toml uv.lock Makefile
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --compile-bytecode
	@touch $@ $(VENV)/.synced-run

setup: $(VENV)/.synced  ## build .venv (with .venv/bin/rnnflow) from the lockfile, dev tools included

run: $(VENV)/.synced-run  ## the main job: the default preset on the IMDb archive (make run ARGS='--set ...')
	$(VENV)/bin/rnnflow run $(ARGS)

demo: $(VENV)/.synced-run  ## the whole flow offline on the synthetic corpus: the quick first step
	$(VENV)/bin/rnnflow run --preset demo $(ARGS)

test: setup  ## the test suite, offline: every test, on TEST_WORKERS processes (tests of one module share a process)
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

test-quick: setup  ## the quick loop: every test not marked slow (no training, no flow runs, no rnnflow processes)
	$(VENV)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: setup  ## benchmarks, not tests: artifacts/bench/*.json, then BENCHMARKS.md (make bench ARGS='--archive PATH')
	$(VENV)/bin/python -m bench $(ARGS); status=$$?; $(VENV)/bin/python bench/summarize.py && exit $$status

bench-quick: setup  ## the same suites shrunk (sizes / 10, 1 repeat, 1 epoch): figures indicative only
	$(VENV)/bin/python -m bench --quick $(ARGS); status=$$?; $(VENV)/bin/python bench/summarize.py && exit $$status

ui: $(VENV)/.synced-run  ## a local Prefect server and UI on http://127.0.0.1:4200
	$(VENV)/bin/prefect server start

deploy: $(VENV)/.synced-run  ## register prefect.yaml's deployments with the server at $$PREFECT_API_URL
	RNNFLOW_PROJECT_DIR=$(CURDIR) $(VENV)/bin/prefect --no-prompt deploy --all

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache
