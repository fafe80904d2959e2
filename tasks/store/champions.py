"""The champion record: <root>/champion.json, one champion per model (as MLflow's registry keeps a `champion`
alias per registered model), so a team can train two models (two languages, two products) into one root.

    {"format": 2,
     "models": {"imdb-aclImdb_v1": {"run_id", "model", "promoted_at", "metric", "value", "labels",
                                    "decided_by", "reason", "forced", "previous_run_id"}, ...}}

A run competes for its configuration's model (RunConfig.model_name: promote.model, or one derived from
the data keys) and is compared only with that model's champion. A root written before models held one
pointer, {"run_id", ...} at the top: it reads as one entry under the model of the run it names (from that
run's recorded configuration) and is written in the new shape at the next promotion, so nothing is lost.
When that run's configuration cannot be read (its folder is gone), the entry reads under LEGACY_MODEL and the
next promotion of any model succeeds it (naming it as previous_run_id), as it would have before models.

The record is read, compared and replaced under champion_lock() (an flock; for a URL root also a lock
object in the bucket, created only if absent), and replaced whole (temporary file + rename locally; on S3
a write conditional on the ETag read under the lock), so readers see the old record or the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import secrets
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from tasks.logs import step_logger
from tasks.store.files import read_json, write_json
from tasks.store.manifest import MANIFEST_FILE, ArtifactsRootError, BadRunIdError, ChampionError, RunError, RunNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from tasks.store import ArtifactStore

CHAMPION_FILE = "champion.json"
CHAMPION_LOCK = "champion.lock"  # <root>/champion.lock: held while the record is read, compared and replaced
RECORD_FORMAT = 2
LEGACY_MODEL = "legacy"  # the model an old single pointer migrates to when its run's configuration cannot be read
REMOTE_LOCK_SECONDS = 300  # a champion lock object older than this is a dead holder's: taken over
REMOTE_LOCK_WAIT_SECONDS = 600  # how long a promote waits for another holder's lock object


def model_of_config(config: Any) -> str:
    """The model a recorded configuration (a manifest's "config") competes for; LEGACY_MODEL when it is not one."""
    from pydantic import ValidationError

    from tasks.config import RunConfig

    try:
        return RunConfig.model_validate(config).model_name
    except (ValidationError, TypeError, ValueError):
        return LEGACY_MODEL


class ChampionRecord:
    """champion.json of one artifacts root: every model's champion, read and written whole."""

    def __init__(self, store: "ArtifactStore"):
        self.store = store
        self._tag: str | None = None  # (remote) the ETag of champion.json as read_all last read it

    @property
    def file(self) -> Path:
        return self.store.root / CHAMPION_FILE

    @property
    def lock_file(self) -> Path:
        return self.store.root / CHAMPION_LOCK

    # ----- reading

    def _raw(self) -> tuple[Any, str] | None:
        """The parsed file and the name messages use for it; None when there is none."""
        store = self.store
        if store.remote is None:
            where = str(self.file)
            try:
                return read_json(self.file), where
            except FileNotFoundError:
                return None
            except (OSError, ValueError):
                raise ChampionError(f"{where} is not valid JSON: delete it and promote a run with 'rnnflow promote RUN_ID'.") from None
        where = store.where(self.file)
        data, self._tag = store.remote.read_with_tag(CHAMPION_FILE)
        if data is None:
            return None
        try:
            return json.loads(data), where
        except ValueError:
            raise ChampionError(f"{where} is not valid JSON: delete it and promote a run with 'rnnflow promote RUN_ID'.") from None

    def _checked(self, pointer: Any, where: str, model: str) -> dict[str, Any]:
        if not isinstance(pointer, dict) or not isinstance(pointer.get("run_id"), str):
            raise ChampionError(f"{where} names no run_id for model {model!r}: delete it and promote a run with 'rnnflow promote RUN_ID'.")
        try:  # a path here would send the comparison (and `champion`) to another root's run
            self.store.check_run_id(pointer["run_id"])
        except BadRunIdError:
            raise ChampionError(
                f"{where} names {pointer['run_id']!r} for model {model!r}, not a run id under {self.store.runs_dir}: "
                "delete it and promote a run with 'rnnflow promote RUN_ID'."
            ) from None
        return {**pointer, "model": model}

    def read_all(self) -> dict[str, dict[str, Any]]:
        """Every model's champion pointer, by model name ({} when nothing was promoted yet); an old single pointer migrated."""
        raw = self._raw()
        if raw is None:
            return {}
        record, where = raw
        if isinstance(record, dict) and "models" in record:
            models = record["models"]
            if not isinstance(models, dict):
                raise ChampionError(f"{where} holds no models mapping: delete it and promote a run with 'rnnflow promote RUN_ID'.")
            return {str(name): self._checked(pointer, where, str(name)) for name, pointer in sorted(models.items())}
        pointer = self._checked(record, where, "?")
        model = self._model_of_run(pointer["run_id"])
        return {model: {**pointer, "model": model}}

    def _model_of_run(self, run_id: str) -> str:
        """The model a recorded run competed for, from its manifest (for an old pointer, which did not say)."""
        folder = self.store.run_dir(run_id)
        try:
            if self.store.remote is not None:
                self.store.pull_manifest(folder)  # raises for a damaged manifest in the bucket
            return model_of_config(read_json(folder / MANIFEST_FILE).get("config"))
        except (OSError, ValueError, AttributeError, RunError):
            return LEGACY_MODEL

    def read(self, model: str) -> dict[str, Any] | None:
        """The champion pointer of one model, or None when that model has none yet."""
        return self.read_all().get(model)

    def choose(self, model: str | None) -> dict[str, Any]:
        """The pointer `--run champion` means: that model's, or the only one; one sentence when there is none or a choice to make."""
        champions = self.read_all()
        where = self.store.where(self.store.root)
        if model is not None:
            if model not in champions:
                known = f" (it holds {', '.join(champions)})" if champions else ""
                raise RunNotFoundError(
                    f"No champion of model {model!r} under {where}{known}: 'rnnflow champion' lists them, or promote a run of that model."
                )
            return champions[model]
        if not champions:
            raise RunNotFoundError(f"No champion under {where}: the first completed run becomes champion, or use 'rnnflow promote RUN_ID'.")
        if len(champions) > 1:
            raise RunNotFoundError(
                f"{where} holds champions of {len(champions)} models ({', '.join(champions)}): name one with --model NAME."
            )
        return next(iter(champions.values()))

    # ----- writing (hold lock())

    def write(self, model: str, pointer: dict[str, Any]) -> None:
        """Make pointer the champion of model, keeping every other model's (and migrating an old single pointer).

        (remote) On S3 the replace is conditional on the record read here being the one there (If-Match its
        ETag, If-None-Match when there was none): two runs cannot both win, even past a lock taken over.
        """
        champions = self.read_all()  # under the lock: the record as it is now, and its ETag for the conditional write
        legacy = champions.pop(LEGACY_MODEL, None) if model != LEGACY_MODEL else None
        if legacy is not None:
            # An old single pointer whose run's model cannot be read (its folder is gone) was the root's one champion:
            # the first promotion after it succeeds it, as it would have before models, and names it as previous.
            pointer = {**pointer, "previous_run_id": pointer.get("previous_run_id") or legacy["run_id"]}
        champions[model] = {**pointer, "model": model}
        record = {"format": RECORD_FORMAT, "models": dict(sorted(champions.items()))}
        if self.store.remote is None:
            write_json(self.file, record)
            return
        data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
        try:
            self.store.remote.write_bytes(CHAMPION_FILE, data, if_match=self._tag, if_absent=self._tag is None)
        except FileExistsError:
            raise ChampionError(
                f"The champion record {self.store.where(self.file)} changed while this run decided (another run was promoted at the same time): "
                "run 'rnnflow promote RUN_ID' to decide again."
            ) from None
        write_json(self.file, record)  # the mirror's copy, for anyone reading this folder

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive lock on <root>/champion.lock, across threads and processes; released when the holder dies."""
        path = self.lock_file
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a+")  # one open file description per holder: flock then excludes threads too
        except OSError as error:
            raise ArtifactsRootError(
                f"Artifacts root {self.store.root} is not writable ({path}: {error.strerror or error}): choose another with --artifacts or fix its permissions."
            ) from None
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                if self.store.remote is None:
                    yield
                else:
                    with self._remote_lock():
                        yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _remote_lock(self) -> Iterator[None]:
        """(remote) A lock object <root>/champion.lock, created only if absent, naming its owner and expiry;
        one left by a dead holder is taken over once expired, and so is one that is no lock (see held_lock)."""
        remote = self.store.remote
        assert remote is not None
        owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        deadline = time.monotonic() + REMOTE_LOCK_WAIT_SECONDS
        first_seen: dict[bytes, float] = {}  # each lock object as read, and when this process first read it
        while True:
            body = json.dumps({"owner": owner, "expires": time.time() + REMOTE_LOCK_SECONDS}).encode()
            try:
                remote.write_bytes(CHAMPION_LOCK, body, create=True)
                break
            except FileExistsError:
                held = remote.read_bytes(CHAMPION_LOCK)
                if not held:
                    continue
                holder, expires = held_lock(held, first_seen.setdefault(held, time.time()))
                if holder is None or expires < time.time():
                    self._take_over(held, holder)
                    continue
                if time.monotonic() > deadline:
                    raise ChampionError(
                        f"The champion lock {self.store.where(self.lock_file)} is held by {holder} and this promote waited "
                        f"{REMOTE_LOCK_WAIT_SECONDS:g} s: wait for that run to finish and promote again, or, if its process is gone, "
                        f"delete the lock object ({remove_command(self.store.where(self.lock_file))}); it is taken over as expired "
                        f"in {max(0.0, expires - time.time()):.0f} s."
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            held = remote.read_bytes(CHAMPION_LOCK)
            if held and owner.encode() in held:
                remote.delete(CHAMPION_LOCK)

    def _take_over(self, held: bytes, holder: str | None) -> None:
        """Delete an expired (or malformed) lock object, if it is still the one judged: another process may have
        taken it over and written its own meanwhile."""
        remote = self.store.remote
        assert remote is not None
        if remote.read_bytes(CHAMPION_LOCK) != held:
            return
        if holder is None:
            shown = held[:80].decode("utf-8", "replace")
            step_logger().warning(
                "The champion lock %s held %r, not a lock rnnflow writes ({\"owner\": text, \"expires\": seconds since the epoch}): "
                "taken over as expired.", self.store.where(self.lock_file), shown,
            )
        remote.delete(CHAMPION_LOCK)  # its holder is gone (or hung past the expiry), or it was never a holder's


def held_lock(held: bytes, first_seen: float) -> tuple[str | None, float]:
    """(owner, expiry to believe) of a lock object's bytes; (None, 0) for one that is not a lock.

    rnnflow writes its lock in one create-only put, so no holder of ours leaves a partial or other-shaped object:
    one that does not parse as {"owner": text, "expires": a finite number} protects no promotion and is taken over
    rather than blocking every promotion on the bucket until someone finds it (the champion record's own write is
    conditional on what was read, so a lock wrongly taken over cannot make two promotions both win). An expiry
    further ahead than a lock's lifetime is no rnnflow holder's either: it is believed only up to
    REMOTE_LOCK_SECONDS after this process first saw that lock.
    """
    try:
        lock = json.loads(held)
    except ValueError:
        return None, 0.0
    if not isinstance(lock, dict) or not isinstance(lock.get("owner"), str):
        return None, 0.0
    expires = lock.get("expires")
    if isinstance(expires, bool) or not isinstance(expires, (int, float)) or not math.isfinite(expires):
        return None, 0.0
    return lock["owner"], min(float(expires), first_seen + REMOTE_LOCK_SECONDS)


def remove_command(url: str) -> str:
    """The command that deletes one object of a URL root, as its store's own tool spells it."""
    tools = {"s3": "aws s3 rm", "gs": "gcloud storage rm"}
    scheme = url.split("://", 1)[0].lower()
    return f"{tools[scheme]} {url}" if scheme in tools else f"delete {url}"
