"""langchain-tests' own store suites (``BaseStoreSyncTests`` / ``BaseStoreAsyncTests``, the
test bodies are theirs) against kvstore.contrib.langchain on memory, SQLite, files, Redis and
PostgreSQL: ``KVStoreByteStore`` (bytes) and ``KVStore`` (any value), through the synchronous
methods on a store and through the async ones on its async face (kvstore.aio), plus both
managers' categories.

Redis is the server of ``KVSTORE_TEST_REDIS_URL`` (fakeredis without it), with RedisStore's
default ``ttl_default`` (3600 s): the adapters must not need it changed. PostgreSQL runs with
``KVSTORE_TEST_POSTGRES_DSN`` and is skipped, with that reason, without it.

    python -m pytest -q -p no:cacheprovider tests/peer/test_langchain_suite.py
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")
pytest_asyncio = pytest.importorskip("pytest_asyncio")

from langchain_tests.integration_tests import (  # noqa: E402
    BaseStoreAsyncTests, BaseStoreSyncTests)

from conftest import POSTGRES_DSN, REDIS_URL  # noqa: E402

from kvstore.contrib.langchain import KVStore, KVStoreByteStore  # noqa: E402

_PG_TABLE = f"lc_suite_{os.getpid()}"
_FAKE: dict[str, Any] = {}  # the one fakeredis server of this module, when no Redis is given


def _memory(tmp_path: Path) -> Any:
    from kvstore import MemoryStore

    return MemoryStore()


def _memory_msgpack(tmp_path: Path) -> Any:
    from kvstore import MemoryStore

    return MemoryStore(serializer="msgpack")


def _sqlite(tmp_path: Path) -> Any:
    from kvstore import SQLiteStore

    return SQLiteStore(path=tmp_path / "lc.db")


def _files(tmp_path: Path) -> Any:
    from kvstore import FileStore

    return FileStore(base_path=tmp_path / "files")


def _redis(tmp_path: Path) -> Any:
    from kvstore import RedisStore

    prefix = f"kvtest:lc:{uuid.uuid4().hex[:8]}:"  # one namespace per test: an empty store
    if REDIS_URL:
        return RedisStore(url=REDIS_URL, key_prefix=prefix)
    import fakeredis

    server = _FAKE.setdefault("server", fakeredis.FakeServer())
    return RedisStore(client=fakeredis.FakeRedis(server=server), key_prefix=prefix)


def _postgres(tmp_path: Path) -> Any:
    if not POSTGRES_DSN:
        pytest.skip("KVSTORE_TEST_POSTGRES_DSN is not set: no PostgreSQL to test against")
    from kvstore import PostgresStore

    store = PostgresStore(dsn=POSTGRES_DSN, table=_PG_TABLE)
    store.clear()  # the table is the module's: empty it for each test
    return store


STORES: dict[str, Callable[[Path], Any]] = {
    "Memory": _memory, "MemoryMsgpack": _memory_msgpack, "SQLite": _sqlite, "Files": _files,
    "Redis": _redis, "Postgres": _postgres}


def _async_face(store: Any) -> Any:
    from kvstore.aio import async_store

    if "server" in _FAKE and type(store).__name__ == "RedisStore":
        import fakeredis

        from kvstore.stores.redis.aio import AsyncRedisStore

        return AsyncRedisStore(store, client=fakeredis.FakeAsyncRedis(server=_FAKE["server"]))
    return async_store(store)


def _manager_config(tmp_path: Path) -> dict[str, Any]:
    return {"persistence": {"sqlite": {"path": str(tmp_path / "m.db")},
                            "file": {"base_path": str(tmp_path / "files")},
                            "categories": {"lc": {"store": "file"}}}}


#: The async suites' tests are coroutines run by pytest-asyncio (which langchain-tests installs);
#: its one synchronous test (test_no_overrides_DO_NOT_OVERRIDE) then draws a harmless warning.
ASYNC_MARKS = [pytest.mark.asyncio, pytest.mark.filterwarnings(
    "ignore:The test <Function test_no_overrides_DO_NOT_OVERRIDE> is marked:pytest.PytestWarning")]
BYTES = (b"foo", b"\x00\xffbar", b"baz" * 100)
VALUES = ({"text": "foo", "n": 1}, ["bar", 2.5, None], "baz")


class _Sync:
    make: Callable[[Path], Any]
    adapter: type = KVStoreByteStore

    @pytest.fixture
    def kv_store(self, tmp_path: Path) -> Any:
        store = type(self).make(tmp_path)
        yield self.adapter(store, category="lc" if self.adapter is KVStore else None)
        store.clear()
        store.close()

    @pytest.fixture
    def three_values(self) -> tuple[Any, Any, Any]:
        return BYTES if self.adapter is KVStoreByteStore else VALUES


class _Async(_Sync):
    pytestmark = ASYNC_MARKS

    @pytest_asyncio.fixture
    async def kv_store(self, tmp_path: Path) -> Any:
        store = type(self).make(tmp_path)
        face = _async_face(store)
        yield self.adapter(face, category="lc" if self.adapter is KVStore else None)
        await face.clear()
        await face.close()
        store.close()


for _name, _make in STORES.items():
    for _adapter in (KVStoreByteStore, KVStore):
        _label = "Bytes" if _adapter is KVStoreByteStore else "Values"
        for _front, _suite in ((_Sync, BaseStoreSyncTests), (_Async, BaseStoreAsyncTests)):
            _cls = type(f"Test{_name}{_label}{'Async' if _front is _Async else 'Sync'}",
                        (_front, _suite), {"make": staticmethod(_make), "adapter": _adapter})
            globals()[_cls.__name__] = _cls


class TestManagerCategorySync(BaseStoreSyncTests):
    @pytest.fixture
    def kv_store(self, tmp_path: Path) -> Any:
        from kvstore import PersistenceManager

        with PersistenceManager.from_config(_manager_config(tmp_path)) as pm:
            yield KVStoreByteStore(pm, category="lc")

    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return BYTES


class TestManagerCategoryAsync(BaseStoreAsyncTests):
    pytestmark = ASYNC_MARKS

    @pytest_asyncio.fixture
    async def kv_store(self, tmp_path: Path) -> Any:
        from kvstore.aio import AsyncPersistenceManager

        async with AsyncPersistenceManager.from_config(_manager_config(tmp_path)) as pm:
            yield KVStoreByteStore(pm, category="lc")

    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return BYTES


def teardown_module() -> None:
    if POSTGRES_DSN:
        from kvstore import PostgresStore

        store = PostgresStore(dsn=POSTGRES_DSN, table=_PG_TABLE)
        store.drop_table()
        store.close()
