"""AsyncPersistenceManager: the manager for asyncio programs; it never blocks the event loop.

>>> async with AsyncPersistenceManager.from_yaml("config.yaml") as pm:    # doctest: +SKIP
...     await pm.save("session:1", {"user": "ann"})
...     async with pm.transaction() as tx:
...         tx.save("preferences:ann", {"theme": "dark"})

The same configuration opens the same stores as :class:`~kvstore.PersistenceManager`, and one
:class:`~kvstore.core.Core` applies the same routing, TTL rules, statistics and events. Each
store gets an async face (:mod:`kvstore.aio.store`): Redis on ``redis.asyncio``, memory on the
loop itself, SQLite, files and PostgreSQL in a bounded thread pool. A transaction's commit and
backups run in that pool on the synchronous stores, through the very code the synchronous
manager uses.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping, TypeVar, overload

from .. import flows, registry
from .._marks import MISSING
from ..astype import from_dict
from ..config import Config, load_config, mask_secrets, parse_config
from ..core import Core, Entry, Event, Route, memo_keys
from ..errors import ConflictError, KVStoreError, LockTimeout
from ..lifecycle import Lifecycle
from ..store import TTL, PersistenceStore, check_paging
from ..stores.opening import open_stores
from ..storemap import StoreMap
from ..transaction import UNSTAGED, Transaction, attempts
from . import paging
from .store import AsyncLock, AsyncLog, AsyncStore, InlineStore, ThreadStore

__all__ = ["AsyncPersistenceManager", "AsyncTransaction", "async_store"]

T = TypeVar("T")

_NOT_STORE_ERRORS = (ConflictError, LockTimeout)


def async_store(store: PersistenceStore, executor: ThreadPoolExecutor | None = None, *,
                threads: Callable[[registry.Backend], bool] | None = None) -> AsyncStore:
    """The async face of a synchronous store, as its backend's registry record says
    (:mod:`kvstore.registry`): its async driver (Redis, PostgreSQL; a wrapper's driver runs over
    the faces of the stores it wraps, when the one it wraps has a driver), inline for a store
    that never waits (memory), else the store's own calls in ``executor``'s threads. A subclass
    that overrides a byte-level method runs in threads (a driver would bypass its override).
    ``threads(backend)`` true: run that backend in threads even if it has a driver."""
    backend = registry.for_store(store)
    if backend is None:
        return ThreadStore(store, executor)
    if not _native(store, backend, threads):
        return InlineStore(store) if backend.inline else ThreadStore(store, executor)
    driver: Any = backend.async_class()
    if backend.wraps is not None:  # e.g. FallbackStore: over its stores' own faces
        return driver(store, lambda inner: async_store(inner, executor, threads=threads))
    return driver(store)


def _native(store: Any, backend: registry.Backend | None,
            threads: Callable[[registry.Backend], bool] | None) -> bool:
    """Whether ``store`` runs on its backend's async driver."""
    if backend is None or backend.async_driver is None or (threads and threads(backend)):
        return False
    cls, base = type(store), backend.store_class()
    if cls is not base and any(name.startswith("raw_") or name in ("encode", "decode")
                               for klass in cls.__mro__[:cls.__mro__.index(base)]
                               for name in vars(klass)):
        return False  # a subclass's own byte-level method: the driver would bypass it
    if backend.wraps is None:
        return True
    inner = getattr(store, backend.wraps)  # a wrapper gains nothing over a store in threads
    return _native(inner, registry.for_store(inner), threads)


