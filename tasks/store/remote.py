"""An artifacts root on an object store (s3://, gs://, az://, file://...), reached through fsspec.

The store keeps working on local files: a URL root has a local mirror folder (the scratch the
steps read and write, where X_*.npy stay memory-mappable), and this module moves files between
the mirror and the bucket. Objects are whole when they appear (an object PUT is atomic), so the
store's order of writes is what makes things complete: a cache entry's files first and its
_entry.json last; a run folder's files first and its manifest.json last.

Credentials and the endpoint come the standard way for each filesystem (for S3: AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ~/.aws, an instance role), never from the repository.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

from tasks.store.manifest import ArtifactsRootError

T = TypeVar("T")

# fsspec finds the implementation by protocol; these are the packages to install for the common ones.
PROTOCOL_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}
MIRROR_ENV = "RNNFLOW_SCRATCH"  # where URL roots keep their local mirror (default ~/.cache/rnnflow/mirror)


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


class RemoteRoot:
    """The bucket side of a URL root: whole-object reads and writes under its prefix, by relative path."""

    uploaded_bytes = 0  # bytes this process sent with put/pipe (not server-side copies): for the benchmark

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.protocol = self.url.split("://", 1)[0].lower()
        try:
            import fsspec

            local = {"auto_mkdir": True} if self.protocol in ("file", "local") else {}  # object stores have no folders to make
            self.fs, base = fsspec.core.url_to_fs(self.url, use_listings_cache=False, **local)
        except ImportError:
            package = PROTOCOL_PACKAGES.get(self.protocol, f"the fsspec implementation of {self.protocol}://")
            raise ArtifactsRootError(
                f"Artifacts root {self.url} needs {package} for {self.protocol}:// URLs: install it into the environment (uv pip install {package}) or choose another root."
            ) from None
        except ValueError as error:
            raise ArtifactsRootError(f"Artifacts root {self.url} is not a URL fsspec knows ({error}): use s3://BUCKET/PREFIX, gs://, az:// or a local path.") from None
        self.base = base.rstrip("/")
        self.is_s3 = type(self.fs).__name__ == "S3FileSystem"

    # ----- names

    def path(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def url_of(self, rel: str) -> str:
        return f"{self.url}/{rel}" if rel else self.url

    # ----- calls, with one sentence for a bucket that cannot be used

    def _call(self, what: str, rel: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except (FileNotFoundError, FileExistsError):
            raise
        except Exception as error:  # noqa: BLE001 - botocore/gcsfs/adlfs each raise their own kinds
            text = " ".join(str(error).split()) or type(error).__name__
            raise ArtifactsRootError(
                f"Artifacts root {self.url} could not {what} {self.url_of(rel)} ({type(error).__name__}: {text[:200]}): "
                "check the bucket exists, the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for S3) and their permissions, or choose another root with --artifacts."
            ) from None

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
            bucket, key, _ = self.fs.split_path(path)
            condition = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
            try:
                self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
            except (OSError, FileExistsError) as error:
                if isinstance(error, FileExistsError) or "precondition" in str(error).lower() or getattr(error, "errno", None) == 22:
                    raise FileExistsError(self.url_of(rel)) from None
                raise
            finally:
                self.fs.invalidate_cache(path)
        elif create and not self.is_s3:
            self._call("write", rel, lambda: self._create(path, data))
        else:
            self._call("write", rel, lambda: self.fs.pipe_file(path, data, mode="create" if create else "overwrite"))
        RemoteRoot.uploaded_bytes += len(data)

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
