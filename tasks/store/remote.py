"""An artifacts root on an object store (s3://, gs://, az://, file://...), reached through fsspec.

The store keeps working on local files: a URL root has a local mirror folder (the scratch the
steps read and write, where X_*.npy stay memory-mappable), and this module moves files between
the mirror and the bucket. Objects are whole when they appear (an object PUT is atomic), so the
store's order of writes is what makes things complete: a cache entry's files first and its
_entry.json last (created only if absent: tasks/store/bucket.py); a run folder's files first and
its manifest.json last.

Credentials and the endpoint come the standard way for each filesystem (for S3: AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ~/.aws, an instance role), never from the repository.

Every S3 call has a timeout and a bounded number of tries (RNNFLOW_BUCKET_TIMEOUT_SECONDS,
RNNFLOW_BUCKET_ATTEMPTS): an endpoint that accepts connections and never answers ends the command
with one sentence instead of stalling it, and is not asked again by this process for a while, so a
failing run's last writes (its manifest, run.log) fail at once rather than each waiting as long.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, NoReturn, TypeVar
from urllib.parse import urlsplit

from tasks.store.manifest import ArtifactsRootError

T = TypeVar("T")

# fsspec finds the implementation by protocol; these are the packages to install for the common ones.
PROTOCOL_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}
MIRROR_ENV = "RNNFLOW_SCRATCH"  # where URL roots keep their local mirror (default ~/.cache/rnnflow/mirror)
TIMEOUT_ENV = "RNNFLOW_BUCKET_TIMEOUT_SECONDS"  # per try: to connect, and between bytes of an answer
ATTEMPTS_ENV = "RNNFLOW_BUCKET_ATTEMPTS"  # tries per call, the first included
DEFAULT_TIMEOUT_SECONDS = 20.0
DEFAULT_ATTEMPTS = 3
# endpoint -> (monotonic time until which it is not asked again, why): see the module's docstring.
_UNANSWERED: dict[str, tuple[float, str]] = {}
_S3_SESSION: Any = None


def _without_expect_continue(request: Any, **kwargs: Any) -> None:
    # botocore asks for `Expect: 100-continue` on every upload, and aiohttp waits for the interim answer with no
    # timeout at all (read_timeout arms only once a read is under way): a silent endpoint held a PUT forever.
    if "Expect" in request.headers:
        del request.headers["Expect"]


def _s3_session() -> Any:
    """One aiobotocore session for the process (so fsspec keeps reusing one filesystem and its connections), whose
    S3 clients send no `Expect: 100-continue`."""
    global _S3_SESSION
    if _S3_SESSION is None:
        from aiobotocore.session import get_session

        session = get_session()
        session.register("before-sign.s3", _without_expect_continue)
        _S3_SESSION = session
    return _S3_SESSION


def is_url(root: str | os.PathLike[str]) -> bool:
    """Whether an artifacts root names an fsspec URL ("s3://bucket/prefix", "file:///srv/a") rather than a local path."""
    return "://" in str(root)


def mirror_folder(url: str) -> Path:
    """The local folder a URL root's files are read and written in: one per root.

    Inside a Dask worker it is the worker's own local directory (dask's --local-directory): workers
    on one machine then share nothing but the bucket, as workers on different machines would.
    Elsewhere $RNNFLOW_SCRATCH, or ~/.cache/rnnflow/mirror.
    """
    base: Path | None = None
    if "distributed" in sys.modules:  # a Dask worker has imported it; anyone else need not pay for the import
        from distributed import get_worker

        try:
            base = Path(get_worker().local_directory) / "rnnflow-mirror"
        except ValueError:  # not inside a Dask worker
            pass
    if base is None:
        base = Path(os.environ.get(MIRROR_ENV) or Path.home() / ".cache" / "rnnflow" / "mirror")
    return (base.expanduser() / hashlib.sha256(url.encode()).hexdigest()[:16]).resolve()


def _setting(name: str, default: float, *, whole: bool) -> float:
    """A bucket setting from the environment; one sentence for a value that is not a number above 0."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        value = 0
    if not 0 < value < float("inf"):
        kind = "a whole number of tries" if whole else "a number of seconds"
        raise ArtifactsRootError(f"{name}={text!r} is not {kind} above 0: set it to e.g. {default:g}, or unset it for the default.")
    return value


