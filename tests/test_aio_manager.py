"""AsyncPersistenceManager: the same config, data, rules and errors as the synchronous manager,
and an event loop that keeps running while Redis is frozen.

The async stores themselves run the conformance suite (``aio-*`` kinds in conftest).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from conftest import HAVE_REDIS_SERVER, POSTGRES_DSN, REDIS_URL
from kvstore import (ConfigError, ConflictError, KVStoreError, LockTimeout, NotAListError,
                     PersistenceManager, StoreUnavailableError)
from kvstore.aio import AsyncPersistenceManager

CATEGORIES = {
    "session": {"store": "memory"},
    "query_history": {"store": "cache", "ttl": "24h"},
    "preferences": {"store": "database"},
    "config": {"store": "file"},
    "memo": {"store": "database", "ttl": "10m"},
}


def _config(redis_url: str | None = None, **redis: Any) -> dict[str, Any]:
    persistence: dict[str, Any] = {"categories": CATEGORIES}
    if redis_url:
        persistence["redis"] = {"url": redis_url, "key_prefix": f"kvtest:{uuid.uuid4().hex[:8]}:",
                                **redis}
    return {"persistence": persistence}


@pytest.fixture
def config(data_dir):
    return _config(REDIS_URL)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@dataclass
class Point:
    x: int
    y: int


def test_the_async_manager_reads_and_writes_the_same_data(config):
    async def main() -> None:
        async with AsyncPersistenceManager.from_config(config) as pm:
            await pm.save("preferences:ann", {"theme": "dark"})
            await pm.save("config:ui", {"font": 14})
            await pm.save("query_history:q", ["a"])
            assert (await pm.route("query_history:q")).store == "cache"
            assert 86000 < await pm.ttl("query_history:q") <= 86400
            assert await pm.load("missing:x", default=5) == 5
            await pm.save("preferences:p", Point(1, 2))
            assert await pm.load("preferences:p", as_type=Point) == Point(1, 2)
            assert [k async for k in pm.keys("preferences:")] == ["preferences:ann",
                                                                 "preferences:p"]

    run(main())
    with PersistenceManager.from_config(config) as pm:
        assert pm.load("preferences:ann") == {"theme": "dark"}
        assert pm.load("config:ui") == {"font": 14}
        assert pm.load("query_history:q") == ["a"]
        pm.save("preferences:from-sync", 1)
        pm.clear("query_history:")

    async def again() -> None:
        async with AsyncPersistenceManager.from_config(config) as pm:
            assert await pm.load("preferences:from-sync") == 1

    run(again())


def test_every_routed_method(config):
    async def main() -> None:
        async with AsyncPersistenceManager.from_config(config) as pm:
            assert await pm.incr("preferences:n") == 1
            assert await pm.incr("preferences:n", 4) == 5
            assert await pm.add("config:once", 1) and not await pm.add("config:once", 2)
            assert await pm.update("memo:u", lambda v: v + 1, default=0) == 1
            assert 500 < await pm.ttl("memo:u") <= 600
            assert await pm.append("session:chat", "a") == 1
            assert await pm.append("session:chat", "b") == 2
            with pytest.raises(NotAListError):
                await pm.append("config:once", 1)
            assert await pm.touch("config:once", 100) and not await pm.touch("config:nope", 1)
            await pm.save_many({"session:a": 1, "preferences:b": 2, "config:c": 3})
            assert await pm.load_many(["config:c", "session:a", "nope:z"]) == {
                "config:c": 3, "session:a": 1}
            assert await pm.delete_many(["session:a", "config:c"]) == 2
            assert await pm.exists("preferences:b") and await pm.delete("preferences:b")
            assert not await pm.exists("preferences:b")
            assert await pm.clear("session:") == 1
            stats = await pm.stats()
            assert stats["file"]["saves"] >= 2 and stats["file"]["errors"] == 1

    run(main())


BAD_CALLS = [("", 1, None), ("preferences:x", 1, "5x"), ("preferences:x", object(), None),
             ("config:a//b", 1, None), ("config:" + "x" * 300, 1, None), ("session:x", 1, -1)]


@pytest.mark.parametrize("key,value,ttl", BAD_CALLS)
def test_same_errors_as_the_synchronous_manager(config, key, value, ttl):
    with PersistenceManager.from_config(config) as spm:
        with pytest.raises(Exception) as sync_error:
            spm.save(key, value, ttl)

    async def main() -> None:
        async with AsyncPersistenceManager.from_config(config) as pm:
            with pytest.raises(type(sync_error.value)) as err:
                await pm.save(key, value, ttl)
            assert str(err.value) == str(sync_error.value)

    run(main())


def test_transaction_commits_checks_and_rolls_back(config):
    async def main() -> None:
        async with AsyncPersistenceManager.from_config(config) as pm:
            await pm.save("preferences:a", 1)
            async with pm.transaction() as tx:
                a = await tx.load("preferences:a")
                tx.save("preferences:a", a + 1)
                tx.save("config:b", "new")
                tx.save("query_history:c", [1])
                tx.delete("session:none")
                assert await tx.load("config:b") == "new" and await tx.exists("config:b")
            assert await pm.load("preferences:a") == 2 and await pm.load("config:b") == "new"
            assert 86000 < await pm.ttl("query_history:c") <= 86400

            with pytest.raises(ConflictError):
                async with pm.transaction() as tx:
                    await tx.load("preferences:a")
                    await pm.save("preferences:a", 10)  # another writer
                    tx.save("config:b", "lost")
            assert await pm.load("config:b") == "new"

            with pytest.raises(RuntimeError):
                async with pm.transaction() as tx:
                    tx.save("config:b", "lost")
                    raise RuntimeError("boom")
            assert await pm.load("config:b") == "new"

    run(main())


def test_atomic_and_concurrent_tasks_lose_nothing(config):
    async def main() -> None:
        async with AsyncPersistenceManager.from_config(config) as pm:
            async def bump(tx: Any) -> int:
                n = await tx.load("preferences:n", 0)
                tx.save("preferences:n", n + 1)
                tx.save("config:n", n + 1)
                return n + 1

            results = await asyncio.gather(*[pm.atomic(bump, retries=1000) for _ in range(30)])
            assert sorted(results) == list(range(1, 31))
            assert await pm.load("config:n") == 30
            await asyncio.gather(*[pm.append("query_history:log", i) for i in range(40)])
            assert sorted(await pm.load("query_history:log")) == list(range(40))
            await asyncio.gather(*[pm.update("preferences:u", lambda v: v + 1, default=0)
                                   for _ in range(40)])
            assert await pm.load("preferences:u") == 40

    run(main())


def test_get_or_set_and_cached_compute_once(config):
    async def main() -> None:
        async with AsyncPersistenceManager.from_config(config) as pm:
            calls: list[int] = []

            async def factory() -> dict[str, int]:
                calls.append(1)
                await asyncio.sleep(0.2)
                return {"v": 1}

            values = await asyncio.gather(*[pm.get_or_set("memo:k", factory) for _ in range(8)])
            assert values == [{"v": 1}] * 8 and len(calls) == 1
            assert 500 < await pm.ttl("memo:k") <= 600

            @pm.cached(category="memo")
            async def square(x: int) -> int:
                calls.append(x)
                await asyncio.sleep(0.1)
                return x * x

            assert await asyncio.gather(*[square(4) for _ in range(5)]) == [16] * 5
            assert calls == [1, 4]
            assert await square.invalidate(4)
            assert await square(4) == 16 and calls == [1, 4, 4]

    run(main())


def test_lock_excludes_other_tasks_and_times_out(config):
    async def main() -> None:
        async with AsyncPersistenceManager.from_config(config) as pm:
            inside = 0
            most = 0

            async def worker() -> None:
                nonlocal inside, most
                async with pm.lock("config:job", ttl=10, timeout=10):
                    inside += 1
                    most = max(most, inside)
                    await asyncio.sleep(0.02)
                    inside -= 1

            await asyncio.gather(*[worker() for _ in range(5)])
            assert most == 1
            async with pm.lock("query_history:job", ttl=10):
                with pytest.raises(LockTimeout):
                    async with pm.lock("query_history:job", timeout=0.05):
                        pass

    run(main())


def test_events_fire_like_the_synchronous_manager(config):
    async def main() -> None:
        async with AsyncPersistenceManager.from_config(config) as pm:
            seen: list[tuple[str, str | None, str]] = []
            await pm.on("save", lambda e: seen.append((e.name, e.key, e.store)))
            await pm.on("load", lambda e: seen.append((e.name, e.key, e.store)))
            await pm.save("config:e", 1)
            await pm.load("config:e")
            assert seen == [("save", "config:e", "file"), ("load", "config:e", "file")]

    run(main())


def test_error_events_name_the_operation_like_the_synchronous_manager(config):
    async def main() -> None:
        async with AsyncPersistenceManager.from_config(config) as pm:
            errors: list[Any] = []
            await pm.on("error", errors.append)
            for call in (lambda: pm.save("config:bad", object()),
                         lambda: pm.append("config:text", 1),
                         lambda: pm.incr("config:text")):
                await pm.save("config:text", "not a number")
                with pytest.raises(KVStoreError):
                    await call()
            assert [e.operation for e in errors] == ["save", "append", "incr"]

    run(main())


def test_backup_from_the_async_manager(config, tmp_path):
    async def main() -> Any:
        async with AsyncPersistenceManager.from_config(config) as pm:
            await pm.save("preferences:b", 1)
            path = await pm.backup(tmp_path / "backups")
            await pm.save("preferences:b", 2)
            await pm.restore(path)
            assert await pm.load("preferences:b") == 1
            return path

    assert run(main()).exists()


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_REDIS_SERVER, reason="needs redis-server to start and freeze one")
def test_a_frozen_redis_never_stalls_the_event_loop(config, tmp_path):
    """Redis SIGSTOPped: a 10 ms ticker keeps ticking, the file store answers at once while a
    Redis call is stuck, and that call fails with StoreUnavailableError after its timeout."""
    from redis_servers import RedisServer, Ticker

    server = RedisServer(tmp_path / "redis").start()
    assert server.proc is not None
    cfg = _config(server.url, socket_timeout=1.0, connect_timeout=1.0)

    async def main() -> tuple[float, float, Any]:
        async with AsyncPersistenceManager.from_config(cfg) as pm:
            await pm.save("query_history:warm", 1)
            await pm.save("config:c", 1)
            async with Ticker() as ticker:
                os.kill(server.proc.pid, signal.SIGSTOP)
                try:
                    stuck = asyncio.ensure_future(pm.load("query_history:warm"))
                    await asyncio.sleep(0.05)
                    started = time.perf_counter()
                    assert await pm.load("config:c") == 1
                    file_latency = time.perf_counter() - started
                    redis_result = (await asyncio.gather(stuck, return_exceptions=True))[0]
                finally:
                    os.kill(server.proc.pid, signal.SIGCONT)
            return ticker.worst, file_latency, redis_result

    try:
        worst, file_latency, redis_result = run(main())
    finally:
        server.stop()
    assert isinstance(redis_result, StoreUnavailableError)
    assert file_latency < 0.5, f"the file store waited {file_latency:.3f}s for frozen Redis"
    assert worst < 0.5, f"the event loop stalled for {worst:.3f}s"


@pytest.mark.skipif(not POSTGRES_DSN, reason="KVSTORE_TEST_POSTGRES_DSN is not set: no PostgreSQL")
def test_postgres_tier_runs_on_the_asyncio_pool(data_dir):
    from kvstore.stores.postgres.aio import AsyncPostgresStore

    table = f"kvtest_{uuid.uuid4().hex[:8]}"
    config = {"persistence": {"postgres": {"dsn": POSTGRES_DSN, "table": table},
                              "categories": {"prefs": {"store": "database"}}}}

    async def main() -> None:
        async with AsyncPersistenceManager.from_config(config) as pm:
            assert isinstance(pm.stores["database"], AsyncPostgresStore)
            await asyncio.gather(*[pm.append("prefs:log", i) for i in range(20)])
            async with pm.transaction() as tx:
                tx.save("prefs:a", await tx.load("prefs:a", 0) + 1)

    try:
        run(main())
        with PersistenceManager.from_config(config) as pm:
            assert sorted(pm.load("prefs:log")) == list(range(20))
            assert pm.load("prefs:a") == 1
    finally:
        with PersistenceManager.from_config(config) as pm:
            pm.stores["database"].drop_table()


def test_assigning_a_store_takes_effect_for_the_next_call(config):
    from kvstore import MemoryStore

    async def main() -> None:
        async with AsyncPersistenceManager.from_config(config) as pm:
            await pm.save("config:k", "old")  # routes (and caches) config -> the file store
            old, other = pm.stores["file"], MemoryStore()
            pm.stores["file"] = other  # a synchronous store: the manager wraps it
            await pm.save("config:k", "new")
            assert other.load("config:k") == "new" and await old.load("config:k") == "old"
            assert await pm.load("config:k") == "new"
            async with pm.transaction() as tx:  # transactions commit on the new store too
                tx.save("config:t", 1)
            assert other.load("config:t") == 1
            with pytest.raises(ConfigError, match="'file'.*routes to it"):
                del pm.stores["file"]


def _counting_keys(sync: Any) -> list[int]:
    """Make ``sync``'s key listing count every key it hands out; returns the counter."""
    listed = [0]
    keys, keys_after = sync.raw_keys, sync.raw_keys_after

    def counted(found: Any) -> Any:
        for key in found:
            listed[0] += 1
            yield key

    sync.raw_keys = lambda prefix, *a: counted(keys(prefix, *a))
    sync.raw_keys_after = lambda prefix, after: counted(keys_after(prefix, after))
    return listed


