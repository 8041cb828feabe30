"""The asyncio store, the base of every async driver: the store's operations awaited.

An :class:`AsyncStore` is :class:`~kvstore.front.store_async.AsyncStoreOps` (every public
operation, written once for both fronts) bound to the synchronous store of the same data (its
``sync`` twin), which supplies every rule: key and TTL checks, encoding, the lock namespace's
names. Only the I/O is awaited, by a driver: natively on Redis
(:class:`~kvstore.stores.redis.aio.AsyncRedisStore`) and PostgreSQL, in a bounded, batching thread pool
for SQLite and files (:class:`~kvstore.aio.ThreadStore`), inline for memory
(:class:`~kvstore.aio.InlineStore`). :func:`arun` drives a :mod:`kvstore.flows` flow (the Django
adapter's, the Redis fallback's) on an async store. :class:`~kvstore.alocks.AsyncLock` and
:class:`~kvstore.alocks.AsyncLog` (re-exported) are what only asyncio has of locks and logs.

This module sits below the backends (their async drivers subclass :class:`AsyncStore`) and
below :mod:`kvstore.aio`, which adds the thread and inline drivers and the async manager.
"""

from __future__ import annotations

import asyncio
import bisect
import inspect
from typing import Any, AsyncIterator

from . import paging
from .flows import DATA, Compute, Flow
from .alocks import AsyncLock, AsyncLog
from .front.store_async import AsyncStoreOps
from .store import PersistenceStore

__all__ = ["AsyncStore", "AsyncLock", "AsyncLog", "arun", "RULES"]

#: The synchronous twin's rules, bound on the async store (one call less on every operation).
RULES = ("check_key", "resolve_ttl", "encode", "decode", "check_prefix", "check_amount",
         "checked_keys", "encoded_items", "decode_many", "encode_record", "decode_record")


async def arun(store: "AsyncStore", flow: Flow) -> Any:
    """Drive ``flow`` (see :mod:`kvstore.flows`) against ``store``, awaiting each call."""
    send: Any = None
    failure: BaseException | None = None
    while True:
        try:
            request = flow.throw(failure) if failure is not None else flow.send(send)
        except StopIteration as stop:
            return stop.value
        failure = None
        try:
            if type(request) is Compute:
                send = request.fn()
                if inspect.isawaitable(send):
                    send = await send
            else:
                target = store if request.space == DATA else store.meta
                send = await getattr(target, request.method)(*request.args)
        except BaseException as exc:  # thrown into the flow: its finally blocks still run
            failure = exc


class AsyncStore(AsyncStoreOps):
    """The store interface, every I/O method a coroutine. See :class:`~kvstore.PersistenceStore`
    for the semantics: they are the same, on the same data. A driver implements the awaitable
    ``raw_*`` methods below (the backend contract's, see :mod:`kvstore.backend`)."""

    def __init__(self, sync: PersistenceStore) -> None:
        self.take_twin(sync)

    def take_twin(self, sync: PersistenceStore) -> None:
        """Take ``sync`` as the synchronous twin (also for a copy made for the lock namespace)."""
        self.sync = sync
        self._meta_store: AsyncStore | None = None
        for name in RULES:
            setattr(self, name, getattr(sync, name))

    @property
    def ttl_default(self) -> float | None:  # type: ignore[override]
        return self.sync.ttl_default

    @property
    def serializer(self) -> Any:
        return self.sync.serializer

    @property
    def meta(self) -> "AsyncStore":
        if self._meta_store is None:
            self._meta_store = self.open_meta()
        return self._meta_store

    async def _key_pages(self, prefix: str, start_after: str | None, reverse: bool = False,
                         limit: int | None = None) -> AsyncIterator[list[str]]:
        """Sorted pages of the live keys with ``prefix`` after ``start_after`` (``reverse``:
        descending, before it; ``limit``: how many the caller takes at most). Stores that page
        by key override this; this default lists the keys once (Redis SCAN has no order)."""
        found = await self.raw_keys(prefix)
        if reverse:
            end = len(found) if start_after is None else bisect.bisect_left(found, start_after)
            found = found[end - 1::-1] if end else []
            start_after = None
        start = 0 if start_after is None else bisect.bisect_right(found, start_after)
        for i in range(start, len(found), paging.PAGE):
            yield found[i:i + paging.PAGE]

    # Logs run the twin's own operations in a worker thread unless a store does better.
    async def raw_log_append(self, name: str, blob: Any) -> int:
        return await asyncio.to_thread(self.sync.raw_log_append, name, blob)

    async def raw_log_read(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        return await asyncio.to_thread(self.sync.raw_log_read, name, after, limit)

    async def raw_log_read_desc(self, name: str, after: int, limit: int | None
                                ) -> list[tuple[int, Any]]:
        return await asyncio.to_thread(self.sync.raw_log_read_desc, name, after, limit)

    async def raw_log_len(self, name: str) -> int:
        return await asyncio.to_thread(self.sync.raw_log_len, name)

    async def raw_log_delete(self, name: str) -> bool:
        return await asyncio.to_thread(self.sync.raw_log_delete, name)

    async def raw_log_names(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self.sync.raw_log_names, prefix)

    async def close(self) -> None:
        """Close the asynchronous connections (the synchronous twin is closed by its owner)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.sync!r})"

    # -- what each async driver implements: the byte-level operations, awaited --------------------

    async def raw_get(self, key: str) -> Any: raise NotImplementedError
    async def raw_set(self, key: str, blob: Any, ttl: float | None) -> None: raise NotImplementedError
    async def raw_delete(self, key: str) -> bool: raise NotImplementedError
    async def raw_exists(self, key: str) -> bool: raise NotImplementedError
    async def raw_keys(self, prefix: str) -> list[str]: raise NotImplementedError
    async def raw_ttl(self, key: str) -> float | None: raise NotImplementedError
    async def raw_incr(self, key: str, amount: int, ttl: float | None) -> int: raise NotImplementedError
    async def raw_clear(self, prefix: str) -> int: raise NotImplementedError
    async def raw_add(self, key: str, blob: Any, ttl: float | None) -> bool: raise NotImplementedError
    async def raw_cas(self, key: str, expected: Any, new: Any, ttl: Any) -> bool: raise NotImplementedError
    async def raw_touch(self, key: str, ttl: float | None) -> bool: raise NotImplementedError
    async def raw_get_many(self, keys: list[str]) -> dict[str, Any]: raise NotImplementedError
    async def raw_set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None: raise NotImplementedError
    async def raw_delete_many(self, keys: list[str]) -> int: raise NotImplementedError
    def open_meta(self) -> "AsyncStore": raise NotImplementedError