class AsyncTransaction(Transaction):
    """``async with pm.transaction() as tx``: ``tx.save``/``tx.delete`` stage (no await),
    ``await tx.load``/``await tx.exists`` read, checked at commit like the synchronous one."""

    def __init__(self, core: Core, astores: Mapping[str, AsyncStore],
                 executor: ThreadPoolExecutor) -> None:
        super().__init__(core)
        self._astores = astores
        self._executor = executor

    async def load(self, key: str, default: Any = None, store: str | None = None,
                   as_type: Any = None) -> Any:
        entry = self._entry(key, store)
        found = self._staged_value(entry, key, default)
        if found is not UNSTAGED:
            return found
        return self._value(entry, key, await self._aread(entry, key), default, as_type)

    async def exists(self, key: str, store: str | None = None) -> bool:  # type: ignore[override]
        entry = self._entry(key, store)
        found = self._staged_value(entry, key, MISSING)
        if found is not UNSTAGED:
            return found is not MISSING
        return await self._aread(entry, key) is not MISSING

    async def _aread(self, entry: Entry, key: str) -> Any:
        blob = self._recorded(entry, key)
        if blob is not UNSTAGED:
            return blob
        start = time.perf_counter()
        try:
            blob = await self._astores[entry.name].raw_get(key)
        except KVStoreError as exc:
            self._core.failed("transaction", entry, exc, key)
            raise
        return self._remember(entry, key, blob, start)

    def delete(self, key: str, store: str | None = None) -> None:  # type: ignore[override]
        """Stage a delete (unlike the synchronous ``tx.delete``, it does not say whether the key
        existed: that would be a read; use ``await tx.exists(key)``)."""
        entry = self._entry(key, store)
        entry.store.check_key(key)
        self._staged[(entry.name, key)] = (MISSING, None)

    async def commit_async(self) -> None:
        """Commit in a worker thread, on the synchronous stores (the same code as
        :meth:`Transaction.commit`)."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self.commit)


class AsyncPersistenceManager:
    """Routes keys by category to the ``memory``, ``cache``, ``database`` and ``file`` stores,
    every call awaited. See :class:`~kvstore.PersistenceManager` for the semantics.

    Args:
        config: the configuration (see :meth:`from_yaml`); None: the embedded default.
        max_workers: threads for SQLite, files and PostgreSQL (default: ``min(32, cpus + 4)``).
    """

    def __init__(self, config: Config | None = None, *,
                 stores: Mapping[str, PersistenceStore] | None = None,
                 max_workers: int | None = None) -> None:
        self.config = config if config is not None else Config()
        self._core = core = Core(self.config, stores if stores else open_stores(
            self.config, lambda exc: core.emit_error("fallback", "cache", exc)))
        self._executor = ThreadPoolExecutor(
            max_workers=max_workers or min(32, (os.cpu_count() or 1) + 4),
            thread_name_prefix="kvstore-aio")
        #: The stores by name, awaitable. ``apm.stores["cache"] = store`` (a synchronous store
        #: or an :class:`AsyncStore`) takes effect for the very next call; the old one stays open.
        self.stores: StoreMap[AsyncStore] = StoreMap(
            {name: async_store(st, self._executor) for name, st in core.stores.items()},
            self._store_changed)
        self._life = Lifecycle(core)
        self._life.start()

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **options: Any) -> "AsyncPersistenceManager":
        """Read, check and apply a YAML file (the same file as the synchronous manager's)."""
        return cls(load_config(path), **options)

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | Config, **options: Any
                    ) -> "AsyncPersistenceManager":
        return cls(data if isinstance(data, Config) else parse_config(data), **options)

    # -- plumbing ---------------------------------------------------------------------------------

    def _store_changed(self, name: str, store: Any) -> AsyncStore | None:
        # The core keeps the synchronous store (transactions and backups run on it) and forgets
        # its cached routes; this map keeps the async face of the same store.
        if store is None:
            del self._core.stores[name]
            return None
        astore = store if isinstance(store, AsyncStore) else None
        self._core.stores[name] = astore.sync if astore is not None else store
        return astore if astore is not None else async_store(store, self._executor)

    def _at(self, key: str, store: str | None) -> tuple[Entry, AsyncStore]:
        entry = self._core.entry(key, store)
        return entry, self.stores[entry.name]

    async def _call(self, op: str, entry: Entry, key: str | None, call: Awaitable[T]) -> T:
        """Await a store call, counting and reporting a store error."""
        try:
            return await call
        except KVStoreError as exc:
            if not isinstance(exc, _NOT_STORE_ERRORS):
                self._core.failed(op, entry, exc, key)
            raise

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(fn, *args))

    # -- the key-value interface --------------------------------------------------------------------

    async def route(self, key: str) -> Route:
        """Which store and TTL ``key`` goes to, and why."""
        return self._core.route(key)

    async def save(self, key: str, value: Any, ttl: TTL = None, store: str | None = None) -> bool:
        entry, st = self._at(key, store)
        start = time.perf_counter()
        size = await self._call("save", entry, key,
                                st.save_sized(key, value, self._core.ttl_arg(entry, ttl)))
        self._core.saved(entry, [key], start, size)
        return True

    @overload
    async def load(self, key: str, default: Any = None, store: str | None = None,
                   as_type: None = None) -> Any: ...

    @overload
    async def load(self, key: str, default: Any = None, store: str | None = None, *,
                   as_type: type[T]) -> T: ...

    async def load(self, key: str, default: Any = None, store: str | None = None,
                   as_type: Any = None) -> Any:
        entry, st = self._at(key, store)
        start = time.perf_counter()
        value = await self._call("load", entry, key, st.load(key, MISSING))
        if value is MISSING:
            self._core.loaded(entry, [], 1, start)
            return default
        self._core.loaded(entry, [key], 0, start)
        return value if as_type is None else from_dict(as_type, value)

    async def delete(self, key: str, store: str | None = None) -> bool:
        entry, st = self._at(key, store)
        existed = await self._call("delete", entry, key, st.delete(key))
        self._core.deleted(entry, [key])
        return existed

    async def exists(self, key: str, store: str | None = None) -> bool:
        entry, st = self._at(key, store)
        return await self._call("exists", entry, key, st.exists(key))

    async def keys(self, prefix: str = "", store: str | None = None,
                   start_after: str | None = None, limit: int | None = None
                   ) -> AsyncIterator[str]:
        """``async for key in pm.keys(prefix)``: as the synchronous ``keys`` (sorted, paged)."""
        check_paging(start_after, limit)
        sources = [self._reported("keys", self._core.named(name),
                                  self.stores[name].keys(prefix, start_after))
                   for name in self._core.store_names_for_prefix(prefix, store)]
        async for key in paging.merge(sources, limit):
            yield key

    async def items(self, prefix: str = "", store: str | None = None,
                    start_after: str | None = None, limit: int | None = None,
                    batch: int = 500) -> AsyncIterator[tuple[str, Any]]:
        """``async for key, value in pm.items(prefix)``: sorted by key, ``batch`` at a time."""
        async for chunk in paging.chunks(self.keys(prefix, store, start_after, limit), batch):
            found = await self.load_many(chunk, store)
            for key in chunk:
                if key in found:
                    yield key, found[key]

    async def _reported(self, op: str, entry: Entry, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """``items``, a store error on the way counted and reported as :meth:`_call` does."""
        while True:
            try:
                item = await self._call(op, entry, None, anext(items))
            except StopAsyncIteration:
                return
            yield item

    def log(self, name: str, store: str | None = None) -> AsyncLog:
        """The append-only log ``name`` in its category's store, awaited (see AsyncLog)."""
        return self._at(name, store)[1].log(name)

    async def logs(self, prefix: str = "", store: str | None = None) -> AsyncIterator[str]:
        found: set[str] = set()
        for name in self._core.store_names_for_prefix(prefix, store):
            entry = self._core.named(name)
            found.update(await self._call("logs", entry, None,
                                          self.stores[name]._log_names_checked(prefix)))
        for name in sorted(found):
            yield name

    async def clear(self, prefix: str = "", store: str | None = None) -> int:
        removed = 0
        for name in self._core.store_names_for_prefix(prefix, store):
            entry = self._core.named(name)
            count = await self._call("clear", entry, None, self.stores[name].clear(prefix))
            self._core.deleted(entry, [], count)
            removed += count
        return removed

    async def save_many(self, items: Mapping[str, Any], ttl: TTL = None,
                        store: str | None = None) -> None:
        for entry, seconds, encoded in self._core.plan_save_many(items, ttl, store):
            start = time.perf_counter()
            await self._call("save_many", entry, None,
                             self.stores[entry.name].raw_set_many(encoded, seconds))
            self._core.saved(entry, [k for k, _ in encoded], start)

    async def load_many(self, keys: Iterable[str], store: str | None = None) -> dict[str, Any]:
        found: dict[str, Any] = {}
        wanted = list(dict.fromkeys(keys))
        for entry, group in self._core.group_keys(wanted, store):
            start = time.perf_counter()
            values = await self._call("load_many", entry, None,
                                      self.stores[entry.name].load_many(group))
            self._core.loaded(entry, list(values), len(group) - len(values), start)
            found.update(values)
        return {key: found[key] for key in wanted if key in found}

    async def delete_many(self, keys: Iterable[str], store: str | None = None) -> int:
        removed = 0
        for entry, group in self._core.group_keys(list(dict.fromkeys(keys)), store):
            count = await self._call("delete_many", entry, None,
                                     self.stores[entry.name].delete_many(group))
            self._core.deleted(entry, group, count)
            removed += count
        return removed

    async def ttl(self, key: str, store: str | None = None) -> float | None:
        entry, st = self._at(key, store)
        return await self._call("ttl", entry, key, st.ttl(key))

    async def touch(self, key: str, ttl: TTL = None, store: str | None = None) -> bool:
        entry, st = self._at(key, store)
        return await self._call("touch", entry, key, st.touch(key, self._core.ttl_arg(entry, ttl)))

    # -- atomic operations ---------------------------------------------------------------------------

    async def incr(self, key: str, amount: int = 1, store: str | None = None) -> int:
        entry, st = self._at(key, store)
        value = await self._call("incr", entry, key,
                                 st._increment(key, amount, self._core.new_key_ttl(entry)))
        self._core.saved(entry, [key])
        return value

    async def add(self, key: str, value: Any, ttl: TTL = None, store: str | None = None) -> bool:
        entry, st = self._at(key, store)
        added = await self._call("add", entry, key,
                                 st.add(key, value, self._core.ttl_arg(entry, ttl)))
        if added:
            self._core.saved(entry, [key])
        return added

    async def update(self, key: str, fn: Callable[[Any], Any], default: Any = None,
                     ttl: TTL = None, store: str | None = None) -> Any:
        entry, st = self._at(key, store)
        new = await self._call("update", entry, key, st._update(
            key, fn, default, ttl, self._core.new_key_ttl(entry)))
        self._core.saved(entry, [key])
        return new

    async def append(self, key: str, item: Any, ttl: TTL = None, store: str | None = None) -> int:
        entry, st = self._at(key, store)
        length = await self._call("append", entry, key, st._append(
            key, item, ttl, self._core.new_key_ttl(entry)))
        self._core.saved(entry, [key])
        return length

    async def get_or_set(self, key: str, factory: Callable[[], Any], ttl: TTL = None,
                         store: str | None = None, *, lock_ttl: float | str = 30.0,
                         timeout: float | None = None) -> Any:
        """As the synchronous ``get_or_set``; ``factory`` may be a coroutine function."""
        entry, st = self._at(key, store)
        fill = self._core.filler(entry, key, factory)
        value = await self._call("get_or_set", entry, key, st.get_or_set(
            key, fill, self._core.ttl_arg(entry, ttl), lock_ttl=lock_ttl, timeout=timeout))
        fill.count()
        return value

    def lock(self, name: str, ttl: float | str = 30.0, timeout: float | None = None,
             store: str | None = None) -> AsyncLock:
        """``async with pm.lock("jobs:nightly", ttl=60, timeout=5): ...``"""
        return self._at(name, store)[1].lock(name, ttl, timeout)

    def cached(self, category: str = "memo", ttl: TTL = None,
               key: Callable[..., str] | None = None) -> Callable[[Callable[..., Any]],
                                                                  Callable[..., Any]]:
        """Memoize an ``async def`` function by its arguments (see the synchronous ``cached``)."""
        key_maker = memo_keys(category, ttl, key)

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            cache_key = key_maker(fn)

            @functools.wraps(fn)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                return await self.get_or_set(cache_key(*args, **kwargs),
                                             lambda: fn(*args, **kwargs), ttl)

            async def invalidate(*args: Any, **kwargs: Any) -> bool:
                return await self.delete(cache_key(*args, **kwargs))

            wrapper.cache_key = cache_key  # type: ignore[attr-defined]
            wrapper.invalidate = invalidate  # type: ignore[attr-defined]
            return wrapper

        return decorate

    # -- transactions -------------------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncTransaction]:
        """``async with pm.transaction() as tx``: commits on exit, nothing on an exception."""
        tx = AsyncTransaction(self._core, self.stores, self._executor)
        try:
            yield tx
        except BaseException:
            tx.discard()
            raise
        await tx.commit_async()

    async def atomic(self, fn: Callable[[AsyncTransaction], Any], retries: int = 10) -> Any:
        """Run ``fn(tx)`` (a coroutine function or a plain one) in a transaction, again on
        :class:`ConflictError` (up to ``retries`` more times); returns what it returns."""
        for attempt in attempts(fn, retries):
            try:
                async with self.transaction() as tx:
                    result = fn(tx)
                    if asyncio.iscoroutine(result):
                        result = await result
                return result
            except ConflictError:
                if attempt == retries:
                    raise
                await asyncio.sleep(flows.backoff(attempt))
        raise AssertionError("unreachable")

    # -- events, stats, backups ----------------------------------------------------------------------

    async def on(self, event: str, callback: Callable[[Event], Any]) -> Callable[[Event], Any]:
        """``await pm.on("save" | "load" | "delete" | "error", callback)``."""
        return self._core.on(event, callback)

    async def off(self, event: str, callback: Callable[[Event], Any]) -> None:
        self._core.off(event, callback)

    async def stats(self) -> dict[str, dict[str, int]]:
        """Per store: hits, misses, saves, deletes, errors."""
        return self._core.stats_report()

    async def backup(self, dest: str | os.PathLike[str] | None = None, *,
                     skip_unavailable: bool = False) -> Path:
        """As the synchronous ``backup``, in a worker thread."""
        return await self._in_thread(self._life.backup, dest, None, skip_unavailable)

    async def restore(self, path: str | os.PathLike[str]) -> dict[str, int]:
        from ..restore import restore_backup

        return await self._in_thread(restore_backup, self._core, path)

    async def save_snapshot(self) -> int:
        return await self._in_thread(self._life.save_snapshot)

    # -- closing ----------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the async connections, save the memory snapshot, close the stores. Safe twice."""
        if self._life.closed:
            return
        for st in self.stores.values():
            await st.close()
        await self._in_thread(self._life.close)
        self._executor.shutdown(wait=False)

    async def __aenter__(self) -> "AsyncPersistenceManager":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}={st.sync!r}" for name, st in self.stores.items())
        return mask_secrets(f"AsyncPersistenceManager({parts})")