def test_async_keys_stopped_early_do_not_list_every_key(data_dir):
    """50,000 keys in SQLite: taking 10 through the async store or the manager reads one page,
    not all 50,000 (the synchronous keys() pages the same way)."""
    config = {"persistence": {"categories": {"preferences": {"store": "database"},
                                             "session": {"store": "memory"}}}}

    async def main() -> None:
        async with AsyncPersistenceManager.from_config(config) as pm:
            database = pm.stores["database"]
            database.sync.save_many({f"preferences:{i:05d}": i for i in range(50_000)})
            listed = _counting_keys(database.sync)
            taken = []
            async for key in pm.keys("preferences:"):
                taken.append(key)
                if len(taken) == 10:
                    break
            assert taken == [f"preferences:{i:05d}" for i in range(10)]
            assert listed[0] <= 2_000, f"{listed[0]} keys listed to take 10"
            listed[0] = 0
            async for key, value in database.items("preferences:", start_after="preferences:30000"):
                assert (key, value) == ("preferences:30001", 30001)
                break
            assert listed[0] <= 2_000, f"{listed[0]} keys listed to take 1 item"

    run(main())


def test_a_save_with_a_listener_encodes_the_value_once(config):
    from test_manager import _CountingSerializer

    async def main() -> None:
        async with AsyncPersistenceManager.from_config(config) as pm:
            st = pm.stores["database"].sync
            st.serializer = counting = _CountingSerializer(st.serializer)
            sizes: list[Any] = []
            await pm.on("save", lambda e: sizes.append(e.size))
            await pm.save("preferences:c", {"a": [1, 2]})
            assert counting.calls == 1
            assert sizes == [len(counting.inner.serialize({"a": [1, 2]}))]
            assert await pm.load("preferences:c") == {"a": [1, 2]}

    run(main())


