# Generated from kvstore/front/lock_async.py by tools/async_to_sync.py: do not edit, edit that file.
"""A named lock's operations, written once (the asyncio source of ``lock_sync.py``).

A lock is a record ``lock:<name>`` in the store's lock namespace (``store.meta``), created with
set-if-absent (``raw_add``) and a ttl, holding a random token. Only the holder of that token can
release or extend it (delete-if-equal, compare-and-swap: ``raw_cas``), so a holder whose lock
expired can never release the next holder's lock (the "lock no longer owned" bugs of
dogpile.cache and hand-written Redis locks). A holder that dies leaves a lock that expires
after its ttl.

Who holds an acquisition is the front's business: :class:`~kvstore.Lock` keeps the token per
thread, :class:`~kvstore.aio.AsyncLock` per task (their ``_token`` property).
"""

from __future__ import annotations

import time
from typing import Any

from .. import observe
from .._marks import MISSING
from ..errors import InvalidArgumentError, LockNotOwnedError, LockTimeout
from ..rules import UNSET, check_timeout, new_token, poll

__all__ = ["LockOps"]


class LockOps:
    """Mutual exclusion by name: ``with store.lock("report", ttl=30, timeout=10): ...``.

    Args:
        ttl: seconds (or a duration string) after which the lock expires by itself: bounds
            how long a crashed holder blocks the others. Keep the critical section shorter,
            or call :meth:`extend`.
        timeout: seconds ``with`` / :meth:`acquire` wait before :class:`LockTimeout`
            (None: as long as it takes; 0: one try).

    Not re-entrant.
    """

    #: Who holds an acquisition, for error messages ("thread", "task").
    _holder = "holder"
    _token: bytes | None  # the current holder's token: a property of each front's class

    def __init__(self, store: Any, name: str, ttl: float, timeout: float | None) -> None:
        self.store = store
        self.name = name
        self.ttl = ttl
        self.timeout = timeout
        self._key = "lock:" + name
        store.meta.check_key(self._key)

    def acquire(self, blocking: bool = True, timeout: float | None = UNSET) -> bool:
        """Take the lock; True when taken. ``blocking=False`` tries once; ``timeout`` overrides
        the lock's own."""
        if self._token is not None:
            raise InvalidArgumentError(f"lock {self.name!r} is already held by this "
                                       f"{self._holder} (locks are not re-entrant)")
        wait = self.timeout if timeout is UNSET else check_timeout(timeout)
        meta, token = self.store.meta, new_token()
        deadline = None if wait is None else time.monotonic() + wait
        attempt = 0
        while True:
            if meta.raw_add(self._key, token, self.ttl):
                self._token = token
                return True
            if not blocking:
                return False
            pause = poll(attempt)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                pause = min(pause, left)
            time.sleep(pause)
            attempt += 1

    def release(self) -> None:
        """Release the lock. Raises :class:`LockNotOwnedError` when it had expired and may have
        been taken by someone else meanwhile (it is then left alone)."""
        token = self._token
        if token is None:
            raise LockNotOwnedError(f"lock {self.name!r} is not held by this {self._holder}")
        self._token = None
        if not self.store.meta.raw_cas(self._key, token, MISSING, None):
            observe.signal("lock_expired", lock=self.name, ttl=self.ttl, action="released")
            raise LockNotOwnedError(f"lock {self.name!r} expired (ttl {self.ttl:g}s) before it "
                                    "was released; another holder may have had it")

    def extend(self, ttl: float | None = None) -> None:
        """Make the held lock expire ``ttl`` seconds from now (default: its own ttl)."""
        token = self._token
        seconds = self.ttl if ttl is None else self.store.resolve_ttl(ttl)
        if token is None or not self.store.meta.raw_cas(self._key, token, token, seconds):
            if token is not None:
                observe.signal("lock_expired", lock=self.name, ttl=self.ttl, action="extended")
            raise LockNotOwnedError(f"lock {self.name!r} is not held (or expired); cannot extend")

    def locked(self) -> bool:
        """True when anyone holds the lock now."""
        return self.store.meta.raw_get(self._key) is not MISSING

    @property
    def owned(self) -> bool:
        """True when this holder holds the lock and it has not expired."""
        token = self._token
        return token is not None and self.store.meta.raw_get(self._key) == token

    def __enter__(self) -> Any:
        if not self.acquire():
            raise LockTimeout(f"lock {self.name!r} not acquired within {self.timeout:g}s")
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.release()
        except Exception:
            if exc_type is None:  # never hide the block's own exception behind this one
                raise

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, ttl={self.ttl:g}, "
                f"owned={self._token is not None})")
