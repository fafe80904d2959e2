"""Serving a model's champion: load it once, follow champion.json, swap to a new champion without a restart.

`rnnflow serve-model` (flows/serve_model.py) answers each request with ChampionServer.current(). That call is cheap:
at most every serve.check_seconds it starts one background check that reads the champion record (one small read,
local or from the bucket) and compares its run id with the one being served. Only when it changed is the new run's
model loaded, in that background thread, while requests keep being answered by the old one; the swap is one
reference assignment. A champion whose run cannot be loaded (files missing or damaged, a next_token run) leaves the
old model serving, and `problem` says which run failed and why, for /health.

Predictions go through tasks/predict.py (the run's own Vocabulary.encode_raw, then train/model.keras), the very
path `rnnflow predict` and training use.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from tasks.errors import RnnflowError
from tasks.predict import PredictionInputError, Predictor, load_predictor
from tasks.store import ArtifactsRootError, ArtifactStore, RunError


class ServingError(RnnflowError):
    """Nothing to serve (no champion, or one that does not load) when the server starts: one sentence."""


@dataclass(frozen=True)
class Served:
    """The model being served: whose champion, which run, its predictor, and when it was loaded."""

    model: str
    run_id: str
    predictor: Predictor
    loaded_at: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ChampionServer:
    """One model's champion, loaded, and the check that keeps it current."""

    def __init__(self, store: ArtifactStore, model: str | None, check_seconds: float,
                 loader: Callable[[Any], Predictor] = load_predictor):
        self.store = store
        self.model = model  # fixed at start(): a root that later gains a second model keeps serving this one
        self.check_seconds = check_seconds
        self.loader = loader
        self.served: Served | None = None
        self.problem: dict[str, str] | None = None  # the last check's trouble: {"run_id"?, "error"}
        self.checked_at: str | None = None
        self._last_check = 0.0
        self._checking = threading.Lock()  # one check at a time; requests never wait for it
        self._failed_run: str | None = None  # a champion that failed to load is not loaded again until the pointer moves

    # ----- starting

    def start(self) -> Served:
        """Load the champion now; ServingError (one sentence) when there is none or it cannot be loaded."""
        try:
            pointer = self.store.champions.choose(self.model)
            self.model = pointer["model"]
            self.served = self._load(pointer["run_id"])
        except (RunError, ArtifactsRootError, PredictionInputError, FileNotFoundError) as error:
            raise ServingError(str(error)) from None
        self.checked_at, self._last_check = _now(), time.monotonic()
        return self.served

    def _load(self, run_id: str) -> Served:
        folder = self.store.resolve_run(run_id)
        return Served(model=str(self.model), run_id=run_id, predictor=self.loader(folder), loaded_at=_now())

    # ----- each request

    def current(self) -> Served:
        """The model to answer with now; starts a background check when the last one is check_seconds old."""
        assert self.served is not None, "start() first"
        if time.monotonic() - self._last_check >= self.check_seconds and self._checking.acquire(blocking=False):
            self._last_check = time.monotonic()
            threading.Thread(target=self._check_and_release, name="champion-check", daemon=True).start()
        return self.served

    def _check_and_release(self) -> None:
        try:
            self.check()
        finally:
            self._last_check = time.monotonic()  # the next check counts from the end of this one (a load can be slow)
            self._checking.release()

    def check(self) -> bool:
        """Read the champion pointer; load and swap in a new champion. True when the served model changed."""
        served = self.served
        assert served is not None
        self.checked_at = _now()
        try:
            run_id = self.store.champions.choose(self.model)["run_id"]
        except (RunError, ArtifactsRootError) as error:
            self.problem = {"error": f"{error} (still serving {served.run_id})"}
            return False
        if run_id == served.run_id:
            self.problem, self._failed_run = None, None
            return False
        if run_id == self._failed_run:
            return False
        try:
            loaded = self._load(run_id)
        except Exception as error:  # noqa: BLE001 - whatever a bad run raises, the old model keeps serving
            self._failed_run = run_id
            text = " ".join(str(error).split()) or type(error).__name__
            self.problem = {"run_id": run_id, "error": f"champion {run_id} could not be loaded ({text}): still serving {served.run_id}"}
            return False
        self.served, self.problem, self._failed_run = loaded, None, None
        return True

    def health(self) -> dict[str, Any]:
        """What GET /health answers: the champion being served, and any trouble following champion.json."""
        served = self.current()
        return {
            "status": "ok" if self.problem is None else "degraded",
            "model": served.model,
            "run_id": served.run_id,
            "labels": served.predictor.labels,
            "loaded_at": served.loaded_at,
            "checked_at": self.checked_at,
            "check_seconds": self.check_seconds,
            "artifacts": self.store.location,
            "problem": self.problem,
        }