#: Three categories in three stores, each listing more than one page (1,000 keys) or less.
_THREE_STORES = {"persistence": {"categories": {"b": {"store": "database"}, "a": {"store": "memory"},
                                                "c": {"store": "file"}}}}
_THREE_STORE_KEYS = ([f"a:{i:04d}" for i in range(1_500)] + [f"b:{i:04d}" for i in range(2_100)]
                     + [f"c:{i:02d}" for i in range(30)])


def test_async_manager_merges_paged_stores_in_order(data_dir):
    """Keys of several stores come back as one sorted listing, paged by start_after/limit,
    across more than one page of each store."""
    config, names = _THREE_STORES, _THREE_STORE_KEYS

    async def main() -> None:
        async with AsyncPersistenceManager.from_config(config) as pm:
            await pm.save_many({name: 1 for name in names})
            assert [k async for k in pm.keys()] == sorted(names)
            page = [k async for k in pm.keys(start_after="a:1490", limit=20)]
            assert page == sorted(names)[1_491:1_511]
            assert [k async for k, _ in pm.items("b:", limit=3)] == ["b:0000", "b:0001", "b:0002"]

    run(main())


def test_async_manager_merges_stores_in_reverse(data_dir):
    """reverse=True on the async manager: the stores' descending pages merged in that order."""
    config, names = _THREE_STORES, _THREE_STORE_KEYS

    async def main() -> None:
        async with AsyncPersistenceManager.from_config(config) as pm:
            await pm.save_many({name: 1 for name in names})
            await pm.save("a:0007", 2, store="database")  # in two stores: listed once
            descending = sorted(names, reverse=True)
            assert [k async for k in pm.keys(reverse=True)] == descending
            page = [k async for k in pm.keys(start_after="b:0005", limit=20, reverse=True)]
            assert page == descending[descending.index("b:0005") + 1:][:20]
            assert [k async for k, _ in pm.items("c:", limit=2, reverse=True)] == ["c:29", "c:28"]
            log = pm.log("c:log")
            for i in range(5):
                await log.append(i)
            assert await log.tail(2) == [(4, 3), (5, 4)] and await log.last() == (5, 4)
            assert await log.read(after=3, reverse=True) == [(5, 4), (4, 3)]

    run(main())


