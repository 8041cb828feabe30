"""The stores the LangChain adapter tests run on (tests/test_contrib_langchain.py and langchain-tests'
own suites in tests/peer/test_langchain_suite.py): each one new and empty, with its async face.

Redis is the server of ``KVSTORE_TEST_REDIS_URL`` (fakeredis without it) and keeps
RedisStore's default ``ttl_default`` (3600 s): the adapters must not need it changed. PostgreSQL
runs with ``KVSTORE_TEST_POSTGRES_DSN`` (a table of its own per store, dropped by
:func:`discard`) and is skipped, with that reason, without it.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from conftest import POSTGRES_DSN, REDIS_URL

KINDS = ["memory", "memory-msgpack", "sqlite", "files", "redis", "postgres"]

_FAKE: dict[str, Any] = {}  # the one fakeredis server of this process, when no Redis is given


def open_store(kind: str, tmp_path: Path) -> Any:
    """A new, empty store of ``kind`` (the same data for the same ``tmp_path``, except Redis
    and PostgreSQL, which get a namespace of their own each call)."""
    import kvstore

    if kind == "memory":
        return kvstore.MemoryStore()
    if kind == "memory-msgpack":
        return kvstore.MemoryStore(serializer="msgpack")
    if kind == "sqlite":
        return kvstore.SQLiteStore(path=tmp_path / "lc.db")
    if kind == "files":
        return kvstore.FileStore(base_path=tmp_path / "files")
    if kind == "redis":
        prefix = f"kvtest:lc:{uuid.uuid4().hex[:8]}:"
        if REDIS_URL:
            return kvstore.RedisStore(url=REDIS_URL, key_prefix=prefix)
        import fakeredis

        server = _FAKE.setdefault("server", fakeredis.FakeServer())
        return kvstore.RedisStore(client=fakeredis.FakeRedis(server=server), key_prefix=prefix)
    if kind == "postgres":
        if not POSTGRES_DSN:
            pytest.skip("KVSTORE_TEST_POSTGRES_DSN is not set: no PostgreSQL to test against")
        return kvstore.PostgresStore(dsn=POSTGRES_DSN, table=f"lc_{uuid.uuid4().hex[:10]}")
    raise AssertionError(kind)


def async_face(store: Any) -> Any:
    """``store``'s async face (kvstore.aio), to be made inside the event loop that uses it."""
    from kvstore.aio import async_store

    if "server" in _FAKE and type(store).__name__ == "RedisStore" and not REDIS_URL:
        import fakeredis

        from kvstore.stores.redis.aio import AsyncRedisStore

        return AsyncRedisStore(store, client=fakeredis.FakeAsyncRedis(server=_FAKE["server"]))
    return async_store(store)


def discard(store: Any) -> None:
    """Empty ``store`` (keys and logs) and close it; a PostgreSQL store's table is dropped."""
    try:
        if hasattr(store, "drop_table"):
            store.drop_table()
        else:
            store.clear()
            for name in list(store.logs()):
                store.log(name).delete()
    finally:
        store.close()
