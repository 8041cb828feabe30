"""What only asyncio has of locks and logs: a lock's token kept per task (re-exported by
:mod:`kvstore.aio`).

The operations are the front's (:mod:`kvstore.front.lock_async`, :mod:`kvstore.front.log_async`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from .front.lock_async import AsyncLockOps
from .front.log_async import AsyncLogOps

__all__ = ["AsyncLock", "AsyncLog"]


class AsyncLock(AsyncLockOps):
    """A :class:`~kvstore.Lock` for asyncio: ``async with store.lock(name): ...``, and
    ``await lock.acquire()`` / ``release()`` / ``extend()`` / ``locked()`` / ``owned()``.
    Held per task: another task of the same loop waits like another process would."""

    _holder = "task"

    def __init__(self, store: Any, name: str, ttl: float, timeout: float | None) -> None:
        super().__init__(store, name, ttl, timeout)
        self._tokens: dict[Any, bytes] = {}

    def _owner(self) -> Any:
        """Who holds an acquisition: the current task."""
        return asyncio.current_task()

    @property
    def _token(self) -> bytes | None:
        return self._tokens.get(self._owner())

    @_token.setter
    def _token(self, token: bytes | None) -> None:
        task = self._owner()
        if token is None:
            self._tokens.pop(task, None)
        else:
            self._tokens[task] = token

    def __enter__(self) -> Any:
        raise TypeError("an AsyncLock is used with 'async with', not 'with'")


class AsyncLog(AsyncLogOps):
    """An append-only log, awaited: ``await log.append(record)``, ``await log.read(after,
    limit)``, ``await log.length()`` (``len()`` cannot be awaited), ``await log.delete()``,
    ``async for seq, record in log``."""
