"""object_store: a first run and an identical re-run with the artifacts root on local disk, then on an S3 bucket.

The bucket is served by moto's S3 server on 127.0.0.1 (the dev dependency `moto[server]`), so the
figure is the store's own cost (uploads, downloads, the checks around them) over loopback, not a
cloud network's. Each root starts empty, with an empty mirror folder ($RNNFLOW_SCRATCH); every run
is its own `rnnflow run` process, the two roots' runs one after another on the same machine.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tasks.store import ArtifactStore, read_json

from bench.measure import BenchError, fresh_dir, rnnflow_run_argv, run_child, step_statuses, test_accuracy
from bench.options import BenchOptions

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "rnnflow-bench", "AWS_SECRET_ACCESS_KEY": "rnnflow-bench", "AWS_DEFAULT_REGION": "us-east-1"}
UPLOADED = re.compile(r"^uploaded (\d+) bytes to ")


def _moto_server(log_dir: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_dir.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=open(log_dir / "moto_server.log", "w"), stderr=subprocess.STDOUT)
    for _ in range(300):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return server, f"http://127.0.0.1:{port}"
        time.sleep(0.1)
    server.kill()
    raise BenchError("moto_server did not start listening within 30 s")


def run(opts: BenchOptions) -> dict[str, Any]:
    import boto3

    logs = opts.log_dir / "object_store"
    server, endpoint = _moto_server(logs)
    try:
        env = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "RNNFLOW_SCRATCH": str(fresh_dir(opts.work_dir / "object_store" / "mirror"))}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket="rnnflow-bench")
        local, s3 = "local disk", "S3 (moto on 127.0.0.1)"
        roots = {local: str(fresh_dir(opts.work_dir / "object_store" / "artifacts")), s3: "s3://rnnflow-bench/artifacts"}
        rows = []
        for where, root in roots.items():
            for kind in ("first run", "identical re-run"):
                argv = [*rnnflow_run_argv(opts, "default", Path(roots[local]))[:-1], root]
                child = run_child(argv, logs, f"{where.split()[0].lower()}-{kind.split()[0]}", env=env)
                uploaded = next((int(m.group(1)) for line in child.stdout.splitlines() if (m := UPLOADED.match(line))), 0)
                run_id = child.last_line.strip().rstrip("/").rsplit("/", 1)[-1]
                os.environ.update(env)  # this process reads the run where the child left it (the same mirror)
                manifest = read_json(ArtifactStore(root).resolve_run(run_id) / "manifest.json")
                rows.append({"root": where, "run": kind, "command": shlex.join(argv), "wall_s": child.wall_s, "peak_rss_mib": child.peak_rss_mib,
                             "uploaded_bytes": uploaded, "test_accuracy": test_accuracy(manifest), "step_statuses": step_statuses(manifest)})
    finally:
        server.terminate()
        server.wait(timeout=30)
    by = {(row["root"], row["run"]): row["wall_s"] for row in rows}
    first_ratio = round(by[(s3, "first run")] / by[(local, "first run")], 3)
    rerun_ratio = round(by[(s3, "identical re-run")] / by[(local, "identical re-run")], 3)
    return {
        "description": "The default preset's first run and identical re-run, artifacts on local disk and on a local S3 server: wall time and bytes uploaded.",
        "rows": rows,
        "summary": {"first_run_s3_over_local": first_ratio, "rerun_s3_over_local": rerun_ratio,
                    "first_run_uploaded_mib": round(rows[2]["uploaded_bytes"] / 2**20, 1), "rerun_uploaded_mib": round(rows[3]["uploaded_bytes"] / 2**20, 1)},
        "notes": [
            "uploaded_bytes: what the run's process sent with PUTs (`rnnflow run` prints it for a URL root); a run folder's "
            "copies of cache entries are server-side copies (CopyObject) and send nothing.",
            "The S3 server is moto's, on loopback: a cloud bucket adds its network's latency and bandwidth to every request.",
            "One run of each kind, local disk first; a figure taken while anything else ran is an upper bound.",
        ],
    }