def _no_answer(error: BaseException) -> bool:
    """Whether an error means the endpoint did not answer in time (not a refusal, not an S3 error reply)."""
    if isinstance(error, TimeoutError):  # asyncio's and fsspec's timeouts are TimeoutErrors too
        return True
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"ReadTimeoutError", "ConnectTimeoutError", "ServerTimeoutError", "FSTimeoutError"})


def _unreachable(error: BaseException) -> bool:
    """A timeout, or a connection that could not be made (botocore's ConnectionError family)."""
    return _no_answer(error) or "EndpointConnectionError" in {cls.__name__ for cls in type(error).__mro__}


def filesystem_options(protocol: str, timeout: float, attempts: int) -> dict[str, Any]:
    """fsspec options for a URL's filesystem: for S3 the timeouts, tries and endpoint above (artifacts roots and
    inputs named by URL alike); nothing for other protocols."""
    options: dict[str, Any] = {}
    if protocol in ("s3", "s3a"):
        # botocore's own retries (standard mode: timeouts, refused connections, 5xx, throttling), and s3fs's
        # loop around them left at one pass: the two multiply, and 5 x 5 tries of 15 s was what stalled a run.
        options["config_kwargs"] = {"connect_timeout": timeout, "read_timeout": timeout,
                                    "retries": {"total_max_attempts": attempts, "mode": "standard"}}
        options["session"] = _s3_session()
        # Named, so that fsspec's cached filesystem (and its client) is one per endpoint, not the first one made.
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["endpoint_url"] = endpoint
    return options


def bucket_settings() -> tuple[float, int]:
    """(seconds per try, tries per call) from RNNFLOW_BUCKET_TIMEOUT_SECONDS and RNNFLOW_BUCKET_ATTEMPTS."""
    return _setting(TIMEOUT_ENV, DEFAULT_TIMEOUT_SECONDS, whole=False), int(_setting(ATTEMPTS_ENV, DEFAULT_ATTEMPTS, whole=True))


class UnusableRemote:
    """A URL root that cannot be used (no bucket named, a missing fsspec package, a bad setting): the store is made
    anyway, outside any command's error handling, and its first use raises the one sentence."""

    def __init__(self, url: str, error: ArtifactsRootError):
        self.url = url.rstrip("/")
        self.error = str(error)

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("__"):  # copy, pickle and hasattr probing: not a use of the root
            raise AttributeError(name)
        raise ArtifactsRootError(self.error)


