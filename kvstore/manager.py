"""PersistenceManager: one object that routes each key to the right store with the right TTL.

>>> pm = PersistenceManager.from_config({"persistence": {
...     "categories": {"session": {"store": "memory", "ttl": "15m"}}}})   # doctest: +SKIP
>>> pm.save("session:42", {"user": "ann"})                                  # doctest: +SKIP
>>> pm.route("session:42").store                                           # doctest: +SKIP
'memory'
"""

from __future__ import annotations

from typing import Mapping, MutableMapping

from .astype import from_dict
from .config import Config, default_data_dir
from .core import EVENTS, Core, Event, Route, StoreStats
from .front.manager_sync import ManagerOps
from .front.transaction_sync import Transaction
from .store import PersistenceStore
from .stores.opening import open_stores

__all__ = ["PersistenceManager", "Route", "Event", "StoreStats", "default_data_dir", "from_dict",
           "EVENTS", "Transaction"]


class PersistenceManager(ManagerOps):
    """Routes keys by category to the ``memory``, ``cache``, ``database`` and ``file`` stores.

    ``PersistenceManager()`` is the embedded default: no server, files under
    :func:`default_data_dir`. Use :meth:`from_yaml` / :meth:`from_config` for the rest.

    Routing, TTL rules, statistics and events live in :class:`~kvstore.core.Core`, shared with
    transactions and the asyncio front; the operations are written once
    (:mod:`kvstore.front.manager_async`, generated into ``ManagerOps``); this class adds what
    only the synchronous front has: opening the stores, ``stores`` as a property.
    """

    def __init__(self, config: Config | None = None, *,
                 stores: Mapping[str, PersistenceStore] | None = None) -> None:
        self.config = config if config is not None else Config()
        self._start(Core(self.config, stores if stores else open_stores(
            self.config, lambda exc: self._core.emit_error("fallback", "cache", exc))))

    @property
    def stores(self) -> MutableMapping[str, PersistenceStore]:
        """The stores by name: ``memory``, ``cache``, ``database``, ``file``. It reads like a
        dict; ``pm.stores["cache"] = other`` takes effect for the very next call (the old store
        is not closed: close it yourself)."""
        return self._core.stores

    @stores.setter
    def stores(self, stores: Mapping[str, PersistenceStore]) -> None:
        self._core.replace_stores(stores)
