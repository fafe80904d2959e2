"""The champion lock on a bucket (BucketStorage.exclusive): a lock object created only if absent, naming its owner
and expiry, held beside the local flock, so promotions on two machines take turns. One left by a dead holder is
taken over once expired, and so is one that is no lock (see held_lock)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import socket
import time
from typing import TYPE_CHECKING, Iterator

from tasks.logs import step_logger
from tasks.store.manifest import ChampionError

if TYPE_CHECKING:  # pragma: no cover
    from tasks.store.bucket import BucketStorage

REMOTE_LOCK_SECONDS = 300  # a champion lock object older than this is a dead holder's: taken over
REMOTE_LOCK_WAIT_SECONDS = 600  # how long a promote waits for another holder's lock object


@contextlib.contextmanager
def hold_lock_object(storage: "BucketStorage", key: str) -> Iterator[None]:
    """Create the lock object `key` (waiting for another holder's, taking over an expired one), release it after."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    deadline = time.monotonic() + REMOTE_LOCK_WAIT_SECONDS
    first_seen: dict[bytes, float] = {}  # each lock object as read, and when this process first read it
    where = storage.where(storage.root / key)
    while True:
        body = json.dumps({"owner": owner, "expires": time.time() + REMOTE_LOCK_SECONDS}).encode()
        try:
            storage.write_bytes(key, body, create=True)
            break
        except FileExistsError:
            held = storage.read_bytes(key)
            if not held:
                continue
            holder, expires = held_lock(held, first_seen.setdefault(held, time.time()))
            if holder is None or expires < time.time():
                _take_over(storage, key, held, holder)
                continue
            if time.monotonic() > deadline:
                raise ChampionError(
                    f"The champion lock {where} is held by {holder} and this promote waited "
                    f"{REMOTE_LOCK_WAIT_SECONDS:g} s: wait for that run to finish and promote again, or, if its process is gone, "
                    f"delete the lock object ({remove_command(where)}); it is taken over as expired "
                    f"in {max(0.0, expires - time.time()):.0f} s."
                ) from None
            time.sleep(0.2)
    try:
        yield
    finally:
        held = storage.read_bytes(key)
        if held and owner.encode() in held:
            storage.delete(key)


def _take_over(storage: "BucketStorage", key: str, held: bytes, holder: str | None) -> None:
    """Delete an expired (or malformed) lock object, if it is still the one judged: another process may have
    taken it over and written its own meanwhile."""
    if storage.read_bytes(key) != held:
        return
    if holder is None:
        shown = held[:80].decode("utf-8", "replace")
        step_logger().warning(
            "The champion lock %s held %r, not a lock rnnflow writes ({\"owner\": text, \"expires\": seconds since the epoch}): "
            "taken over as expired.", storage.where(storage.root / key), shown,
        )
    storage.delete(key)  # its holder is gone (or hung past the expiry), or it was never a holder's


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
