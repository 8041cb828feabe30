"""Async stores: the store interface awaited, over a few awaitable byte-level operations.

An :class:`AsyncStore` wraps the synchronous store of the same data (its ``sync`` twin), which
supplies every rule: key and TTL checks, encoding, the lock namespace's names. Only the I/O is
awaited: natively on Redis (:class:`~kvstore.aio.redis.AsyncRedisStore`), in a bounded thread
pool for SQLite, files and PostgreSQL (:class:`ThreadStore`), inline for memory. ``update``,
``append``, ``get_or_set`` and locks are the synchronous front's flows (:mod:`kvstore.flows`),
driven by :func:`arun`.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import inspect
from concurrent.futures import Executor
from typing import Any, AsyncIterator, Callable, Iterable, Mapping

from .. import flows
from . import paging
from .._marks import KEEP, MISSING
from ..errors import InvalidArgumentError
from ..locking import _UNSET, Lock, check_timeout
from ..logs import check_page
from ..store import TTL, PersistenceStore, blob_size, check_paging, parse_ttl

__all__ = ["AsyncStore", "ThreadStore", "InlineStore", "AsyncLock", "AsyncLog", "arun"]


async def arun(store: "AsyncStore", flow: flows.Flow) -> Any:
    """Drive ``flow`` (see :mod:`kvstore.flows`) against ``store``, awaiting each request."""
    send: Any = None
    failure: BaseException | None = None
    while True:
        try:
            request = flow.throw(failure) if failure is not None else flow.send(send)
        except StopIteration as stop:
            return stop.value
        failure = None
        try:
            send = await _perform(store, request)
        except BaseException as exc:  # thrown into the flow: its finally blocks still run
            failure = exc


async def _perform(store: "AsyncStore", request: Any) -> Any:
    if type(request) is flows.Call:
        target = store if request.space == flows.DATA else store.meta
        return await getattr(target, request.method)(*request.args)
    if type(request) is flows.Sleep:
        return await asyncio.sleep(request.seconds)
    result = request.fn()
    return await result if inspect.isawaitable(result) else result


class AsyncStore:
    """The store interface, every I/O method a coroutine. See :class:`~kvstore.PersistenceStore`
    for the semantics: they are the same, on the same data."""

    def __init__(self, sync: PersistenceStore) -> None:
        self._twin(sync)

    def _twin(self, sync: PersistenceStore) -> None:
        """Take ``sync`` as the synchronous twin (also for a copy made for the lock namespace)."""
        self.sync = sync
        self._meta_store: AsyncStore | None = None
        # The twin's rules, bound here: one call less on every operation.
        self.check_key = sync.check_key  # type: ignore[method-assign]
        self.encode = sync.encode  # type: ignore[method-assign]
        self.decode = sync.decode  # type: ignore[method-assign]
        self.encode_record = sync.encode_record
        self.decode_record = sync.decode_record

    @property
    def ttl_default(self) -> float | None:
        return self.sync.ttl_default

    @property
    def serializer(self) -> Any:
        return self.sync.serializer

    # The rules come from the synchronous twin (flows call these on the store they run on).
    def check_key(self, key: Any) -> None:
        self.sync.check_key(key)

    def resolve_ttl(self, ttl: TTL) -> float | None:
        return self.sync.resolve_ttl(ttl)

    def encode(self, key: str, value: Any) -> Any:
        return self.sync.encode(key, value)

    def decode(self, key: str, blob: Any) -> Any:
        return self.sync.decode(key, blob)

    @property
    def meta(self) -> "AsyncStore":
        if self._meta_store is None:
            self._meta_store = self.open_meta()
        return self._meta_store

    # -- the public interface ------------------------------------------------------------------

    async def save(self, key: str, value: Any, ttl: TTL = None) -> bool:
        self.check_key(key)
        seconds = self.resolve_ttl(ttl)
        await self.raw_set(key, self.encode(key, value), seconds)
        return True

    async def save_sized(self, key: str, value: Any, ttl: TTL = None) -> int | None:
        """:meth:`save`, returning the bytes written (None: the store keeps objects as they are),
        for a ``save`` event's ``size`` (the value encoded once)."""
        self.check_key(key)
        seconds = self.resolve_ttl(ttl)
        blob = self.encode(key, value)
        await self.raw_set(key, blob, seconds)
        return blob_size(self.sync, blob)

    async def load(self, key: str, default: Any = None) -> Any:
        self.check_key(key)
        blob = await self.raw_get(key)
        return default if blob is MISSING else self.decode(key, blob)

    async def delete(self, key: str) -> bool:
        self.check_key(key)
        return bool(await self.raw_delete(key))

    async def exists(self, key: str) -> bool:
        self.check_key(key)
        return bool(await self.raw_exists(key))

    async def keys(self, prefix: str = "", start_after: str | None = None,
                   limit: int | None = None) -> AsyncIterator[str]:
        """Live keys starting with ``prefix``, sorted (``async for key in store.keys(...)``),
        fetched 1,000 at a time: stopping early does not list the rest."""
        self.sync.check_prefix(prefix)
        check_paging(start_after, limit)
        async for key in paging.flatten(self._key_pages(prefix, start_after), limit):
            yield key

    async def items(self, prefix: str = "", start_after: str | None = None,
                    limit: int | None = None, batch: int = 500) -> AsyncIterator[tuple[str, Any]]:
        """``(key, value)`` for :meth:`keys`, sorted, ``batch`` keys per round trip."""
        async for chunk in paging.chunks(self.keys(prefix, start_after, limit), batch):
            found = await self.load_many(chunk)
            for key in chunk:
                if key in found:
                    yield key, found[key]

    async def _key_pages(self, prefix: str, start_after: str | None) -> AsyncIterator[list[str]]:
        """Sorted pages of the live keys with ``prefix`` after ``start_after``. Stores that
        page by key override this; this default lists the keys once (Redis SCAN has no order)."""
        found = await self.raw_keys(prefix)
        start = 0 if start_after is None else bisect.bisect_right(found, start_after)
        for i in range(start, len(found), paging.PAGE):
            yield found[i:i + paging.PAGE]

    async def _log_names_checked(self, prefix: str) -> list[str]:
        self.sync.check_prefix(prefix)
        return await self.raw_log_names(prefix)

    async def save_many(self, items: Mapping[str, Any], ttl: TTL = None) -> None:
        encoded, seconds = self.sync.encoded_items(items, ttl)
        if encoded:
            await self.raw_set_many(encoded, seconds)

    async def load_many(self, keys: Iterable[str]) -> dict[str, Any]:
        wanted = self.sync.checked_keys(keys)
        return self.sync.decode_many(await self.raw_get_many(wanted)) if wanted else {}

    async def delete_many(self, keys: Iterable[str]) -> int:
        wanted = self.sync.checked_keys(keys)
        return int(await self.raw_delete_many(wanted)) if wanted else 0

    async def ttl(self, key: str) -> float | None:
        self.check_key(key)
        return await self.raw_ttl(key)

    async def incr(self, key: str, amount: int = 1) -> int:
        return await self._increment(key, amount, self.ttl_default)

    async def _increment(self, key: str, amount: int, new_ttl: float | None) -> int:
        self.check_key(key)
        self.sync.check_amount(key, amount)
        return int(await self.raw_incr(key, amount, new_ttl))

    async def clear(self, prefix: str = "") -> int:
        self.sync.check_prefix(prefix)
        return int(await self.raw_clear(prefix))

    async def add(self, key: str, value: Any, ttl: TTL = None) -> bool:
        self.check_key(key)
        seconds = self.resolve_ttl(ttl)
        return bool(await self.raw_add(key, self.encode(key, value), seconds))

    async def update(self, key: str, fn: Callable[[Any], Any], default: Any = None,
                     ttl: TTL = None) -> Any:
        return await self._update(key, fn, default, ttl, self.ttl_default)

    async def _update(self, key: str, fn: Callable[[Any], Any], default: Any, ttl: TTL,
                      new_ttl: float | None) -> Any:
        self.check_key(key)
        if not callable(fn):
            raise InvalidArgumentError(f"update {key!r}: fn must be callable, got {fn!r}")
        seconds = KEEP if ttl is None else parse_ttl(ttl)
        return await arun(self, flows.update(self, key, fn, default, seconds, new_ttl))

    async def append(self, key: str, item: Any, ttl: TTL = None) -> int:
        return await self._append(key, item, ttl, self.ttl_default)

    async def _append(self, key: str, item: Any, ttl: TTL, new_ttl: float | None) -> int:
        self.check_key(key)
        seconds = KEEP if ttl is None else parse_ttl(ttl)
        return int(await arun(self, flows.append(self, key, item, seconds, new_ttl)))

    async def touch(self, key: str, ttl: TTL = None) -> bool:
        self.check_key(key)
        return bool(await self.raw_touch(key, self.resolve_ttl(ttl)))

    async def get_or_set(self, key: str, factory: Callable[[], Any], ttl: TTL = None, *,
                         lock_ttl: float | str = 30.0, timeout: float | None = None) -> Any:
        """As the synchronous ``get_or_set``; ``factory`` may be a coroutine function."""
        self.check_key(key)
        if not callable(factory):
            raise InvalidArgumentError(f"get_or_set {key!r}: factory must be callable")
        hold = parse_ttl(lock_ttl, "lock_ttl")
        wait = check_timeout(timeout)
        return await arun(self, flows.get_or_set(self, key, factory, self.resolve_ttl(ttl), hold,
                                                 hold if wait is None else wait))

    def lock(self, name: str, ttl: float | str = 30.0, timeout: float | None = None
             ) -> "AsyncLock":
        """``async with store.lock("job", ttl=30, timeout=5): ...``"""
        self.check_key(name)
        return AsyncLock(self, name, parse_ttl(ttl, "lock ttl"), check_timeout(timeout))

    def log(self, name: str) -> "AsyncLog":
        """The append-only log ``name`` (see :class:`~kvstore.logs.Log`), awaited."""
        return AsyncLog(self, name)

    async def logs(self, prefix: str = "") -> AsyncIterator[str]:
        for name in await self._log_names_checked(prefix):
            yield name

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

    async def __aenter__(self) -> "AsyncStore":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.sync!r})"

    # -- what each async store implements: the byte-level operations, awaited --------------------

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