@pytest.mark.skipif(not POSTGRES_DSN, reason="KVSTORE_TEST_POSTGRES_DSN is not set: no PostgreSQL")
def test_async_postgres_keys_page_by_query(data_dir):
    """The asyncio PostgreSQL driver runs one ordered query per page: taking 10 of 2,500 keys
    is one query, a full listing is three."""
    table = f"kvtest_{uuid.uuid4().hex[:8]}"
    config = {"persistence": {"postgres": {"dsn": POSTGRES_DSN, "table": table},
                              "categories": {"prefs": {"store": "database"}}}}

    async def main() -> None:
        async with AsyncPersistenceManager.from_config(config) as pm:
            database = pm.stores["database"]
            await pm.save_many({f"prefs:{i:04d}": i for i in range(2_500)})
            queries = [0]
            q_keys = database.sync.queries.keys

            def counted(*args: Any) -> Any:
                queries[0] += 1
                return q_keys(*args)

            database.sync.queries.keys = counted
            async for _ in pm.keys("prefs:"):
                break
            assert queries[0] == 1
            assert len([k async for k in pm.keys("prefs:", start_after="prefs:0499")]) == 2_000
            assert queries[0] == 4
            q_desc, asked = database.sync.queries.keys_desc, []

            def counted_desc(prefix: str, before: Any, page: int) -> Any:
                asked.append(page)
                return q_desc(prefix, before, page)

            database.sync.queries.keys_desc = counted_desc
            assert [k async for k in pm.keys("prefs:", limit=1, reverse=True)] == ["prefs:2499"]
            assert asked == [1]  # the latest key: one query of one row
            assert len([k async for k in pm.keys("prefs:", start_after="prefs:2000",
                                                 reverse=True)]) == 2_000
            assert asked == [1, 1000, 1000, 1000]

    try:
        run(main())
    finally:
        with PersistenceManager.from_config(config) as pm:
            pm.stores["database"].drop_table()


