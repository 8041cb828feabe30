"""Named locks shared by every thread, process (and machine, on Redis and PostgreSQL) using a store.

The lock's operations are written once, in :mod:`kvstore.front.lock_async` (``lock_sync`` is
generated from it); this module is what only the synchronous front has: the token kept per
thread.
"""

from __future__ import annotations

import threading
from typing import Any

from .front.lock_sync import LockOps
from .rules import check_timeout

__all__ = ["Lock", "check_timeout"]


class Lock(LockOps):
    """Mutual exclusion by name: ``with store.lock("report", ttl=30, timeout=10): ...`` (see
    :class:`~kvstore.front.lock_sync.LockOps` for ``ttl`` and ``timeout``).

    Not re-entrant. The token is kept per thread, so one ``Lock`` object may be shared by
    threads like a ``threading.Lock``; each acquisition is its own.
    """

    _holder = "thread"

    def __init__(self, store: Any, name: str, ttl: float, timeout: float | None) -> None:
        super().__init__(store, name, ttl, timeout)
        self._local = threading.local()

    @property
    def _token(self) -> bytes | None:
        return getattr(self._local, "token", None)

    @_token.setter
    def _token(self, token: bytes | None) -> None:
        self._local.token = token
