"""rnnflow's Prefect flows, CLI and deployments.

Telemetry that calls out is off by default for every entry point (the CLI, a served
deployment, tests): the machines this runs on often have no network, and offline the
analytics clients only log errors. A user's own environment variables still win.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
# Prefect's client-side telemetry (and, on a terminal, its first-run notice about it): the standard opt-out.
os.environ.setdefault("DO_NOT_TRACK", "1")
# TensorFlow's C++ log level: tasks/quiet_tensorflow.py, which every process importing the steps runs.
# Prefect's temporary server gets 20 s to start by default; on a busy 2-core machine that was
# seen to time out ("Timed out while attempting to connect to ephemeral Prefect API server").
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# `export PREFECT_API_URL=` is how a shell clears it, yet Prefect takes the empty string as an address: rnnflow
# started its temporary server and Prefect's events client then logged a traceback for every event of the run.
if os.environ.get("PREFECT_API_URL") == "":
    del os.environ["PREFECT_API_URL"]
