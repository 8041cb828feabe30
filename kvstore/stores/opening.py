"""Open the four stores a configuration describes (``memory``, ``cache``, ``database``,
``file``), and a store from one URL (:func:`open_url`), through the backend registry
(:mod:`kvstore.registry`).

Shared by the synchronous and the asyncio managers, so both open the same data.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .. import registry
from ..config import (Config, configured_backends, default_data_dir, embedded_cache_path,
                      embedded_cache_table)
from ..errors import ConfigError
from ..store import PersistenceStore
from .memory import MemoryStore

__all__ = ["open_stores", "open_url", "Opening", "STORE_NAMES"]

STORE_NAMES = registry.TIERS


@dataclass(frozen=True)
class Opening:
    """What a backend's ``opener`` is given besides its settings."""

    config: Config
    #: The stores opened so far by name (memory, database and file open before cache).
    opened: Mapping[str, PersistenceStore]
    on_fallback_error: Callable[[BaseException], Any] | None = None

    @property
    def secret(self) -> str | None:
        return self.config.pickle_secret

    @property
    def data_dir(self) -> Path:
        return default_data_dir()


def _open_backend(backend: registry.Backend, settings: Any, context: Opening) -> PersistenceStore:
    if backend.opener is not None:
        return registry.load(backend.opener)(settings, context)
    options = ({f.name: getattr(settings, f.name) for f in fields(settings)}
               if is_dataclass(settings) else dict(settings))
    options.setdefault("secret", context.secret)
    try:
        return backend.store_class()(**options)
    except TypeError as exc:
        raise ConfigError(f"persistence.{backend.section}: {exc}") from exc


def open_stores(c: Config, on_fallback_error: Callable[[BaseException], Any] | None = None
                ) -> dict[str, PersistenceStore]:
    """The configured stores by name (all closed again if one fails to open).

    ``on_fallback_error(exc)`` is told when a ``redis.fallback`` store takes over the cache tier.
    """
    opened: dict[str, PersistenceStore] = {}
    context = Opening(c, opened, on_fallback_error)
    try:
        chosen = configured_backends(c)
        with _setting("memory"):
            opened["memory"] = MemoryStore(max_entries=c.memory.max_entries,
                                           ttl_default=c.memory.ttl_default,
                                           serializer=c.memory.serializer,
                                           secret=c.pickle_secret)
        for tier in ("database", "file", "cache"):
            section = (chosen[tier][0].section if tier in chosen
                       else "file" if tier == "file"
                       else "postgres" if c.postgres is not None and tier == "cache" else "sqlite")
            with _setting(section or tier):
                opened[tier] = _open_tier(tier, c, chosen, context)
    except BaseException:
        for store in opened.values():
            store.close()
        raise
    return {name: opened[name] for name in STORE_NAMES}


@contextmanager
def _setting(section: str) -> Iterator[None]:
    """A store's own ConfigError (``url: unknown scheme 'http'``) gets the setting's full path in
    the YAML (``persistence.redis.url: ...``), like every error found while parsing it."""
    try:
        yield
    except ConfigError as exc:
        message = str(exc)
        if message.startswith("persistence."):
            raise
        joint = "." if re.match(r"[a-z_][a-z0-9_.]*:", message) else ": "
        raise ConfigError(f"persistence.{section}{joint}{message}") from exc


def _open_tier(tier: str, c: Config, chosen: Mapping[str, tuple[registry.Backend, Any]],
               context: Opening
               ) -> PersistenceStore:
    from .file import FileStore
    from .sqlite import SQLiteStore

    secret, data_dir = c.pickle_secret, default_data_dir()
    if tier in chosen:
        return _open_backend(*chosen[tier], context)
    if tier == "database":
        return SQLiteStore(path=c.sqlite.path or data_dir / "kvstore.db",
                           ttl_default=c.sqlite.ttl_default, serializer=c.sqlite.serializer,
                           secret=secret, synchronous=c.sqlite.synchronous,
                           max_entries=c.sqlite.max_entries)
    if tier == "file":
        return FileStore(base_path=c.file.base_path or data_dir / "files", format=c.file.format,
                         ttl_default=c.file.ttl_default, serializer=c.file.serializer,
                         secret=secret)
    if c.postgres is not None:
        # The embedded stand-in for Redis, beside the configuration's database: a table there,
        # shared by every application server like a Redis would be.
        from .postgres import PostgresStore

        return PostgresStore(dsn=c.postgres.dsn, table=embedded_cache_table(c.postgres.table),
                             ttl_default=3600, serializer="msgpack", secret=secret)
    # The embedded stand-in for Redis: a SQLite file with Redis's default TTL beside the
    # configuration's database file, shared by its processes like a local Redis.
    return SQLiteStore(path=embedded_cache_path(c), ttl_default=3600, serializer="msgpack",
                       secret=secret)


