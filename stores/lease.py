"""The lock of a store in a bucket: a lease object, renewed while the run lives.

Object stores have no `flock`, and a killed run must not hold a store
forever. The lease object (`<prefix>/.lock`) names its holder and when the
lease ends:

- taken with a precondition: created only if absent, or replaced only over
  the very version read, once that one's lease has ended;
- renewed by a thread every third of its duration, each time over the version
  this holder wrote (so a holder whose lease was taken over cannot renew);
- fenced: before the version pointer is replaced, the holder reads the lease
  and publishes only if it is still the version it wrote and not ended
  (`check`), so a run whose lease was taken over cannot publish.

Expiry is judged on each machine's clock: keep clocks in sync, and the lease
duration (`PROFILE_IMPORT_LEASE_SECONDS`, default 60) well above their skew.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .base import StoreError, StoreLocked
from .buckets import ABSENT, Bucket, Precondition

ENV = "PROFILE_IMPORT_LEASE_SECONDS"
DEFAULT_SECONDS = 60.0
_POLL_SECONDS = 0.2


def duration() -> float:
    return float(os.environ.get(ENV, DEFAULT_SECONDS))


class Lease:
    def __init__(self, bucket: Bucket, key: str, what: str) -> None:
        self.bucket = bucket
        self.key = key
        self.what = what
        self.seconds = duration()
        self.owner = uuid.uuid4().hex
        self.token: Any = None
        self.lost: str | None = None
        self.fence = Fence(bucket, key, self.owner, what)
        self._guard = threading.Lock()
        self._stop = threading.Event()

    def _body(self) -> bytes:
        holder = {
            "owner": self.owner,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "expires": time.time() + self.seconds,
        }
        return json.dumps(holder).encode()

    def _try_take(self) -> dict[str, Any] | None:
        """Takes the lease if free or ended; else returns its holder."""
        try:
            data, token = self.bucket.get(self.key)
        except FileNotFoundError:
            expected: Any = ABSENT
        else:
            try:
                holder: dict[str, Any] = json.loads(data)
                expires = float(holder["expires"])
            except (ValueError, KeyError, TypeError):
                holder, expires = {}, 0.0  # unreadable: treated as ended
            if expires > time.time():
                return holder
            expected = token
        try:
            self.token = self.bucket.put(self.key, self._body(), expected)
        except Precondition:
            return {"owner": "?", "host": "another run", "pid": "?", "expires": 0}
        return None

    @contextmanager
    def held(self, timeout: float) -> Iterator[None]:
        deadline = time.monotonic() + timeout
        while (holder := self._try_take()) is not None:
            if time.monotonic() >= deadline:
                raise StoreLocked(
                    f"{self.what} is in use by another run ({_describe(holder)}); "
                    "try again when it has finished, or pass --lock-timeout SECONDS to wait"
                )
            time.sleep(_POLL_SECONDS)
        renewer = threading.Thread(target=self._renew, name="store-lease", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            self._stop.set()
            renewer.join()
            self._release()

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            with self._guard:
                if self.lost:
                    return
                try:
                    self.token = self.bucket.put(self.key, self._body(), self.token)
                except Precondition:
                    self.lost = "its lease was taken over by another run"
                    return
                except Exception:  # noqa: BLE001 - a blip: the next renewal retries
                    continue

    def _release(self) -> None:
        with self._guard:
            if self.lost:
                return
            try:
                _, token = self.bucket.get(self.key)
            except FileNotFoundError:
                return
            if token == self.token:
                self.bucket.delete(self.key, token)


class Fence:
    """Whether a run still holds its lease: checked right before its publish,
    possibly in another process (a pipeline worker), so it names the lease
    by its holder's unique id rather than by the renewing thread's state."""

    def __init__(self, bucket: Bucket, key: str, owner: str, what: str) -> None:
        self.bucket = bucket
        self.key = key
        self.owner = owner
        self.what = what

    def check(self) -> None:
        """Raises `StoreError` unless the lease is still this run's and not ended."""
        try:
            holder = json.loads(self.bucket.get(self.key)[0])
            owner, expires = holder.get("owner"), float(holder["expires"])
        except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError):
            owner, expires = None, 0.0
        if owner != self.owner:
            lost = "its lease was taken over by another run"
        elif expires <= time.time():
            lost = "its lease ended before the publish"
        else:
            return
        raise StoreError(f"{self.what}: {lost}; nothing was published")


def _describe(holder: dict[str, Any]) -> str:
    ends = holder.get("expires")
    when = (
        time.strftime("%H:%M:%S UTC", time.gmtime(float(ends)))
        if isinstance(ends, int | float) and ends
        else "unknown"
    )
    return f"pid {holder.get('pid')} on {holder.get('host')}, lease until {when}"