# -- the two fronts cannot drift: same methods, same signatures; every method called here ------

def _public(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in dir(obj) if not name.startswith("_")}


def _parameters(fn: Any) -> list[tuple[str, Any, Any]]:
    """Names, kinds and defaults (annotations differ by front: Iterator / AsyncIterator)."""
    import inspect

    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_both_managers_have_the_same_public_methods_and_signatures(data_dir):
    config = {"persistence": {"categories": CATEGORIES}}
    from kvstore.aio import AsyncTransaction
    from kvstore.manager import Transaction

    async def main() -> None:
        with PersistenceManager.from_config(config) as spm:
            async with AsyncPersistenceManager.from_config(config) as apm:
                ours, theirs = _public(spm), _public(apm)
                assert sorted(ours) == sorted(theirs)
                for name, fn in ours.items():
                    if callable(fn) and not isinstance(fn, type):
                        assert _parameters(fn) == _parameters(theirs[name]), name
        for name in ("__enter__", "__exit__"):
            assert _parameters(getattr(PersistenceManager, name)) == _parameters(
                getattr(AsyncPersistenceManager, name.replace("__", "__a", 1)))
        sync_tx, async_tx = _public(Transaction), _public(AsyncTransaction)
        assert sorted(sync_tx) == sorted(async_tx) == ["commit", "delete", "discard", "exists",
                                                       "load", "save"]
        for name, fn in sync_tx.items():
            assert _parameters(fn) == _parameters(async_tx[name]), name

    run(main())


