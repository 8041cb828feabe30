"""Named locks shared by every thread, process (and machine, on Redis and PostgreSQL) using a store.

A lock is a record ``lock:<name>`` in the store's lock namespace, created with set-if-absent
and a ttl, holding a random token. Only the holder of that token can release or extend it
(delete-if-equal, compare-and-swap), so a holder whose lock expired can never release the next
holder's lock (the "lock no longer owned" bugs of dogpile.cache and hand-written Redis locks).
A holder that dies leaves a lock that expires after its ttl.
"""

from __future__ import annotations

import threading
from typing import Any

from . import flows
from .errors import InvalidArgumentError, LockNotOwnedError, LockTimeout

__all__ = ["Lock", "check_timeout"]

_UNSET: Any = object()


def check_timeout(timeout: Any, setting: str = "timeout") -> float | None:
    """``timeout`` as seconds (None: wait as long as it takes)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise InvalidArgumentError(f"{setting}: must be None or seconds >= 0, got {timeout!r}")
    return float(timeout)


class Lock:
    """Mutual exclusion by name: ``with store.lock("report", ttl=30, timeout=10): ...``.

    Args:
        ttl: seconds (or a duration string) after which the lock expires by itself: bounds
            how long a crashed holder blocks the others. Keep the critical section shorter,
            or call :meth:`extend`.
        timeout: seconds ``with`` / :meth:`acquire` wait before :class:`LockTimeout`
            (None: as long as it takes; 0: one try).

    Not re-entrant. The token is kept per thread, so one ``Lock`` object may be shared by
    threads like a ``threading.Lock``; each acquisition is its own.
    """

    def __init__(self, store: Any, name: str, ttl: float, timeout: float | None) -> None:
        self.store = store
        self.name = name
        self.ttl = ttl
        self.timeout = timeout
        self._key = "lock:" + name
        store.meta.check_key(self._key)
        self._local = threading.local()

    # Each step is a flow (see kvstore.flows), so AsyncLock runs the very same steps awaited.

    def _acquiring(self, blocking: bool, timeout: Any) -> flows.Flow:
        if self._token is not None:
            raise InvalidArgumentError(f"lock {self.name!r} is already held by this "
                                       f"{self._holder} (locks are not re-entrant)")
        wait = self.timeout if timeout is _UNSET else check_timeout(timeout)
        token = flows.new_token()
        if (yield from flows.acquire(self._key, token, self.ttl, wait, blocking)):
            self._token = token
            return True
        return False

    def _releasing(self) -> flows.Flow:
        token = self._token
        if token is None:
            raise LockNotOwnedError(f"lock {self.name!r} is not held by this {self._holder}")
        self._token = None
        if not (yield from flows.release(self._key, token)):
            raise LockNotOwnedError(f"lock {self.name!r} expired (ttl {self.ttl:g}s) before it "
                                    "was released; another holder may have had it")

    def _extending(self, ttl: Any) -> flows.Flow:
        token = self._token
        seconds = self.ttl if ttl is None else self.store.resolve_ttl(ttl)
        if token is None or not (yield from flows.extend(self._key, token, seconds)):
            raise LockNotOwnedError(f"lock {self.name!r} is not held (or expired); cannot extend")

    def _owned(self) -> flows.Flow:
        token = self._token
        return token is not None and (yield flows.Call(flows.META, "raw_get", (self._key,))) == token

    def _timed_out(self) -> LockTimeout:
        return LockTimeout(f"lock {self.name!r} not acquired within {self.timeout:g}s")

    # -- the synchronous face --------------------------------------------------------------------

    _holder = "thread"

    @property
    def _token(self) -> bytes | None:
        return getattr(self._local, "token", None)

    @_token.setter
    def _token(self, token: bytes | None) -> None:
        self._local.token = token

    def acquire(self, blocking: bool = True, timeout: float | None = _UNSET) -> bool:
        """Take the lock; True when taken. ``blocking=False`` tries once; ``timeout`` overrides
        the lock's own."""
        return bool(flows.run(self.store, self._acquiring(blocking, timeout)))

    def release(self) -> None:
        """Release the lock. Raises :class:`LockNotOwnedError` when it had expired and may have
        been taken by someone else meanwhile (it is then left alone)."""
        flows.run(self.store, self._releasing())

    def extend(self, ttl: float | None = None) -> None:
        """Make the held lock expire ``ttl`` seconds from now (default: its own ttl)."""
        flows.run(self.store, self._extending(ttl))

    def locked(self) -> bool:
        """True when anyone holds the lock now."""
        return bool(flows.run(self.store, flows.lookup(self._key)))

    @property
    def owned(self) -> bool:
        """True when this thread holds the lock and it has not expired."""
        return bool(flows.run(self.store, self._owned()))

    def __enter__(self) -> "Lock":
        if not self.acquire():
            raise self._timed_out()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.release()
        except LockNotOwnedError:
            if exc_type is None:  # never hide the block's own exception behind this one
                raise

    def __repr__(self) -> str:
        return f"Lock({self.name!r}, ttl={self.ttl:g}, owned={self._token is not None})"
