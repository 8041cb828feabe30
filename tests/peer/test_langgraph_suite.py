"""LangGraph's own checkpoint conformance suite (langgraph-checkpoint-conformance: the test
bodies are its ``spec`` modules) against :class:`kvstore.contrib.langgraph.KVStoreSaver` on
memory, SQLite, files, Redis and PostgreSQL, every capability including the optional ones
(``delete_for_runs``, ``copy_thread``, ``prune``).

Two fronts per store: ``async``, the saver over the store's :mod:`kvstore.aio` face (Redis and
PostgreSQL on their asyncio drivers), called through its async methods as the suite does; and
``sync``, the saver over the synchronous store, the suite's async calls driven through the
synchronous methods (``put``, ``list``...) in a worker thread (:class:`SyncDriven`). And the
saver on a manager's category: ``PersistenceManager`` (sync) and ``AsyncPersistenceManager``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from typing import Any, AsyncIterator, Callable

import pytest

pytest.importorskip("langgraph.checkpoint.conformance")

from langgraph.checkpoint.conformance import checkpointer_test, validate  # noqa: E402
from langgraph.checkpoint.conformance.capabilities import Capability  # noqa: E402

from conftest import POSTGRES_DSN, REDIS_URL  # noqa: E402

from kvstore import FileStore, MemoryStore, PersistenceManager, SQLiteStore  # noqa: E402
from kvstore.aio import AsyncPersistenceManager, async_store  # noqa: E402
from kvstore.contrib.langgraph import KVStoreSaver  # noqa: E402

#: Every PostgreSQL table this module creates starts with this (a shared server: keep apart).
TABLE_PREFIX = os.environ.get("KVSTORE_TEST_TABLE_PREFIX", "kvtest_") + "langgraph_"
_TMP = tempfile.mkdtemp(prefix="kvstore-langgraph-")
_FAKE: list[Any] = []


class SyncDriven(KVStoreSaver):
    """The suite calls async methods; these run the synchronous ones (in a worker thread, as
    a synchronous graph would call them), so the suite checks the generated front too."""

    async def aget_tuple(self, config: Any) -> Any:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(self, config: Any, **kwargs: Any) -> AsyncIterator[Any]:
        for item in await asyncio.to_thread(lambda: list(self.list(config, **kwargs))):
            yield item

    async def aput(self, *args: Any) -> Any:
        return await asyncio.to_thread(self.put, *args)

    async def aput_writes(self, *args: Any, **kwargs: Any) -> None:
        await asyncio.to_thread(self.put_writes, *args, **kwargs)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Any) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source: str, target: str) -> None:
        await asyncio.to_thread(self.copy_thread, source, target)

    async def aprune(self, thread_ids: Any, **kwargs: Any) -> None:
        await asyncio.to_thread(lambda: self.prune(thread_ids, **kwargs))


def _redis() -> Any:
    """A RedisStore with RedisStore's own default ttl_default (3600): the saver must not let
    it expire checkpoints. fakeredis when KVSTORE_TEST_REDIS_URL is not set."""
    from kvstore import RedisStore

    prefix = f"kvtest:lg:{uuid.uuid4().hex[:8]}:"
    if REDIS_URL:
        return RedisStore(url=REDIS_URL, key_prefix=prefix)
    import fakeredis

    if not _FAKE:
        _FAKE.append(fakeredis.FakeServer())
    return RedisStore(client=fakeredis.FakeRedis(server=_FAKE[0]), key_prefix=prefix)


def _postgres() -> Any:
    from kvstore import PostgresStore

    return PostgresStore(dsn=POSTGRES_DSN, table=TABLE_PREFIX + uuid.uuid4().hex[:8])


STORES: dict[str, Callable[[], Any]] = {
    "memory": lambda: MemoryStore(),
    "sqlite": lambda: SQLiteStore(path=os.path.join(_TMP, uuid.uuid4().hex + ".db")),
    "file": lambda: FileStore(base_path=os.path.join(_TMP, uuid.uuid4().hex)),
    "redis": _redis,
    "postgres": _postgres,
}


def _async_face(store: Any) -> Any:
    if not REDIS_URL and type(store).__name__ == "RedisStore":
        import fakeredis

        from kvstore.stores.redis.aio import AsyncRedisStore

        return AsyncRedisStore(store, client=fakeredis.FakeAsyncRedis(server=_FAKE[0]))
    return async_store(store)


async def _close(store: Any, face: Any) -> None:
    store.clear()  # a server's keys of this run (its own prefix / table)
    if hasattr(store, "drop_table"):
        store.drop_table()
    if face is not None:
        await face.close()
    store.close()


def _registered(kind: str, front: str) -> Any:
    @checkpointer_test(name=f"KVStoreSaver[{kind}, {front}]")
    async def factory() -> AsyncIterator[KVStoreSaver]:
        store = STORES[kind]()
        face = _async_face(store) if front == "async" else None
        try:
            yield SyncDriven(store) if face is None else KVStoreSaver(face)
        finally:
            await _close(store, face)

    return factory


CAPABILITIES = [c.value for c in Capability]


def _registered_manager(front: str) -> Any:
    """The saver on a manager's category (SQLite ``database``): PersistenceManager through the
    synchronous methods, AsyncPersistenceManager through the async ones."""
    @checkpointer_test(name=f"KVStoreSaver[manager, {front}]")
    async def factory() -> AsyncIterator[KVStoreSaver]:
        config = {"persistence": {
            "sqlite": {"path": os.path.join(_TMP, uuid.uuid4().hex + ".db")},
            "file": {"base_path": os.path.join(_TMP, uuid.uuid4().hex)},
            "categories": {"checkpoint": {"store": "database"}}}}
        if front == "sync":
            with PersistenceManager.from_config(config) as pm:
                yield SyncDriven(pm, category="checkpoint")
        else:
            async with AsyncPersistenceManager.from_config(config) as apm:
                yield KVStoreSaver(apm, category="checkpoint")

    return factory


@pytest.mark.parametrize("capability", CAPABILITIES)
@pytest.mark.parametrize("front", ["async", "sync"])
def test_conformance_on_a_manager_category(front: str, capability: str) -> None:
    report = asyncio.run(validate(_registered_manager(front), capabilities={capability}))
    result = report.results[capability]
    assert result.detected and result.tests_failed == 0 and result.passed, \
        "\n".join(result.failures)


@pytest.mark.parametrize("capability", CAPABILITIES)
@pytest.mark.parametrize("front", ["async", "sync"])
@pytest.mark.parametrize("kind", list(STORES))
def test_conformance(kind: str, front: str, capability: str) -> None:
    if kind == "postgres" and not POSTGRES_DSN:
        pytest.skip("KVSTORE_TEST_POSTGRES_DSN is not set: no PostgreSQL to test against")
    report = asyncio.run(validate(_registered(kind, front), capabilities={capability}))
    result = report.results[capability]
    assert result.detected, f"{capability} not detected on KVStoreSaver"
    assert result.tests_failed == 0 and result.passed, "\n".join(result.failures)
    assert result.tests_passed > 0