def test_every_public_method_of_the_async_manager_is_called_by_a_test():
    """Each public name of AsyncPersistenceManager appears as ``pm.<name>`` (or
    ``AsyncPersistenceManager.<name>``) in this file."""
    import re
    from pathlib import Path

    source = Path(__file__).read_text()
    uncalled = [name for name in _public(AsyncPersistenceManager)
                if not re.search(rf"(\bpm|AsyncPersistenceManager)\.{name}\b", source)]
    assert not uncalled


def test_the_rarely_used_methods(data_dir, tmp_path):
    """items, logs, log, off, save_snapshot, restore/backup with progress, route, health,
    from_yaml, repr and a second close: each called, each result checked."""
    (tmp_path / "kv.yaml").write_text(
        f"persistence:\n  memory: {{snapshot: '{tmp_path / 'memory.snapshot'}'}}\n"
        "  categories:\n    session: {store: memory}\n"
        "    config: {store: file}\n    preferences: {store: database}\n")

    async def main() -> None:
        pm = AsyncPersistenceManager.from_yaml(tmp_path / "kv.yaml", max_workers=2)
        async with pm:
            assert "AsyncPersistenceManager(memory=MemoryStore" in repr(pm)
            assert (await pm.route("config:x")).store == "file"
            assert [h.status for h in (await pm.health()).values()] == ["ok"] * 4
            await pm.save_many({"preferences:a": 1, "preferences:b": 2, "config:c": 3})
            assert [kv async for kv in pm.items("preferences:")] == [("preferences:a", 1),
                                                                   ("preferences:b", 2)]
            assert [kv async for kv in pm.items(batch=1, limit=2)] == [("config:c", 3),
                                                                     ("preferences:a", 1)]
            log = pm.log("config:events")
            assert await log.append({"n": 1}) == 1 and await log.append({"n": 2}) == 2
            await pm.log("preferences:audit").append("x")
            assert await log.read() == [(1, {"n": 1}), (2, {"n": 2})]
            assert [n async for n in pm.logs()] == ["config:events", "preferences:audit"]
            assert [n async for n in pm.logs("config:")] == ["config:events"]
            assert [n async for n in pm.logs(store="database")] == ["preferences:audit"]
            seen: list[str] = []
            listener = await pm.on("save", lambda e: seen.append(e.key))
            await pm.save("session:1", 1)
            assert await pm.off("save", listener) is None
            await pm.save("session:2", 2)
            assert seen == ["session:1"]
            assert await pm.save_snapshot() == 2
            assert (tmp_path / "memory.snapshot").exists()
            counted: list[int] = []
            path = await pm.backup(tmp_path / "backups", progress=counted.append)
            assert counted and counted[-1] >= 3
            await pm.save("preferences:a", 10)
            restored: list[int] = []
            counts = await pm.restore(path, progress=restored.append)
            assert counts["database"] == 2 and restored
            assert await pm.load("preferences:a") == 1
        assert await pm.close() is None  # safe twice

    run(main())
