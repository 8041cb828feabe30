"""langchain-tests' own store suites (``BaseStoreSyncTests`` / ``BaseStoreAsyncTests``, the
test bodies are theirs) against kvstore.contrib.langchain on memory, SQLite, files, Redis and
PostgreSQL: ``KVStoreByteStore`` (bytes) and ``KVStore`` (any value), through the synchronous
methods on a store and through the async ones on its async face (kvstore.aio), plus both
managers' categories.

The stores are tests/langchain_stores.py's: Redis is the server of ``KVSTORE_TEST_REDIS_URL``
(fakeredis without it), with RedisStore's default ``ttl_default`` (3600 s); PostgreSQL runs with
``KVSTORE_TEST_POSTGRES_DSN`` and is skipped, with that reason, without it.

    python -m pytest -q -p no:cacheprovider tests/peer/test_langchain_suite.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")
pytest_asyncio = pytest.importorskip("pytest_asyncio")

from langchain_tests.integration_tests import (  # noqa: E402
    BaseStoreAsyncTests, BaseStoreSyncTests)

from langchain_stores import KINDS, async_face, discard, open_store  # noqa: E402

from kvstore.contrib.langchain import KVStore, KVStoreByteStore  # noqa: E402


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
    kind: str
    adapter: type = KVStoreByteStore

    @pytest.fixture
    def kv_store(self, tmp_path: Path) -> Any:
        store = open_store(self.kind, tmp_path)
        yield self.adapter(store, category="lc" if self.adapter is KVStore else None)
        discard(store)

    @pytest.fixture
    def three_values(self) -> tuple[Any, Any, Any]:
        return BYTES if self.adapter is KVStoreByteStore else VALUES


class _Async(_Sync):
    pytestmark = ASYNC_MARKS

    @pytest_asyncio.fixture
    async def kv_store(self, tmp_path: Path) -> Any:
        store = open_store(self.kind, tmp_path)
        face = async_face(store)
        yield self.adapter(face, category="lc" if self.adapter is KVStore else None)
        await face.close()
        discard(store)


for _kind in KINDS:
    _name = _kind.title().replace("-", "")
    for _adapter in (KVStoreByteStore, KVStore):
        _label = "Bytes" if _adapter is KVStoreByteStore else "Values"
        for _front, _suite in ((_Sync, BaseStoreSyncTests), (_Async, BaseStoreAsyncTests)):
            _cls = type(f"Test{_name}{_label}{'Async' if _front is _Async else 'Sync'}",
                        (_front, _suite), {"kind": _kind, "adapter": _adapter})
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

