"""Inputs named by URL (tasks.remote_input.py): S3 on moto's server, https:// from a tiny http.server, both on
127.0.0.1; their fingerprints, their one-sentence failures, and a training run reading its table from a bucket."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path
from typing import Iterator

import pytest

from tasks.remote_input import RemoteInputError, check_input, fingerprint, open_input
from tasks.ingest.table import iter_table
from tests.bucket_fixtures import CREDENTIALS, new_bucket, s3_endpoint, s3_env  # noqa: F401  (fixtures)

CSV = b"text,label\na wonderful moving film,pos\ndull and boring,neg\n"


def put(endpoint: str, bucket: str, key: str, data: bytes) -> str:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1").put_object(Bucket=bucket, Key=key, Body=data)
    return f"s3://{bucket}/{key}"


@pytest.fixture
def web_folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served by Python's http.server on a free port of 127.0.0.1 (no ETag, no ranges), and its base URL."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_s3_object_is_read_as_a_stream_and_fingerprinted_by_its_etag_and_size(s3_env):
    bucket = new_bucket(s3_env["AWS_ENDPOINT_URL"])
    url = put(s3_env["AWS_ENDPOINT_URL"], bucket, "in/reviews.csv", CSV)
    first = fingerprint(url)
    assert check_input(url)["size"] == len(CSV)
    with open_input(url) as handle:
        assert handle.read() == CSV
    rows = list(iter_table(url, "csv", {"text_column": "text", "label_column": "label"}))
    assert rows[0]["text"].tolist() == ["a wonderful moving film", "dull and boring"]

    assert fingerprint(url) == first, "nothing changed, nothing read: the same fingerprint"
    put(s3_env["AWS_ENDPOINT_URL"], bucket, "in/reviews.csv", CSV + b"a third review,pos\n")
    changed = fingerprint(url)
    assert changed != first
    put(s3_env["AWS_ENDPOINT_URL"], bucket, "in/reviews.csv", CSV.replace(b"dull", b"DULL"))  # same size, other bytes
    assert fingerprint(url) not in (first, changed)


def test_a_missing_object_or_bucket_is_one_sentence_naming_the_url(s3_env):
    bucket = new_bucket(s3_env["AWS_ENDPOINT_URL"])
    with pytest.raises(RemoteInputError) as missing:
        fingerprint(f"s3://{bucket}/no/such.csv", "data.path")
    assert str(missing.value) == f"Input s3://{bucket}/no/such.csv does not exist (no such object or bucket): check the URL given to data.path."
    with pytest.raises(RemoteInputError, match=r"^Input s3://no-such-bucket-x/a.csv does not exist"):
        check_input("s3://no-such-bucket-x/a.csv", "data.path")
    with pytest.raises(RemoteInputError, match=r"is a folder \(a prefix\), not an object"):
        put(s3_env["AWS_ENDPOINT_URL"], bucket, "dir/a.csv", CSV)
        check_input(f"s3://{bucket}/dir", "data.path")


def test_an_https_input_without_an_etag_is_fingerprinted_by_its_content(web_folder):
    folder, base = web_folder
    (folder / "reviews.csv").write_bytes(CSV)
    url = f"{base}/reviews.csv"
    first = fingerprint(url)
    assert first == fingerprint(url)
    rows = list(iter_table(url, "csv", {"text_column": "text", "label_column": "label"}))
    assert rows[0]["label"].tolist() == ["pos", "neg"]
    (folder / "reviews.csv").write_bytes(CSV.replace(b"dull", b"DULL"))
    assert fingerprint(url) != first
    with pytest.raises(RemoteInputError, match=rf"^Input {base}/gone.csv does not exist"):
        fingerprint(f"{base}/gone.csv", "data.path")


def test_run_with_a_missing_s3_table_exits_2_before_any_step(s3_env, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from flows.cli import main

    bucket = new_bucket(s3_env["AWS_ENDPOINT_URL"])
    code = main(["run", "--preset", "demo", "--set", "data.source=table", "--set", f"data.path=s3://{bucket}/reviews.csv",
                 "--artifacts", str(tmp_path / "artifacts")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"rnnflow: error: Input s3://{bucket}/reviews.csv does not exist (no such object or bucket): check the URL given to data.path."
    assert not (tmp_path / "artifacts" / "runs").exists()


@pytest.mark.slow
def test_a_training_run_reads_its_table_from_a_bucket_and_names_the_url(prefect_api, s3_env, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """(That a replaced object is ingested again follows from its fingerprint: the tests above.)"""
    from flows.cli import main
    from tasks.synthetic import synthetic_reviews
    from tests.helpers import tiny_cli_args

    frame = synthetic_reviews(200, seed=3)[["text", "label"]].replace({"label": {0: "neg", 1: "pos"}})
    bucket = new_bucket(s3_env["AWS_ENDPOINT_URL"])
    url = put(s3_env["AWS_ENDPOINT_URL"], bucket, "tables/reviews.csv", frame.to_csv(index=False).encode())
    monkeypatch.chdir(tmp_path)
    args = [*tiny_cli_args("data.source=table", f"data.path={url}", "train.epochs=1"), "--artifacts", str(tmp_path / "artifacts")]
    assert main(["run", *args]) == 0
    folder = Path(capsys.readouterr().out.strip().splitlines()[-1])
    ingest = json.loads((folder / "ingest" / "ingest.json").read_text())
    assert ingest["source"]["path"] == url and ingest["n"]["train"] > 0
    assert url in (folder / "manifest.json").read_text()
    assert url in (folder / "report" / "report.html").read_text(), "the report says what the input was"


def test_score_reads_its_input_from_a_bucket_by_etag_and_says_when_it_is_missing(s3_env):
    from tasks.score import ScoreInputError, open_scoring_input

    bucket = new_bucket(s3_env["AWS_ENDPOINT_URL"])
    url = put(s3_env["AWS_ENDPOINT_URL"], bucket, "today/reviews.csv", CSV)
    opened = open_scoring_input(url)
    assert opened.location == url and opened.fingerprint == fingerprint(url)
    assert [text for batch in opened.batches(1) for text in batch["text"]] == ["a wonderful moving film", "dull and boring"]
    with pytest.raises(ScoreInputError, match=f"s3://{bucket}/today/missing.csv does not exist"):
        open_scoring_input(f"s3://{bucket}/today/missing.csv")