class AsyncLog:
    """An append-only log, awaited: ``await log.append(record)``, ``await log.read(after,
    limit)``, ``await log.length()`` (``len()`` cannot be awaited), ``await log.delete()``,
    ``async for seq, record in log``."""

    def __init__(self, store: AsyncStore, name: str) -> None:
        store.check_key(name)
        self.store = store
        self.name = name

    async def append(self, record: Any) -> int:
        store = self.store
        return int(await store.raw_log_append(self.name, store.encode_record(self.name, record)))

    async def read(self, after: int = 0, limit: int | None = None) -> list[tuple[int, Any]]:
        check_page(after, limit)
        if limit == 0:
            return []
        rows = await self.store.raw_log_read(self.name, after, limit)
        return [(seq, self.store.decode_record(self.name, blob)) for seq, blob in rows]

    async def __aiter__(self) -> AsyncIterator[tuple[int, Any]]:
        after = 0
        while True:
            page = await self.read(after, 1000)
            for item in page:
                yield item
            if len(page) < 1000:
                return
            after = page[-1][0]

    async def length(self) -> int:
        return int(await self.store.raw_log_len(self.name))

    async def delete(self) -> bool:
        return bool(await self.store.raw_log_delete(self.name))


class AsyncLock(Lock):
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

    async def acquire(self, blocking: bool = True,  # type: ignore[override]
                      timeout: float | None = _UNSET) -> bool:
        return bool(await arun(self.store, self._acquiring(blocking, timeout)))

    async def release(self) -> None:  # type: ignore[override]
        await arun(self.store, self._releasing())

    async def extend(self, ttl: float | None = None) -> None:  # type: ignore[override]
        await arun(self.store, self._extending(ttl))

    async def locked(self) -> bool:  # type: ignore[override]
        return bool(await arun(self.store, flows.lookup(self._key)))

    async def owned(self) -> bool:  # type: ignore[override]
        return bool(await arun(self.store, self._owned()))

    async def __aenter__(self) -> "AsyncLock":
        if not await self.acquire():
            raise self._timed_out()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            await self.release()
        except Exception:
            if exc_type is None:
                raise

    def __enter__(self) -> Any:
        raise TypeError("an AsyncLock is used with 'async with', not 'with'")
