"""A LangGraph checkpoint saver over any kvstore store or manager category.

>>> from kvstore import SQLiteStore                                       # doctest: +SKIP
>>> from kvstore.contrib.langgraph import KVStoreSaver
>>> saver = KVStoreSaver(SQLiteStore(path="agent.db"))
>>> graph = builder.compile(checkpointer=saver)

The operations are in :mod:`.saver_async` (written once; :mod:`.saver_sync` is generated from
it); this module picks the store each front calls.
"""

from __future__ import annotations

import random
import threading
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver, SerializerProtocol

from ...aio import AsyncPersistenceManager, AsyncStore, async_store
from ...errors import ConfigError, InvalidArgumentError
from ...manager import PersistenceManager
from ...rules import parse_ttl
from ...store import TTL, PersistenceStore
from .layout import Layout
from .saver_async import AsyncSaverOps
from .saver_sync import SaverOps

__all__ = ["KVStoreSaver"]


class KVStoreSaver(SaverOps, AsyncSaverOps, BaseCheckpointSaver[str]):
    """LangGraph's ``BaseCheckpointSaver`` on kvstore: every method on both fronts (``put`` /
    ``aput``, ``get_tuple``, ``list``, ``put_writes``, ``delete_thread``, ``delete_for_runs``,
    ``copy_thread``, ``prune``).

    Args:
        target: a store (``SQLiteStore(...)``, ``RedisStore(...)``..., or a :mod:`kvstore.aio`
            async store), or a manager (:class:`~kvstore.PersistenceManager` or
            :class:`~kvstore.aio.AsyncPersistenceManager`) with ``category``.
        category: with a manager, the category whose store holds the checkpoints (its keys
            are ``<category>:...``; default ``"checkpoint"``).
        prefix: with a store, what every key starts with (default ``"checkpoint:"``).
        ttl: how long a checkpoint and its writes live (seconds or ``"30d"``...). Default:
            no expiry (with a manager: the category's ``ttl`` if it sets one). The store's own
            ``ttl_default`` (``RedisStore``'s 3600) never applies.
        serde: LangGraph's serializer (default: its ``JsonPlusSerializer``); what it makes is
            stored as bytes inside a record any kvstore serializer holds.

    The synchronous methods call the synchronous store (an async store's ``sync`` twin), the
    async ones the async store (a synchronous store's calls in worker threads). Thread
    operations are atomic: all of their writes and deletes are one step of the store.
    """

    def __init__(self, target: Any, *, category: str | None = None, prefix: str | None = None,
                 ttl: TTL = None, serde: SerializerProtocol | None = None) -> None:
        super().__init__(serde=serde)
        self._sync: PersistenceStore | None = None
        self._async: AsyncStore | None = None
        self._faces: dict[int, tuple[PersistenceStore, AsyncStore]] = {}
        self._lock = threading.Lock()
        self._names: tuple[Any, str] | None = None  # (manager, store name)
        if isinstance(target, (PersistenceManager, AsyncPersistenceManager)):
            if prefix is not None:
                raise InvalidArgumentError("KVStoreSaver: prefix= is for a store; with a "
                                           "manager the keys are '<category>:...'")
            category = "checkpoint" if category is None else category
            if not category or ":" in category:
                raise InvalidArgumentError(f"KVStoreSaver: category {category!r} must be a "
                                           "non-empty name without ':'")
            config = target.config
            spec = config.categories.get(category)
            self._names = (target, spec.store if spec is not None else config.default_store)
            if ttl is None and spec is not None:
                ttl = spec.ttl
            prefix = category + ":"
        elif isinstance(target, PersistenceStore):
            self._sync = target
        elif isinstance(target, AsyncStore):
            self._async, self._sync = target, target.sync
        else:
            raise ConfigError(f"KVStoreSaver: {target!r} is not a kvstore store or manager")
        if category is not None and self._names is None:
            raise InvalidArgumentError("KVStoreSaver: category= is for a manager; a store "
                                       "takes prefix=")
        self.layout = Layout("checkpoint:" if prefix is None else prefix)
        self.ttl = None if ttl is None else parse_ttl(ttl)

    # -- the store each front calls ------------------------------------------------------------

    def sync_target(self) -> PersistenceStore:
        if self._names is None:
            assert self._sync is not None
            return self._sync
        manager, name = self._names
        found = manager.stores[name]  # looked up each time: pm.stores[name] = other applies
        return found.sync if isinstance(found, AsyncStore) else found

    def async_target(self) -> AsyncStore:
        if self._async is not None:
            return self._async
        if self._names is not None and isinstance(self._names[0], AsyncPersistenceManager):
            return self._names[0].stores[self._names[1]]
        return self._face(self.sync_target())

    def _face(self, store: PersistenceStore) -> AsyncStore:
        """The async face of a synchronous store: its own calls in worker threads (not a
        driver of its own, which would bind connections to one event loop)."""
        found = self._faces.get(id(store))
        if found is None or found[0] is not store:
            with self._lock:
                face = async_store(store, threads=lambda backend: True)
                found = self._faces[id(store)] = (store, face)
        return found[1]

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Versions as LangGraph's own savers make them: an increasing counter, then a random
        part (sortable strings)."""
        if current is None:
            number = 0
        elif isinstance(current, int):
            number = current
        else:
            number = int(current.split(".")[0])
        return f"{number + 1:032}.{random.random():016}"
