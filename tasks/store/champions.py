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

The record is read, compared and replaced under lock() (an flock, and the storage's exclusive(): for a bucket
a lock object, tasks/store/lock_object.py), and replaced whole through the storage interface (a folder:
temporary file + rename; S3: a write conditional on the ETag read under the lock), so readers see the old
record or the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from tasks.store.files import read_json
from tasks.store.manifest import MANIFEST_FILE, ArtifactsRootError, BadRunIdError, ChampionError, RunError, RunNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from tasks.store import ArtifactStore

CHAMPION_FILE = "champion.json"
CHAMPION_LOCK = "champion.lock"  # <root>/champion.lock: held while the record is read, compared and replaced
RECORD_FORMAT = 2
LEGACY_MODEL = "legacy"  # the model an old single pointer migrates to when its run's configuration cannot be read


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
        self._tag: str | None = None  # the version tag (a bucket's ETag) of champion.json as read_all last read it

    @property
    def file(self) -> Path:
        return self.store.root / CHAMPION_FILE

    @property
    def lock_file(self) -> Path:
        return self.store.root / CHAMPION_LOCK

    # ----- reading

    def _raw(self) -> tuple[Any, str] | None:
        """The parsed file and the name messages use for it; None when there is none."""
        where = self.store.where(self.file)
        try:
            data, self._tag = self.store.storage.read_with_tag(CHAMPION_FILE)
        except OSError:  # a folder root's file that cannot be read (a bucket's calls raise ArtifactsRootError)
            raise ChampionError(f"{where} is not valid JSON: delete it and promote a run with 'rnnflow promote RUN_ID'.") from None
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
            self.store.storage.pull_manifest(folder)  # raises for a damaged manifest in the bucket
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

        The replace is conditional on the record read here being the one there where the storage can tell (a
        bucket: If-Match its ETag, If-None-Match when there was none): two runs cannot both win, even past a lock
        taken over; a folder's writers take turns under the flock.
        """
        champions = self.read_all()  # under the lock: the record as it is now, and its ETag for the conditional write
        legacy = champions.pop(LEGACY_MODEL, None) if model != LEGACY_MODEL else None
        if legacy is not None:
            # An old single pointer whose run's model cannot be read (its folder is gone) was the root's one champion:
            # the first promotion after it succeeds it, as it would have before models, and names it as previous.
            pointer = {**pointer, "previous_run_id": pointer.get("previous_run_id") or legacy["run_id"]}
        champions[model] = {**pointer, "model": model}
        record = {"format": RECORD_FORMAT, "models": dict(sorted(champions.items()))}
        data = (json.dumps(record, indent=2, default=str) + "\n").encode()
        try:
            self.store.storage.replace(CHAMPION_FILE, data, self._tag)
        except FileExistsError:
            raise ChampionError(
                f"The champion record {self.store.where(self.file)} changed while this run decided (another run was promoted at the same time): "
                "run 'rnnflow promote RUN_ID' to decide again."
            ) from None

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
                with self.store.storage.exclusive(CHAMPION_LOCK):  # a bucket: also a lock object other machines see
                    yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