class RemoteRoot:
    """The bucket side of a URL root: whole-object reads and writes under its prefix, by relative path."""

    uploaded_bytes = 0  # bytes this process sent with put/pipe (not server-side copies): for the benchmark

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.protocol = url.split("://", 1)[0].lower()
        if self.protocol in PROTOCOL_PACKAGES and not urlsplit(url).netloc:
            raise ArtifactsRootError(
                f"Artifacts root {url} names no bucket: write it as {self.protocol}://BUCKET/PREFIX, or choose a local folder with --artifacts."
            )
        self.timeout, self.attempts = bucket_settings()
        try:
            import fsspec

            options = filesystem_options(self.protocol, self.timeout, self.attempts)
            if self.protocol in ("file", "local"):
                options["auto_mkdir"] = True  # object stores have no folders to make
            self.fs, base = fsspec.core.url_to_fs(self.url, use_listings_cache=False, **options)
        except ImportError:
            package = PROTOCOL_PACKAGES.get(self.protocol, f"the fsspec implementation of {self.protocol}://")
            raise ArtifactsRootError(
                f"Artifacts root {self.url} needs {package} for {self.protocol}:// URLs: install it into the environment (uv pip install {package}) or choose another root."
            ) from None
        except ValueError as error:
            raise ArtifactsRootError(f"Artifacts root {self.url} is not a URL fsspec knows ({error}): use s3://BUCKET/PREFIX, gs://, az:// or a local path.") from None
        self.base = base.rstrip("/")
        self.is_s3 = type(self.fs).__name__ == "S3FileSystem"
        if self.is_s3:
            self.fs.retries = 1

    @property
    def endpoint(self) -> str:
        """The endpoint the calls go to, as messages name it."""
        client = getattr(self.fs, "_s3", None)  # made by the first call: botocore's resolved endpoint
        found = getattr(getattr(client, "meta", None), "endpoint_url", None)
        if found is None and self.is_s3:
            found = getattr(self.fs, "endpoint_url", None) or (self.fs.client_kwargs or {}).get("endpoint_url")
        return str(found or f"the {self.protocol}:// endpoint")

    # ----- names

    def path(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def url_of(self, rel: str) -> str:
        return f"{self.url}/{rel}" if rel else self.url

    # ----- calls, with one sentence for a bucket that cannot be used

    def _call(self, what: str, rel: str, call: Callable[[], T]) -> T:
        self._refuse_unanswered(what, rel)
        try:
            return call()
        except (FileNotFoundError, FileExistsError):
            raise
        except Exception as error:  # noqa: BLE001 - botocore/gcsfs/adlfs each raise their own kinds
            self._fail(what, rel, error)

    def _fail(self, what: str, rel: str, error: Exception) -> NoReturn:
        text = " ".join(str(error).split()) or type(error).__name__
        if _no_answer(error):
            reason = f"the endpoint {self.endpoint} did not answer within {self.timeout:g} s, {self.attempts} tries"
            self._remember_unanswered(reason)
            raise ArtifactsRootError(
                f"Artifacts root {self.url} could not {what} {self.url_of(rel)}: {reason}: check that the endpoint is up and reachable "
                f"(AWS_ENDPOINT_URL for S3), or raise {TIMEOUT_ENV} if it is only slow."
            ) from None
        if _unreachable(error):
            self._remember_unanswered(f"{type(error).__name__}: {text[:200]}")
        raise ArtifactsRootError(
            f"Artifacts root {self.url} could not {what} {self.url_of(rel)} ({type(error).__name__}: {text[:200]}): "
            "check the bucket exists, the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for S3) and their permissions, or choose another root with --artifacts."
        ) from None

    def _remember_unanswered(self, reason: str) -> None:
        # Long enough for a failing run's last writes, short enough for a long-lived process (serve) to try again soon.
        _UNANSWERED[self.endpoint] = (time.monotonic() + max(60.0, self.timeout * self.attempts), reason)

    def _refuse_unanswered(self, what: str, rel: str) -> None:
        until, reason = _UNANSWERED.get(self.endpoint, (0.0, ""))
        if time.monotonic() < until:
            raise ArtifactsRootError(
                f"Artifacts root {self.url} could not {what} {self.url_of(rel)}: {reason} a moment ago, and is not asked again yet: "
                f"check that the endpoint is up and reachable (AWS_ENDPOINT_URL for S3), then run the command again."
            )

    def check(self) -> None:
        """Write, read back and delete a small object: credentials, bucket and permissions, before any step runs."""
        rel = f".rnnflow-check-{os.getpid()}"
        try:
            self._call("write", rel, lambda: self.fs.pipe_file(self.path(rel), b"ok"))
            self._call("delete", rel, lambda: self.fs.rm_file(self.path(rel)))
        except FileNotFoundError as error:  # S3: NoSuchBucket
            raise ArtifactsRootError(
                f"Artifacts root {self.url} cannot be written ({' '.join(str(error).split()) or 'not found'}): create the bucket first, or choose another root with --artifacts."
            ) from None

    def check_readable(self) -> None:
        """The bucket (the URL's first part) exists and these credentials may look at it: for commands that only read."""
        if self.protocol in ("file", "local"):
            return  # a folder, made when first written
        bucket = self.base.split("/", 1)[0]
        try:  # info, not exists: exists answers False for an endpoint it cannot reach too
            self._call("read", "", lambda: self.fs.info(bucket))
        except FileNotFoundError:
            raise ArtifactsRootError(f"Artifacts root {self.url}: there is no bucket {bucket!r} at this endpoint: check the URL, or create the bucket and run 'rnnflow run' first.") from None

    def read_bytes(self, rel: str) -> bytes | None:
        """The object's bytes, or None when there is none."""
        try:
            return self._call("read", rel, lambda: self.fs.cat_file(self.path(rel)))
        except FileNotFoundError:
            return None

    def read_with_tag(self, rel: str) -> tuple[bytes | None, str | None]:
        """The object's bytes and its ETag (S3; None elsewhere), for a conditional replace."""
        data = self.read_bytes(rel)
        if data is None or not self.is_s3:
            return data, None
        try:
            info = self._call("read", rel, lambda: self.fs.info(self.path(rel), refresh=True))
        except FileNotFoundError:
            return None, None
        return data, info.get("ETag")

    def write_bytes(self, rel: str, data: bytes, *, create: bool = False, if_match: str | None = None, if_absent: bool = False) -> None:
        """Put one object whole. create: FileExistsError if it exists. On S3, if_match (an ETag) or if_absent make
        the replace conditional; a lost race raises FileExistsError."""
        path = self.path(rel)
        if self.is_s3 and (if_match or if_absent):
            self._call("write", rel, lambda: self._conditional_put(rel, data, {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}))
        elif create and not self.is_s3:
            self._call("write", rel, lambda: self._create(path, data))
        else:
            self._call("write", rel, lambda: self.fs.pipe_file(path, data, mode="create" if create else "overwrite"))
        RemoteRoot.uploaded_bytes += len(data)

    def _conditional_put(self, rel: str, data: bytes, condition: dict[str, str]) -> None:
        """One S3 PutObject with If-Match or If-None-Match; FileExistsError when the condition fails (a lost race),
        or when S3 answers 409 to two conditional writes of one key at once."""
        path = self.path(rel)
        bucket, key, _ = self.fs.split_path(path)
        try:
            self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
        except OSError as error:
            text = str(error).lower()
            if isinstance(error, FileExistsError) or "precondition" in text or "conditionalrequestconflict" in text or error.errno == 22:
                raise FileExistsError(self.url_of(rel)) from None
            raise
        finally:
            self.fs.invalidate_cache(path)

    def _create(self, path: str, data: bytes) -> None:
        try:
            with self.fs.open(path, "xb") as handle:  # exclusive where the filesystem has it (local, gcsfs)
                handle.write(data)
        except (NotImplementedError, ValueError):
            self.fs.pipe_file(path, data, mode="create")

    def put_file(self, local: Path, rel: str) -> None:
        self._call("upload", rel, lambda: self.fs.put_file(str(local), self.path(rel)))
        RemoteRoot.uploaded_bytes += Path(local).stat().st_size

    def get_file(self, rel: str, local: Path) -> None:
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        self._call("download", rel, lambda: self.fs.get_file(self.path(rel), str(local)))

    def copy(self, source_rel: str, target_rel: str) -> None:
        """Server-side where the store has it (S3 CopyObject): nothing travels through this machine."""
        self._call("copy", source_rel, lambda: self.fs.copy(self.path(source_rel), self.path(target_rel)))

    def delete(self, rel: str) -> None:
        try:
            self._call("delete", rel, lambda: self.fs.rm_file(self.path(rel)))
        except FileNotFoundError:
            pass

    def children(self, rel: str) -> list[str]:
        """Names directly under rel (objects and prefixes), sorted; [] when there are none."""
        try:
            entries: list[Any] = self._call("list", rel, lambda: self.fs.ls(self.path(rel), detail=False))
        except FileNotFoundError:
            return []
        base = self.path(rel).rstrip("/")
        return sorted({entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries if entry.rstrip("/") != base})

    def files_under(self, rel: str) -> list[str]:
        """Every object under rel, as paths relative to rel."""
        base = self.path(rel).rstrip("/")
        try:
            found: list[str] = self._call("list", rel, lambda: self.fs.find(base))
        except FileNotFoundError:
            return []
        return sorted(path[len(base) + 1:] for path in found if path.startswith(base + "/"))
