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

Each operation is written once, as a :mod:`kvstore.flows` flow over store calls: the
synchronous methods run it on the store, the async ones (``aget``, ``aset``, ...) on kvstore's
async front (natively on Redis, kvstore's batching thread pool for SQLite, files and
PostgreSQL) instead of Django's one ``sync_to_async`` thread; one async store per event loop,
closed when the loop shuts down.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, AsyncGenerator, Callable, Iterable

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.exceptions import SynchronousOnlyOperation

from ..astore import arun
from ..flows import DATA, Call, Flow, run
from ..serializers import Serializer
from ..store import MISSING

__all__ = ["KVStoreCache"]


def _both(flow: Callable[..., Flow]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The synchronous and the async method running ``flow``."""
    @functools.wraps(flow)
    def method(self: KVStoreCache, *args: Any, **kwargs: Any) -> Any:
        return run(self.store, flow(self, *args, **kwargs))

    @functools.wraps(flow)
    async def amethod(self: KVStoreCache, *args: Any, **kwargs: Any) -> Any:
        try:
            return await arun(self.astore, flow(self, *args, **kwargs))
        except SynchronousOnlyOperation:  # pickling ran a query (a lazy QuerySet), before any
            # write: in Django's thread for sync code, as Django's own backends always do
            return await sync_to_async(method)(self, *args, **kwargs)

    for function, name in ((method, flow.__name__[1:]), (amethod, "a" + flow.__name__[1:])):
        function.__name__, function.__qualname__ = name, f"KVStoreCache.{name}"  # get, aget
    return method, amethod


def _do(method: str, *args: Any) -> Call:  # a call of the store's (or async store's) method
    return Call(DATA, method, args)


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
        self._astores: dict[Any, tuple[Any, Any]] = {}  # loop: (async store, its closer)

    @property
    def astore(self) -> Any:
        """The store's async face for the running event loop (connections belong to a loop),
        closed when the loop shuts down (``asyncio.run``, asgiref and servers call
        ``shutdown_asyncgens``, which finalizes the closer)."""
        loop = asyncio.get_running_loop()
        entry = self._astores.get(loop)
        if entry is None:
            from ..aio import async_store

            for old in [old for old in list(self._astores) if old.is_closed()]:
                self._astores.pop(old, None)  # a loop closed without shutting down
            # PostgreSQL in threads: an async pool's tasks would not survive asyncio.run's end
            astore = async_store(self.store, threads=lambda backend: backend.loop_tasks)
            closer = self._closer(loop, astore)
            try:  # run it to its yield: now the loop knows it (the first-iteration hook)
                closer.asend(None).send(None)
            except StopIteration:
                pass
            entry = self._astores[loop] = (astore, closer)
        return entry[0]

    async def _closer(self, loop: Any, astore: Any) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            self._astores.pop(loop, None)
            await astore.close()

    # -- helpers ------------------------------------------------------------------------------

    def _ttl(self, timeout: Any) -> float | None | bool:
        """Seconds, None (forever) or False (already expired: store nothing)."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return None
        return False if timeout <= 0 else float(timeout)

    def _cull(self) -> Flow:
        if not self._cull_configured:
            return
        keys = sorted((yield _do("raw_keys", "")))
        if len(keys) >= self._max_entries:  # room for the key about to be written
            if self._cull_frequency == 0:
                yield _do("clear")
            else:
                yield _do("delete_many", keys[: len(keys) // self._cull_frequency])

    # -- the cache API: each a flow, run by the synchronous and the async method ---------------

    def _add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> Flow:
        key = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        if ttl is False:
            return not (yield _do("exists", key))
        yield from self._cull()
        return (yield _do("add", key, value, ttl))

    def _get(self, key: Any, default: Any = None, version: Any = None) -> Flow:
        return (yield _do("load", self.make_and_validate_key(key, version=version), default))

    def _set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> Flow:
        key = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        if ttl is False:
            yield _do("delete", key)
            return
        yield from self._cull()
        yield _do("save", key, value, ttl)

    def _touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> Flow:
        key = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        if ttl is False:
            return (yield _do("delete", key))
        self.store.check_key(key)
        return bool((yield _do("raw_touch", key, ttl)))  # None: no expiry (not the store's default)

    def _delete(self, key: Any, version: Any = None) -> Flow:
        return (yield _do("delete", self.make_and_validate_key(key, version=version)))

    def _get_many(self, keys: Iterable[Any], version: Any = None) -> Flow:
        made = {self.make_and_validate_key(k, version=version): k for k in keys}
        return {made[k]: v for k, v in (yield _do("load_many", made)).items()}

    def _set_many(self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT,
                  version: Any = None) -> Flow:
        items = {self.make_and_validate_key(k, version=version): v for k, v in data.items()}
        ttl = self._ttl(timeout)
        if ttl is False:
            yield _do("delete_many", items)
            return []
        yield from self._cull()
        yield _do("save_many", items, ttl)
        return []

    def _delete_many(self, keys: Iterable[Any], version: Any = None) -> Flow:
        yield _do("delete_many", [self.make_and_validate_key(k, version=version) for k in keys])

    def _has_key(self, key: Any, version: Any = None) -> Flow:
        return (yield _do("exists", self.make_and_validate_key(key, version=version)))

    def _incr(self, key: Any, delta: int = 1, version: Any = None) -> Flow:
        made = self.make_and_validate_key(key, version=version)  # fn(MISSING): not found
        return (yield _do("update", made, lambda v: v + delta if v is not MISSING
                          else _missing(key), MISSING))

    def _clear(self) -> Flow:
        yield _do("clear")

    add, aadd = _both(_add)
    get, aget = _both(_get)
    set, aset = _both(_set)
    touch, atouch = _both(_touch)
    delete, adelete = _both(_delete)
    get_many, aget_many = _both(_get_many)
    set_many, aset_many = _both(_set_many)
    delete_many, adelete_many = _both(_delete_many)
    has_key, ahas_key = _both(_has_key)
    incr, aincr = _both(_incr)
    clear, aclear = _both(_clear)

    def close(self, **kwargs: Any) -> None:
        """Called at the end of each request: the store's connections stay open."""


def _missing(key: Any) -> Any:
    raise ValueError(f"Key '{key}' not found")
