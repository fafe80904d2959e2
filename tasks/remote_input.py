"""Inputs named by URL (s3://, gs://, https://, any fsspec URL) or by local path, read as streams.

The one place that opens an input file and fingerprints it, whichever it is:

    open_input(location)   a binary file object (local: open(); URL: fsspec's, which reads by ranges or streams)
    fingerprint(location)  a content fingerprint: a local file's sha256; for a URL the object's version id or ETag with
                           its size (one HEAD, nothing downloaded), or a sha256 of its bytes when the server gives neither
    check_input(location)  the object's details (size, ETag, version), or one sentence when it is missing or unreadable

Light on purpose (the CLI's checks before Prefect starts use it, tasks/input_files.py): fsspec and its filesystem
package are the only imports beyond the standard library. A URL keeps its spelling everywhere a user reads it (messages, ingest.json, validation pages, manifests): as_location()
leaves it a string, where Path() would fold "s3://b/k" into "s3:/b/k". Credentials and the endpoint come from the
environment as for a URL artifacts root (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), and so do the timeouts and tries
(RNNFLOW_BUCKET_TIMEOUT_SECONDS, RNNFLOW_BUCKET_ATTEMPTS): tasks/store/remote.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import urlsplit

from tasks.input_base import IngestError, existing_file
from tasks.store.files import fingerprint as fingerprint_of, sha256_file
from tasks.store.manifest import ArtifactsRootError
from tasks.store.remote import PROTOCOL_PACKAGES, _no_answer, bucket_settings, filesystem_options, is_url

Location = Path | str  # a local file, or a URL kept as the user spelt it
_STREAMING = ("http", "https")  # servers that may not answer range requests: read front to back
_CHUNK = 1 << 20


def short(error: BaseException, limit: int = 160) -> str:
    """An error's message on one line, cut to limit characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RemoteInputError(IngestError):
    """An input URL that cannot be read: missing, no credentials, no answer. One sentence, naming the URL."""


def as_location(text: str | Path) -> Location:
    """A configured input as this module takes it: the URL string itself, or a local Path (every function here
    takes either spelling, "reviews.csv" or Path("reviews.csv"), and a URL as a string)."""
    return text if isinstance(text, Path) else str(text) if is_url(str(text)) else Path(text)


def input_suffix(location: Location) -> str:
    """The extension of a path or of a URL's path (query and fragment left out): ".csv"."""
    return PurePosixPath(urlsplit(location).path).suffix if isinstance(location, str) else Path(location).suffix


def _filesystem(url: str) -> tuple[Any, str]:
    import fsspec

    protocol = url.split("://", 1)[0].lower()
    try:
        timeout, attempts = bucket_settings()
        return fsspec.core.url_to_fs(url, **filesystem_options(protocol, timeout, attempts))
    except ImportError:
        package = PROTOCOL_PACKAGES.get(protocol, f"the fsspec implementation of {protocol}://")
        raise RemoteInputError(f"Input {url} needs {package} for {protocol}:// URLs: install it (uv pip install {package}) or copy the file locally.") from None
    except ArtifactsRootError as error:  # a bad RNNFLOW_BUCKET_* setting
        raise RemoteInputError(str(error)) from None
    except ValueError as error:
        raise RemoteInputError(f"Input {url} is not a URL fsspec knows ({short(error)}): use s3://BUCKET/KEY, gs://, https:// or a local path.") from None


def _unreadable(url: str, error: BaseException, key: str) -> RemoteInputError:
    if isinstance(error, RemoteInputError):
        return error
    if isinstance(error, FileNotFoundError):
        return RemoteInputError(f"Input {url} does not exist (no such object or bucket): check the URL given to {key}.")
    if _no_answer(error):
        timeout, attempts = bucket_settings()
        return RemoteInputError(
            f"Input {url} could not be read: its endpoint did not answer within {timeout:g} s, {attempts} tries: check that it is up "
            "(AWS_ENDPOINT_URL for S3), or raise RNNFLOW_BUCKET_TIMEOUT_SECONDS if it is only slow."
        )
    kind = type(error).__name__
    return RemoteInputError(
        f"Input {url} could not be read ({kind}: {short(error)}): check the URL, the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
        f"AWS_ENDPOINT_URL for S3) and their permissions, given to {key}."
    )


def check_input(location: Location, key: str = "the input", what: str = "a file") -> dict[str, Any]:
    """A local file's path, or a URL object's details (fsspec's info: size, ETag, VersionId...); one sentence otherwise."""
    location = as_location(location)  # a plain string that is no URL is a local path
    if not isinstance(location, str):
        return {"name": str(existing_file(str(location), key, what)), "type": "file"}
    fs, path = _filesystem(location)
    try:
        info = dict(fs.info(path))
    except Exception as error:  # noqa: BLE001 - s3fs, gcsfs, aiohttp each raise their own kinds
        raise _unreadable(location, error, key) from None
    if info.get("type") == "directory":
        raise RemoteInputError(f"Input {location} is a folder (a prefix), not an object: give {key} the URL of one file.")
    return info


def open_input(location: Location, key: str = "the input", seekable: bool = False) -> IO[bytes]:
    """The input's bytes as a file object, read as a stream (close it, or use `with`).

    seekable: random access is needed (Parquet); object stores read by range anyway, an https:// server is then asked
    for ranges, otherwise it is streamed front to back (many plain web servers do not answer ranges)."""
    location = as_location(location)  # a plain string that is no URL is a local path
    if not isinstance(location, str):
        return open(existing_file(str(location), key, "a file"), "rb")
    fs, path = _filesystem(location)
    options = {"block_size": 0} if location.split("://", 1)[0].lower() in _STREAMING and not seekable else {}
    try:
        return fs.open(path, "rb", **options)
    except Exception as error:  # noqa: BLE001
        raise _unreadable(location, error, key) from None


def read_chunks(handle: IO[bytes], location: Location, key: str = "the input", size: int = _CHUNK):
    """handle's bytes in chunks; a read that fails midway is one sentence naming the input."""
    while True:
        try:
            block = handle.read(size)
        except Exception as error:  # noqa: BLE001
            raise _unreadable(str(location), error, key) from None
        if not block:
            return
        yield block


def fingerprint(location: Location, key: str = "the input") -> str:
    """What the input's content is, cheaply: a local file's sha256; for a URL its version id or ETag and size (the
    object changes, they change), else the sha256 of its bytes, streamed."""
    location = as_location(location)  # a plain string that is no URL is a local path
    if not isinstance(location, str):
        return sha256_file(existing_file(str(location), key, "a file"))
    info = check_input(location, key)
    tag = info.get("VersionId") or info.get("ETag") or info.get("generation") or info.get("etag")
    if tag and info.get("size") is not None:
        return fingerprint_of(["url-object", location, str(tag), int(info["size"])])
    digest = hashlib.sha256()
    with open_input(location, key) as handle:
        for block in read_chunks(handle, location, key):
            digest.update(block)
    return fingerprint_of(["url-content", digest.hexdigest()])

