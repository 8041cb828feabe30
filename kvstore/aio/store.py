"""The asyncio store: the store's operations awaited, over awaitable byte-level drivers.

An :class:`AsyncStore` is :class:`~kvstore.front.store_async.AsyncStoreOps` (every public
operation, written once for both fronts) bound to the synchronous store of the same data (its
``sync`` twin), which supplies every rule: key and TTL checks, encoding, the lock namespace's
names. Only the I/O is awaited, by a driver: natively on Redis
(:class:`~kvstore.stores.redis.aio.AsyncRedisStore`) and PostgreSQL, in a bounded, batching thread pool
for SQLite and files (:class:`ThreadStore`), inline for memory (:class:`InlineStore`).
:func:`arun` drives a :mod:`kvstore.flows` flow (the Django adapter's) on an async store.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import inspect
from concurrent.futures import Executor
from typing import Any, AsyncIterator, Callable

from . import paging
from ..flows import DATA, Compute, Flow
from ..front.store_async import AsyncStoreOps
from ..store import PersistenceStore
from .lock import AsyncLock, AsyncLog

__all__ = ["AsyncStore", "ThreadStore", "InlineStore", "AsyncLock", "AsyncLog", "arun"]

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
        self._twin(sync)

    def _twin(self, sync: PersistenceStore) -> None:
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

    async def _key_pages(self, prefix: str, start_after: str | None) -> AsyncIterator[list[str]]:
        """Sorted pages of the live keys with ``prefix`` after ``start_after``. Stores that
        page by key override this; this default lists the keys once (Redis SCAN has no order)."""
        found = await self.raw_keys(prefix)
        start = 0 if start_after is None else bisect.bisect_right(found, start_after)
        for i in range(start, len(found), paging.PAGE):
            yield found[i:i + paging.PAGE]

    # Logs run the twin's own operations in a worker thread unless a store does better.
    async def raw_log_append(self, name: str, blob: Any) -> int:
        return await asyncio.to_thread(self.sync.raw_log_append, name, blob)

    async def raw_log_read(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        return await asyncio.to_thread(self.sync.raw_log_read, name, after, limit)

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


_BYTE_LEVEL = ("raw_get", "raw_set", "raw_delete", "raw_exists", "raw_ttl", "raw_incr", "raw_clear", "raw_add", "raw_cas",
               "raw_touch", "raw_get_many", "raw_set_many", "raw_delete_many", "raw_log_append", "raw_log_read",
               "raw_log_len", "raw_log_delete", "raw_log_names")


class ThreadStore(AsyncStore):
    """A synchronous store's byte-level operations run in a thread pool, so the event loop never
    waits on a disk or a socket (SQLite, files, PostgreSQL, the Redis fallback store).

    Calls are batched: operations requested while a worker is busy queue up and the next
    worker runs them together, handing all results back to the loop at once. A thread hop
    costs more than a SQLite read; 64 tasks reading then cost a few hops, not 64. At most
    ``concurrency`` workers serve one store at a time.
    """

    def __init__(self, sync: PersistenceStore, executor: Executor | None = None,
                 concurrency: int = 4) -> None:
        super().__init__(sync)
        self._executor = executor
        self._concurrency = concurrency
        self._queue: collections.deque[tuple[Callable[..., Any], tuple[Any, ...],
                                             asyncio.Future[Any]]] = collections.deque()
        self._workers = 0  # changed on the loop's thread only

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((fn, args, future))
        if self._workers < self._concurrency:
            self._start(loop)
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._workers += 1
        loop.run_in_executor(self._executor, self._work, loop)

    def _work(self, loop: asyncio.AbstractEventLoop) -> None:
        """In a worker thread: run what is queued, in batches, until the queue is empty."""
        queue = self._queue
        while True:
            batch: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]] = []
            while queue and len(batch) < 256:
                try:
                    batch.append(queue.popleft())
                except IndexError:  # another worker took it
                    break
            if not batch:
                break
            done: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
            for fn, args, future in batch:
                try:
                    done.append((future, fn(*args), None))
                except BaseException as exc:  # handed to the awaiting task
                    done.append((future, None, exc))
            loop.call_soon_threadsafe(_settle, done)
        loop.call_soon_threadsafe(self._stopped, loop)

    def _stopped(self, loop: asyncio.AbstractEventLoop) -> None:
        self._workers -= 1
        if self._queue and self._workers < self._concurrency:  # queued as this one stopped
            self._start(loop)

    async def raw_keys(self, prefix: str) -> list[str]:
        return await self._run(lambda: sorted(self.sync.raw_keys(prefix)))

    async def _key_pages(self, prefix: str, start_after: str | None) -> AsyncIterator[list[str]]:
        # The twin's own key iterator, resumed a page per thread hop: SQLite and PostgreSQL
        # then run one short ordered query per page, as the synchronous keys() does.
        sync = self.sync
        found = await self._run(lambda: sync.raw_keys(prefix) if start_after is None
                                else sync.raw_keys_after(prefix, start_after))
        while True:
            page = await self._run(paging.take_page, found)
            if page:
                yield page
            if len(page) < paging.PAGE:
                return

    def open_meta(self) -> AsyncStore:
        return type(self)(self.sync.meta, self._executor, self._concurrency)


def _settle(done: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, exc in done:
        if future.cancelled():
            continue
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)


def _threaded(name: str) -> Any:
    async def call(self: ThreadStore, *args: Any) -> Any:
        return await self._run(getattr(self.sync, name), *args)

    call.__name__ = name
    return call


for _name in _BYTE_LEVEL:
    setattr(ThreadStore, _name, _threaded(_name))


class InlineStore(ThreadStore):
    """A :class:`~kvstore.MemoryStore`: its operations never wait on I/O, so they run on the
    event loop itself (a thread hop would cost more than the operation)."""

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)
