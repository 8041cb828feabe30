"""The asyncio drivers of stores without an asyncio client of their own: :class:`ThreadStore`
(a synchronous store's byte-level calls in a bounded, batching thread pool: SQLite, files, a
third party's store) and :class:`InlineStore` (on the loop itself: memory). Their base,
:class:`~kvstore.astore.AsyncStore`, and the per-task lock and log live in :mod:`kvstore.astore`
(re-exported here).
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import Executor
from typing import Any, AsyncIterator, Awaitable, Callable

from .. import paging
from ..astore import AsyncLock, AsyncLog, AsyncStore, arun
from ..store import MISSING, PersistenceStore

__all__ = ["AsyncStore", "ThreadStore", "InlineStore", "AsyncLock", "AsyncLog", "arun"]


_BYTE_LEVEL = ("raw_set", "raw_delete", "raw_exists", "raw_ttl", "raw_incr", "raw_clear", "raw_add", "raw_cas",
               "raw_touch", "raw_get_many", "raw_set_many", "raw_delete_many", "raw_log_append", "raw_log_read", "raw_log_read_desc",
               "raw_log_len", "raw_log_delete", "raw_log_names")


#: Seconds an idle :class:`ThreadStore` worker keeps looking for more calls before it stops.
LINGER = 0.002
_NAP = 0.0002


class ThreadStore(AsyncStore):
    """A synchronous store's byte-level operations run in a thread pool, so the event loop never
    waits on a disk or a socket (SQLite, files, PostgreSQL, the Redis fallback store).

    Calls are batched: operations requested while a worker is busy queue up and the next
    worker runs them together, handing all results back to the loop at once. A thread hop
    costs more than a SQLite read; 64 tasks reading then cost a few hops, not 64. At most
    ``concurrency`` workers serve one store at a time. A worker that finds the queue empty looks
    again a few times over :data:`LINGER` seconds before it gives its thread back, so a steady
    stream of calls is not served by a new executor job every few calls. Reads queued
    together are made together: one ``raw_get_many`` (one query) answers the batch's
    ``raw_get`` calls; they were all waiting at once, so any one instant serves them all.
    """

    def __init__(self, sync: PersistenceStore, executor: Executor | None = None,
                 concurrency: int = 4) -> None:
        super().__init__(sync)
        self._executor = executor
        self._concurrency = concurrency
        self._queue: collections.deque[tuple[Callable[..., Any], tuple[Any, ...],
                                             asyncio.Future[Any]]] = collections.deque()
        self._workers = 0  # changed on the loop's thread only
        self._read = self._read_one  # one bound method, so that _work knows a read by identity

    def _read_one(self, key: str) -> Any:
        return self.sync.raw_get(key)

    def raw_get(self, key: str) -> Awaitable[Any]:  # type: ignore[override]  # awaited
        return self._run(self._read, key)

    def _run(self, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        """The future of ``fn(*args)``, run by a worker (a future, not a coroutine: one
        coroutine less to step through on every call)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((fn, args, future))
        if self._workers < self._concurrency:
            self._start(loop)
        return future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._workers += 1
        loop.run_in_executor(self._executor, self._work, loop)

    def _work(self, loop: asyncio.AbstractEventLoop) -> None:
        """In a worker thread: run what is queued, in batches, until the queue is empty."""
        queue = self._queue
        idle = 0.0
        while True:
            batch: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]] = []
            while queue and len(batch) < 256:
                try:
                    batch.append(queue.popleft())
                except IndexError:  # another worker took it
                    break
            if not batch:
                if idle >= LINGER:
                    break
                time.sleep(_NAP)  # the GIL is free meanwhile: the loop queues more
                idle += _NAP
                continue
            idle = 0.0
            done: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
            read = self._read
            if sum(fn is read for fn, _, _ in batch) > 1:
                batch = self._read_together(batch, done)
            for fn, args, future in batch:
                try:
                    done.append((future, fn(*args), None))
                except BaseException as exc:  # handed to the awaiting task
                    done.append((future, None, exc))
            loop.call_soon_threadsafe(_settle, done)
        loop.call_soon_threadsafe(self._stopped, loop)

    def _read_together(self, batch: list[Any], done: list[Any]) -> list[Any]:
        """Answer the batch's reads with one ``raw_get_many`` (into ``done``); the rest of the
        batch is returned. A failure leaves the reads in the batch: each is then made alone and
        gets its own result or error."""
        read = self._read
        reads = [(args[0], future) for fn, args, future in batch if fn is read]
        try:
            found = self.sync.raw_get_many(list(dict.fromkeys(key for key, _ in reads)))
        except Exception:
            return batch
        done.extend((future, found.get(key, MISSING), None) for key, future in reads)
        return [item for item in batch if item[0] is not read]

    def _stopped(self, loop: asyncio.AbstractEventLoop) -> None:
        self._workers -= 1
        if self._queue and self._workers < self._concurrency:  # queued as this one stopped
            self._start(loop)

    async def raw_keys(self, prefix: str) -> list[str]:
        return await self._run(lambda: sorted(self.sync.raw_keys(prefix)))

    async def _key_pages(self, prefix: str, start_after: str | None, reverse: bool = False,
                         limit: int | None = None) -> AsyncIterator[list[str]]:
        # The twin's own key iterator, resumed a page per thread hop: SQLite and PostgreSQL
        # then run one short ordered query per page, as the synchronous keys() does.
        sync = self.sync
        found = await self._run(lambda: sync.raw_keys_desc(prefix, start_after, limit) if reverse
                                else sync.raw_keys(prefix) if start_after is None
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
    def call(self: ThreadStore, *args: Any) -> Awaitable[Any]:  # awaited by the caller
        return self._run(getattr(self.sync, name), *args)

    call.__name__ = name
    return call


for _name in _BYTE_LEVEL:
    setattr(ThreadStore, _name, _threaded(_name))


class InlineStore(ThreadStore):
    """A :class:`~kvstore.MemoryStore`: its operations never wait on I/O, so they run on the
    event loop itself (a thread hop would cost more than the operation)."""

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)
