"""kvstore as a Django cache backend::

    CACHES = {"default": {
        "BACKEND": "kvstore.contrib.django.KVStoreCache",
        "LOCATION": "redis://127.0.0.1:6379/0",          # any store URL (see open_url), or
        # "LOCATION": "/etc/app/kvstore.yaml",          # a kvstore YAML; OPTIONS["CATEGORY"] routes
        "TIMEOUT": 300,
        "OPTIONS": {"MAX_ENTRIES": 10_000, "CULL_FREQUENCY": 3},
    }}

Values are pickled and HMAC-signed with ``SECRET_KEY`` (``OPTIONS["SECRET"]`` to use another);
Django's key versioning, ``add``, ``touch``, ``incr``/``decr``, the ``*_many`` calls and
``clear`` map onto kvstore's atomic operations. Culling runs only when ``MAX_ENTRIES`` is set
in OPTIONS (it counts the store's keys, like Django's database cache).
"""

from __future__ import annotations

from typing import Any, Iterable

from django.conf import settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

from ..serializers import Serializer
from ..store import MISSING

__all__ = ["KVStoreCache"]


class KVStoreCache(BaseCache):
    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        options = params.get("OPTIONS", {})
        self._cull_configured = "MAX_ENTRIES" in options or "max_entries" in params
        secret = options.get("SECRET", settings.SECRET_KEY)
        serializer = Serializer("pickle", secret=secret)
        if "://" in location:
            from ..stores.opening import open_url

            store_options = dict(options.get("STORE_OPTIONS", {}))
            if location.startswith(("redis", "rediss", "unix")):
                store_options.setdefault("ttl_default", None)
            self.store = open_url(location, serializer=serializer, **store_options)
        else:
            from ..manager import PersistenceManager

            self._manager = PersistenceManager.from_yaml(location)
            route = self._manager.route(f"{options.get('CATEGORY', 'django')}:x")
            self.store = self._manager.stores[route.store]

    # -- helpers ------------------------------------------------------------------------------

    def _ttl(self, timeout: Any) -> float | None | bool:
        """Seconds, None (forever) or False (already expired: store nothing)."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return None
        return False if timeout <= 0 else float(timeout)

    def _cull(self) -> None:
        if not self._cull_configured:
            return
        keys = list(self.store.keys())
        if len(keys) >= self._max_entries:  # room for the key about to be written
            if self._cull_frequency == 0:
                self.store.clear()
            else:
                self.store.delete_many(keys[: len(keys) // self._cull_frequency])

    # -- the cache API --------------------------------------------------------------------------

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        if ttl is False:
            return not self.store.exists(key)
        self._cull()
        return self.store.add(key, value, ttl)

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return self.store.load(self.make_and_validate_key(key, version=version), default)

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> None:
        key = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        if ttl is False:
            self.store.delete(key)
            return
        self._cull()
        self.store.save(key, value, ttl)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        if ttl is False:
            return self.store.delete(key)
        self.store._check_key(key)
        return bool(self.store._touch(key, ttl))  # None: no expiry (not the store's default)

    def delete(self, key: Any, version: Any = None) -> bool:
        return self.store.delete(self.make_and_validate_key(key, version=version))

    def get_many(self, keys: Iterable[Any], version: Any = None) -> dict[Any, Any]:
        made = {self.make_and_validate_key(k, version=version): k for k in keys}
        return {made[k]: v for k, v in self.store.load_many(made).items()}

    def set_many(self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT,
                 version: Any = None) -> list[Any]:
        items = {self.make_and_validate_key(k, version=version): v for k, v in data.items()}
        ttl = self._ttl(timeout)
        if ttl is False:
            self.store.delete_many(items)
            return []
        self._cull()
        self.store.save_many(items, ttl)
        return []

    def delete_many(self, keys: Iterable[Any], version: Any = None) -> None:
        self.store.delete_many([self.make_and_validate_key(k, version=version) for k in keys])

    def has_key(self, key: Any, version: Any = None) -> bool:
        return self.store.exists(self.make_and_validate_key(key, version=version))

    def incr(self, key: Any, delta: int = 1, version: Any = None) -> int:
        made = self.make_and_validate_key(key, version=version)
        value = self.store.load(made, MISSING)
        if value is MISSING:
            raise ValueError(f"Key '{key}' not found")
        return self.store.update(made, lambda v: v + delta if v is not MISSING else _missing(key),
                                 default=MISSING)

    def clear(self) -> None:
        self.store.clear()

    def close(self, **kwargs: Any) -> None:
        """Called at the end of each request: the store's connections stay open."""


def _missing(key: Any) -> Any:
    raise ValueError(f"Key '{key}' not found")
