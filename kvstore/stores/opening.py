"""Open the four stores a configuration describes: ``memory``, ``cache``, ``database``, ``file``.

Shared by the synchronous and the asyncio managers, so both open the same data.
"""

from __future__ import annotations

from typing import Any, Callable

from ..config import Config, default_data_dir, embedded_cache_path, embedded_cache_table
from ..store import PersistenceStore
from .memory import MemoryStore

__all__ = ["open_stores", "open_url", "STORE_NAMES"]

STORE_NAMES = ("memory", "cache", "database", "file")


def open_stores(c: Config, on_fallback_error: Callable[[BaseException], Any] | None = None
                ) -> dict[str, PersistenceStore]:
    """The configured stores by name (all closed again if one fails to open).

    ``on_fallback_error(exc)`` is told when a ``redis.fallback`` store takes over the cache tier.
    """
    from .file import FileStore
    from .sqlite import SQLiteStore

    secret = c.pickle_secret
    data_dir = default_data_dir()
    opened: dict[str, PersistenceStore] = {}
    try:
        opened["memory"] = MemoryStore(max_entries=c.memory.max_entries,
                                       ttl_default=c.memory.ttl_default,
                                       serializer=c.memory.serializer, secret=secret)
        if c.postgres is not None:
            from .postgres import PostgresStore

            opened["database"] = PostgresStore(dsn=c.postgres.dsn, table=c.postgres.table,
                                               ttl_default=c.postgres.ttl_default,
                                               serializer=c.postgres.serializer, secret=secret,
                                               max_entries=c.postgres.max_entries)
        else:
            opened["database"] = SQLiteStore(path=c.sqlite.path or data_dir / "kvstore.db",
                                             ttl_default=c.sqlite.ttl_default,
                                             serializer=c.sqlite.serializer, secret=secret,
                                             synchronous=c.sqlite.synchronous,
                                             max_entries=c.sqlite.max_entries)
        opened["file"] = FileStore(base_path=c.file.base_path or data_dir / "files",
                                   format=c.file.format, ttl_default=c.file.ttl_default,
                                   serializer=c.file.serializer, secret=secret)
        if c.redis is not None:
            from .redis import RedisStore

            redis = RedisStore(url=c.redis.url, ttl_default=c.redis.ttl_default,
                               serializer=c.redis.serializer, key_prefix=c.redis.key_prefix,
                               cluster=c.redis.cluster or None, secret=secret,
                               socket_timeout=c.redis.socket_timeout,
                               connect_timeout=c.redis.connect_timeout,
                               max_connections=c.redis.max_connections,
                               pool_timeout=c.redis.pool_timeout)
            if c.redis.fallback:
                from .fallback import FallbackStore

                opened["cache"] = FallbackStore(redis, opened[c.redis.fallback],
                                                on_error=on_fallback_error)
            else:
                opened["cache"] = redis
        elif c.postgres is not None:
            # The embedded stand-in for Redis, beside the configuration's database: a table
            # there, shared by every application server like a Redis would be.
            from .postgres import PostgresStore

            opened["cache"] = PostgresStore(dsn=c.postgres.dsn,
                                            table=embedded_cache_table(c.postgres.table),
                                            ttl_default=3600, serializer="msgpack", secret=secret)
        else:
            # The embedded stand-in for Redis: a SQLite file with Redis's default TTL beside the
            # configuration's database file, shared by its processes like a local Redis.
            opened["cache"] = SQLiteStore(path=embedded_cache_path(c), ttl_default=3600,
                                          serializer="msgpack", secret=secret)
    except BaseException:
        for store in opened.values():
            store.close()
        raise
    return {name: opened[name] for name in STORE_NAMES}


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

    ``?max_entries=N`` bounds a memory, SQLite or PostgreSQL store (see their ``max_entries``).

    ``options`` go to the store's constructor (``ttl_default``, ``serializer``, ``key_prefix``...).
    """
    from urllib.parse import parse_qsl, urlsplit

    from ..errors import ConfigError

    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"store URL: {url!r} is not a URL (memory://, sqlite:///path, "
                          "file:///folder, redis://..., postgresql://...)")
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme in ("memory", "sqlite", "postgresql", "postgres") and "?" in rest:
        rest, _, query_text = rest.partition("?")
        query = dict(parse_qsl(query_text))
        if "max_entries" in query:  # sqlite:///app.db?max_entries=10000
            bound = query.pop("max_entries")
            if not bound.isdigit():
                raise ConfigError(f"store URL {url!r}: max_entries={bound!r} is not a positive int")
            options.setdefault("max_entries", int(bound))
        if scheme == "sqlite" and "table" in query:  # sqlite:///app.db?table=custom
            options.setdefault("table", query.pop("table"))
        if scheme in ("memory", "sqlite") and query:  # dropped silently, it opened another table
            raise ConfigError(f"store URL {url!r}: unknown option {next(iter(query))!r} "
                              "(max_entries" + (", table)" if scheme == "sqlite" else ")"))
        url = f"{scheme}://{rest}" + (f"?{'&'.join(f'{k}={v}' for k, v in query.items())}"
                                      if query else "")
    if scheme == "memory":
        return MemoryStore(**options)
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(path=rest, **options)
    if scheme == "file":
        from .file import FileStore

        return FileStore(base_path=rest, **options)
    if scheme.startswith(("redis", "rediss", "unix")):
        from .redis import RedisStore

        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        if "key_prefix" in query:  # redis://host/0?key_prefix=app: (one string for adapters)
            options.setdefault("key_prefix", query.pop("key_prefix"))
            url = parts._replace(query="&".join(f"{k}={v}" for k, v in query.items())).geturl()
        return RedisStore(url=url, **options)
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        table = query.pop("table", options.pop("table", "kvstore"))
        dsn = parts._replace(query="&".join(f"{k}={v}" for k, v in query.items())).geturl()
        return PostgresStore(dsn=dsn, table=table, **options)
    raise ConfigError(f"store URL {url!r}: unknown scheme {scheme!r} (memory, sqlite, file, "
                      "redis, rediss, redis+cluster, redis+sentinel, postgresql)")