def open_redis(settings: Any, context: Opening) -> PersistenceStore:
    """The ``redis:`` section's store (behind a NearStore with ``near:`` settings, and that
    behind a FallbackStore with ``redis.fallback``)."""
    from .redis import RedisStore

    r = settings
    redis = RedisStore(url=r.url, ttl_default=r.ttl_default, serializer=r.serializer,
                       key_prefix=r.key_prefix, cluster=r.cluster or None, secret=context.secret,
                       socket_timeout=r.socket_timeout, connect_timeout=r.connect_timeout,
                       max_connections=r.max_connections, pool_timeout=r.pool_timeout)
    from .near.settings import wrap_near

    redis = wrap_near(redis, context.config)  # a NearStore with a `near:` setting
    if not r.fallback:
        return redis
    from .fallback import FallbackStore

    return FallbackStore(redis, context.opened[r.fallback], on_error=context.on_fallback_error)


def open_postgres(settings: Any, context: Opening) -> PersistenceStore:
    """The ``postgres:`` section's store (the ``database`` tier)."""
    from .postgres import PostgresStore

    p = settings
    return PostgresStore(dsn=p.dsn, table=p.table, ttl_default=p.ttl_default,
                         serializer=p.serializer, secret=context.secret,
                         max_entries=p.max_entries)


def open_url(url: str, **options: Any) -> PersistenceStore:
    """A store from a URL, for adapters configured by one string (Django's ``LOCATION``,
    dogpile's ``arguments``):

    - ``memory://``
    - ``sqlite:///absolute/path/app.db`` (``sqlite://relative/path.db``; ``?table=name``)
    - ``file:///absolute/folder``
    - ``redis://...``, ``rediss://...``, ``redis+cluster://...``, ``redis+sentinel://...``
      (``?key_prefix=app:`` sets the key prefix; ``?max_connections=50&pool_timeout=5`` the
      connection pool, see :class:`~kvstore.RedisStore`)
    - ``postgresql://user@host/db?table=name``
    - the schemes of registered third-party backends (:mod:`kvstore.registry`)

    ``?max_entries=N`` bounds a memory, SQLite or PostgreSQL store (see their ``max_entries``).

    ``options`` go to the store's constructor (``ttl_default``, ``serializer``, ``key_prefix``...).
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"store URL: {url!r} is not a URL (memory://, sqlite:///path, "
                          "file:///folder, redis://..., postgresql://...)")
    scheme = url.split("://", 1)[0].lower()
    try:
        backend = registry.for_scheme(scheme)
    except registry.BackendError:
        known = ", ".join(s for b in registry.backends() for s in b.schemes)
        raise registry.BackendError(f"store URL {url!r}: unknown scheme {scheme!r} "
                                    f"({known})") from None
    if backend.from_url is not None:
        return registry.load(backend.from_url)(url, scheme, options)
    cls = backend.store_class()
    if hasattr(cls, "from_url"):
        return cls.from_url(url, **options)
    return cls(url=url, **options)


# -- the built-in backends' URLs ------------------------------------------------------------------


def _query(url: str, scheme: str, options: dict[str, Any], known: tuple[str, ...] | None
           ) -> tuple[str, dict[str, str]]:
    """``(the URL's part after ://, without its query; the query)``, ``?max_entries=N`` moved
    into ``options``; with ``known``, any other option than those is refused."""
    from urllib.parse import parse_qsl

    rest = url.split("://", 1)[1]
    rest, _, query_text = rest.partition("?")
    query = dict(parse_qsl(query_text))
    if "max_entries" in query:  # sqlite:///app.db?max_entries=10000
        bound = query.pop("max_entries")
        if not bound.isdigit():
            raise ConfigError(f"store URL {url!r}: max_entries={bound!r} is not a positive int")
        options.setdefault("max_entries", int(bound))
    if known is not None:
        for name in known:
            if name in query:
                options.setdefault(name, query.pop(name))
        if query:  # dropped silently, it opened another table
            raise ConfigError(f"store URL {url!r}: unknown option {next(iter(query))!r} "
                              f"({', '.join(('max_entries',) + known)})")
    return rest, query


def memory_from_url(url: str, scheme: str, options: dict[str, Any]) -> PersistenceStore:
    _query(url, scheme, options, ())
    return MemoryStore(**options)


def sqlite_from_url(url: str, scheme: str, options: dict[str, Any]) -> PersistenceStore:
    from .sqlite import SQLiteStore

    path, _ = _query(url, scheme, options, ("table",))
    return SQLiteStore(path=path, **options)


def file_from_url(url: str, scheme: str, options: dict[str, Any]) -> PersistenceStore:
    from .file import FileStore

    return FileStore(base_path=url.split("://", 1)[1], **options)


def redis_from_url(url: str, scheme: str, options: dict[str, Any]) -> PersistenceStore:
    from urllib.parse import parse_qsl, urlsplit

    from .redis import RedisStore

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    if "key_prefix" in query:  # redis://host/0?key_prefix=app: (one string for adapters)
        options.setdefault("key_prefix", query.pop("key_prefix"))
        url = parts._replace(query="&".join(f"{k}={v}" for k, v in query.items())).geturl()
    return RedisStore(url=url, **options)


def postgres_from_url(url: str, scheme: str, options: dict[str, Any]) -> PersistenceStore:
    from urllib.parse import urlsplit

    from .postgres import PostgresStore

    rest, query = _query(url, scheme, options, None)
    parts = urlsplit(f"{scheme}://{rest}")
    table = query.pop("table", options.pop("table", "kvstore"))
    dsn = parts._replace(query="&".join(f"{k}={v}" for k, v in query.items())).geturl()
    return PostgresStore(dsn=dsn, table=table, **options)
