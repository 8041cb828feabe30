"""AsyncPersistenceManager: the manager for asyncio programs; it never blocks the event loop.

>>> async with AsyncPersistenceManager.from_yaml("config.yaml") as pm:    # doctest: +SKIP
...     await pm.save("session:1", {"user": "ann"})
...     async with pm.transaction() as tx:
...         tx.save("preferences:ann", {"theme": "dark"})

The same configuration opens the same stores as :class:`~kvstore.PersistenceManager`, and one
:class:`~kvstore.core.Core` applies the same routing, TTL rules, statistics and events; the
operations are the very ones the synchronous manager runs, written once
(:mod:`kvstore.front.manager_async`). Each store gets an async face (:mod:`kvstore.aio.store`):
Redis on ``redis.asyncio``, memory on the loop itself, SQLite, files and PostgreSQL in a
bounded thread pool. A transaction's commit and backups run in that pool on the synchronous
stores, through the code the synchronous manager uses.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping

from .. import registry
from ..config import Config
from ..core import Core
from ..front.manager_async import AsyncManagerOps
from ..front.transaction_async import AsyncTransaction
from ..store import PersistenceStore
from ..stores.opening import open_stores
from ..storemap import StoreMap
from .store import AsyncStore, InlineStore, ThreadStore

__all__ = ["AsyncPersistenceManager", "AsyncTransaction", "async_store"]


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


class AsyncPersistenceManager(AsyncManagerOps):
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
        core = Core(self.config, stores if stores else open_stores(
            self.config, lambda exc: core.emit_error("fallback", "cache", exc)))
        self._executor = ThreadPoolExecutor(
            max_workers=max_workers or min(32, (os.cpu_count() or 1) + 4),
            thread_name_prefix="kvstore-aio")
        #: The stores by name, awaitable. ``apm.stores["cache"] = store`` (a synchronous store
        #: or an :class:`AsyncStore`) takes effect for the very next call; the old one stays open.
        self.stores: StoreMap[AsyncStore] = StoreMap(
            {name: async_store(st, self._executor) for name, st in core.stores.items()},
            self._store_changed)
        core.fronts = self.stores  # the operations call the async faces
        self._start(core)

    def _store_changed(self, name: str, store: Any) -> AsyncStore | None:
        # The core keeps the synchronous store (transactions and backups run on it) and forgets
        # its cached routes; this map keeps the async face of the same store.
        if store is None:
            del self._core.stores[name]
            return None
        astore = store if isinstance(store, AsyncStore) else None
        self._core.stores[name] = astore.sync if astore is not None else store
        return astore if astore is not None else async_store(store, self._executor)
