"""kvstore as a dogpile.cache backend, registered as ``"kvstore"``::

    region = make_region().configure("kvstore", expiration_time=600, arguments={
        "url": "sqlite:////var/cache/app.db",        # or redis://..., postgresql://..., file:///...
    })

Arguments: ``url`` (see :func:`kvstore.stores.opening.open_url`), or ``store`` (a store object),
or ``config`` (a kvstore YAML path) with ``category`` (keys then route like ``category:key``);
``ttl`` (seconds the backend keeps a value: dogpile decides freshness itself, this only bounds
storage; default: the store's); ``lock_ttl`` (seconds a dogpile lock lives if its holder dies,
default 30). Values are dogpile's serialized bytes, stored as they are. The mutex is kvstore's
token-owned lock, shared by every process using the store.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from dogpile.cache.api import NO_VALUE, BytesBackend, CacheMutex

from ..store import PersistenceStore

__all__ = ["KVStoreBackend"]


class KVStoreMutex(CacheMutex):
    """dogpile's mutex on a kvstore :class:`~kvstore.Lock` (not re-entrant: acquiring it again
    in the same thread answers False, as dogpile expects)."""

    def __init__(self, lock: Any) -> None:
        self._lock = lock

    def acquire(self, wait: bool = True) -> bool:
        if self._lock._token is not None:
            return False
        return bool(self._lock.acquire(blocking=wait))

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return bool(self._lock.locked())


class KVStoreBackend(BytesBackend):
    def __init__(self, arguments: Mapping[str, Any]) -> None:
        self._prefix = ""
        self._owned = True
        if "store" in arguments:
            self.store: PersistenceStore = arguments["store"]
            self._owned = False
        elif "config" in arguments:
            from ..manager import PersistenceManager

            self._manager = PersistenceManager.from_yaml(arguments["config"])
            category = arguments.get("category", "dogpile")
            self._prefix = f"{category}:"
            self.store = self._manager.stores[self._manager.route(self._prefix + "x").store]
        else:
            from ..stores.opening import open_url

            self.store = open_url(arguments.get("url", "memory://"),
                                  **dict(arguments.get("store_options", {})))
        self.ttl = arguments.get("ttl")
        self.lock_ttl = float(arguments.get("lock_ttl", 30))

    def _k(self, key: str) -> str:
        return self._prefix + key

    def get_serialized(self, key: str) -> Any:
        value = self.store.load(self._k(key), NO_VALUE)
        return value if value is NO_VALUE else bytes(value)

    def get_serialized_multi(self, keys: Iterable[str]) -> list[Any]:
        keys = list(keys)
        found = self.store.load_many([self._k(k) for k in keys])
        return [bytes(found[self._k(k)]) if self._k(k) in found else NO_VALUE for k in keys]

    def set_serialized(self, key: str, value: bytes) -> None:
        self.store.save(self._k(key), value, self.ttl)

    def set_serialized_multi(self, mapping: Mapping[str, bytes]) -> None:
        self.store.save_many({self._k(k): v for k, v in mapping.items()}, self.ttl)

    def delete(self, key: str) -> None:
        self.store.delete(self._k(key))

    def delete_multi(self, keys: Iterable[str]) -> None:
        self.store.delete_many([self._k(k) for k in keys])

    def get_mutex(self, key: str) -> KVStoreMutex:
        return KVStoreMutex(self.store.lock("dogpile:" + self._k(key), ttl=self.lock_ttl))
