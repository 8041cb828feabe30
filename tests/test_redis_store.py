"""RedisStore beyond the conformance suite: namespaces, native TTLs, round trips, outages,
Sentinel. Private servers are started on free loopback ports and stopped by their pid."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from kvstore import ConfigError, RedisStore, StoreUnavailableError

from conftest import REDIS_URL, _redis_build
from redis_servers import HAVE_REDIS_SERVER, RedisServer, free_port

needs_server = pytest.mark.skipif(not HAVE_REDIS_SERVER,
                                  reason="redis-server / redis-cli not on PATH")


@pytest.fixture
def make():
    made = []

    def build(prefix=None, **kw):
        store = _redis_build(REDIS_URL, prefix if prefix is not None else
                             f"kvtest:{uuid.uuid4().hex[:8]}:")(**kw)
        made.append(store)
        return store

    yield build
    for store in made:
        store.clear()
        store.close()


def test_real_server_is_reachable_when_configured():
    """With KVSTORE_TEST_REDIS_URL set the suite must reach that server: fail, never skip."""
    if not REDIS_URL:
        pytest.skip("KVSTORE_TEST_REDIS_URL not set: the Redis tests use fakeredis")
    store = RedisStore(url=REDIS_URL, key_prefix=f"kvtest:{uuid.uuid4().hex}:")
    assert store.save("ping", 1) and store.load("ping") == 1
    store.clear()


def test_empty_server_variables_mean_unset(tmp_path):
    """``KVSTORE_TEST_REDIS_URL=`` (empty) runs the Redis tests on fakeredis, as when it is unset;
    an empty ``KVSTORE_TEST_POSTGRES_DSN`` skips PostgreSQL the same way."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    env = dict(os.environ, KVSTORE_TEST_REDIS_URL="", KVSTORE_TEST_POSTGRES_DSN=" ",
               KVSTORE_DATA_DIR=str(tmp_path / "data"))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{tests / 'test_redis_store.py'}::test_key_prefix_isolates_applications",
         f"{tests / 'test_redis_store.py'}::test_real_server_is_reachable_when_configured",
         f"{tests / 'test_postgres_store.py'}"],
        cwd=tests.parent, env=env, capture_output=True, text=True, timeout=120)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert re.search(r"\b1 passed, \d+ skipped", out) and not re.search(r"\d+ (error|failed)", out), out


def test_key_prefix_isolates_applications(make):
    ns = uuid.uuid4().hex[:8]
    app_a = make(prefix=f"{ns}:a:")
    app_b = make(prefix=f"{ns}:b:")
    app_a.save("user:1", "from a")
    app_b.save("user:1", "from b")
    assert app_a.load("user:1") == "from a"
    assert list(app_a.keys()) == ["user:1"]
    assert app_a.clear() == 1
    assert app_b.load("user:1") == "from b"
    assert app_a._client.get(f"{ns}:b:user:1") is not None  # stored under the real prefix


def test_glob_characters_in_key_prefix_are_literal(make):
    ns = uuid.uuid4().hex[:8]
    star = make(prefix=f"{ns}:*")
    other = make(prefix=f"{ns}:x")
    other.save("k", 1)
    star.save("k", 2)
    assert list(star.keys()) == ["k"]
    assert star.clear() == 1
    assert other.load("k") == 1


def test_native_ttl(make):
    store = make(ttl_default=None)
    store.save("t", 1, ttl=90)
    assert 89_000 < store._client.pttl(store.key_prefix + "t") <= 90_000
    store.save("p", 1)
    assert store._client.pttl(store.key_prefix + "p") == -1


def test_default_ttl_is_an_hour(make):
    store = make(ttl_default=3600)
    store.save("d", 1)
    assert 3590 < store.ttl("d") <= 3600
    assert store.incr("counter") == 1
    assert 3590 < store.ttl("counter") <= 3600


def test_load_many_is_one_round_trip(make):
    store = make()
    store.save_many({f"k{i}": i for i in range(100)})
    calls = []
    real = store._client.execute_command

    def counting(*args, **kw):
        calls.append(args[0])
        return real(*args, **kw)

    store._client.execute_command = counting
    try:
        assert len(store.load_many([f"k{i}" for i in range(100)])) == 100
    finally:
        store._client.execute_command = real
    assert calls == ["MGET"]


def test_url_password_from_environment_is_masked(monkeypatch):
    monkeypatch.setenv("REDIS_PASSWORD", "hunter2")
    store = RedisStore(url="redis://127.0.0.1:6379/0")
    assert store._client.connection_pool.connection_kwargs["password"] == "hunter2"
    assert "hunter2" not in repr(store)
    url_store = RedisStore(url="redis://app:s3cret@127.0.0.1:6379/0")
    assert "s3cret" not in repr(url_store) and "***" in repr(url_store)


@pytest.mark.parametrize("url", ["http://localhost", "localhost:6379", "redis+nope://x"])
def test_bad_urls_are_config_errors(url):
    with pytest.raises(ConfigError):
        RedisStore(url=url)


def test_unreachable_port_gives_unavailable_within_the_timeout():
    store = RedisStore(url=f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.5)
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError) as err:
        store.load("x")
    assert time.monotonic() - start < 3
    assert "redis://127.0.0.1" in str(err.value)
    with pytest.raises(StoreUnavailableError):
        store.save_many({"a": 1})
    with pytest.raises(StoreUnavailableError):
        list(store.keys())


@needs_server
def test_killed_server_then_recovery_without_restart(tmp_path):
    server = RedisServer(tmp_path / "r").start()
    try:
        store = RedisStore(url=server.url, ttl_default=None, socket_timeout=1, connect_timeout=1)
        store.save("before", 1)
        server.kill()
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            store.load("before")
        with pytest.raises(StoreUnavailableError):
            store.save("during", 1)
        assert time.monotonic() - start < 5
        server.start()  # same port, empty (no persistence)
        deadline = time.monotonic() + 10
        while True:
            try:
                store.save("after", 2)
                break
            except StoreUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert store.load("after") == 2
        assert store.incr("n") == 1
        store.close()
    finally:
        server.stop()


@needs_server
def test_sentinel_url_follows_the_primary(tmp_path):
    primary = RedisServer(tmp_path / "primary").start()
    sentinel_port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {sentinel_port}\nbind 127.0.0.1\ndaemonize no\n"
                    f"sentinel monitor kvmain 127.0.0.1 {primary.port} 1\n")
    sentinel = RedisServer(tmp_path / "sentinel", sentinel_port)
    import subprocess

    sentinel.proc = subprocess.Popen(["redis-server", str(conf), "--sentinel"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from redis_servers import _ping

        deadline = time.monotonic() + 10
        while not _ping(sentinel_port):
            assert time.monotonic() < deadline, "sentinel did not start"
            time.sleep(0.05)
        store = RedisStore(url=f"redis+sentinel://127.0.0.1:{sentinel_port}/kvmain/0",
                           ttl_default=None)
        store.save("via-sentinel", {"ok": True})
        assert store.load("via-sentinel") == {"ok": True}
        direct = RedisStore(url=primary.url, ttl_default=None)
        assert direct.load("via-sentinel") == {"ok": True}
        with pytest.raises(ConfigError):
            RedisStore(url=f"redis+sentinel://127.0.0.1:{sentinel_port}")
        # The Sentinel client's pool waits too, sync and asyncio.
        before = _clients(primary.port)
        pooled = RedisStore(url=f"redis+sentinel://127.0.0.1:{sentinel_port}/kvmain/0"
                            "?max_connections=4", key_prefix="pooled:")
        _many_increments(pooled, threads=100, tasks=500)
        assert _clients(primary.port) - before <= 4
        pooled.clear()
    finally:
        sentinel.stop()
        primary.stop()


def _many_increments(store: RedisStore, threads: int, tasks: int) -> None:
    """``threads`` threads, then ``tasks`` asyncio tasks, each incrementing one counter once:
    every increment counted, none refused."""
    import asyncio
    import threading

    from kvstore.stores.redis.aio import AsyncRedisStore

    go = threading.Barrier(threads)
    workers = [threading.Thread(target=lambda: (go.wait(), store.incr("n"))) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert store.load("n") == threads

    async def main():
        astore = AsyncRedisStore(store)
        await asyncio.gather(*(astore.incr("n") for _ in range(tasks)))
        await astore.close()

    asyncio.run(main())
    assert store.load("n") == threads + tasks


@pytest.mark.cluster
def test_cluster_clients_wait_for_connections_too(redis_cluster_url):
    """Sync: a blocking pool per node. asyncio: redis-py's cluster pools raise when full, so
    the store admits max_connections commands at a time; a wait past pool_timeout raises."""
    import asyncio

    from kvstore.stores.redis.aio import AsyncRedisStore

    # 1,000 tasks through 3 slots wait their turn; a generous pool_timeout keeps a loaded CI
    # machine's slow round trips from turning the wait into a timeout (tested below, at 0.3 s).
    store = RedisStore(url=redis_cluster_url, key_prefix="{pool}:", max_connections=3,
                       pool_timeout=60)
    _many_increments(store, threads=100, tasks=1000)
    for node in store._client.get_nodes():
        pool = node.redis_connection.connection_pool
        assert pool.max_connections == 3 and len(pool._connections) <= 3
    store.clear()
    store.close()
    store = RedisStore(url=redis_cluster_url, key_prefix="{pool}:", max_connections=3,
                       pool_timeout=0.3)

    async def main():
        astore = AsyncRedisStore(store)
        await astore.load("n")
        for _ in range(3):
            await astore._gate.acquire()   # every slot busy
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="pool_timeout=0.3s"):
            await astore.save("k", 1)
        assert time.monotonic() - start < 2
        astore._gate.release()
        assert await astore.save("k", 1)
        await astore.close()

    asyncio.run(main())
    store.clear()
    store.close()


# -- connection pools: callers beyond max_connections wait, never fail ------------------------------


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):
    if not HAVE_REDIS_SERVER:
        pytest.skip("redis-server / redis-cli not on PATH")
    server = RedisServer(tmp_path_factory.mktemp("pool")).start()
    yield server
    server.stop()


def _clients(port: int) -> int:
    import redis

    with redis.Redis(port=port) as r:
        return int(r.info("clients")["connected_clients"]) - 1  # less this one


def test_asyncio_gather_of_a_thousand_increments_waits_for_connections(private_redis):
    """main: 200 concurrent ``pm.incr`` raised "Too many connections" (redis-py's asyncio pool
    holds 100 and raises instead of waiting)."""
    import asyncio

    from kvstore.aio import AsyncPersistenceManager

    config = {"persistence": {"redis": {"url": private_redis.url, "key_prefix": "pool:",
                                        "max_connections": 20},
                              "categories": {"hits": {"store": "cache"}}}}
    seen = []

    async def main():
        async with AsyncPersistenceManager.from_config(config) as pm:
            async def one():
                n = await pm.incr("hits:page")
                seen.append(_clients(private_redis.port) if n % 250 == 0 else 0)
                return n
            results = await asyncio.gather(*(one() for _ in range(1000)))
            assert sorted(results) == list(range(1, 1001))
            assert await pm.load("hits:page") == 1000
            await pm.delete("hits:page")

    asyncio.run(main())
    assert max(seen) <= 20 + 1   # the async store's 20, the sync twin's one at most


def test_two_hundred_threads_share_a_bounded_pool(private_redis):
    import threading

    store = RedisStore(url=private_redis.url, key_prefix="threads:", max_connections=10)
    go = threading.Barrier(200)
    errors = []

    def work():
        go.wait()
        try:
            for _ in range(5):
                store.incr("n")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.load("n") == 1000
    assert _clients(private_redis.port) <= 10  # main: one connection per thread, unbounded
    store.clear()
    store.close()


def test_a_wait_past_pool_timeout_names_the_store_and_the_settings(private_redis):
    import asyncio

    from kvstore.stores.redis.aio import AsyncRedisStore

    store = RedisStore(url=private_redis.url, key_prefix="busy:", max_connections=1,
                       pool_timeout=0.2)
    held = store._client.connection_pool.get_connection()   # the only connection, busy
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError) as err:
        store.save("k", 1)
    assert 0.15 < time.monotonic() - start < 2
    message = str(err.value)
    assert private_redis.url in message
    assert "max_connections=1" in message and "pool_timeout=0.2s" in message
    store._client.connection_pool.release(held)
    assert store.save("k", 1) and store.load("k") == 1   # works again once one is free

    async def main():
        astore = AsyncRedisStore(store)
        pool = astore._client.connection_pool
        busy = await pool.get_connection()
        with pytest.raises(StoreUnavailableError, match="max_connections=1"):
            await astore.load("k")
        await pool.release(busy)
        assert await astore.load("k") == 1
        await astore.close()

    asyncio.run(main())
    store.clear()
    store.close()


def test_pool_settings_from_yaml_url_and_arguments(private_redis, data_dir):
    from kvstore import PersistenceManager
    from kvstore.stores.opening import open_url

    base = f"redis://127.0.0.1:{private_redis.port}/0"
    store = open_url(f"{base}?max_connections=7&pool_timeout=2.5&key_prefix=u:")
    assert (store.max_connections, store.pool_timeout, store.url) == (7, 2.5, base)
    assert store._client.connection_pool.max_connections == 7
    store.close()
    store = RedisStore(url=base, max_connections=3, pool_timeout=1)
    assert (store.max_connections, store.pool_timeout) == (3, 1.0)
    store.close()
    store = RedisStore(url=f"{base}?health_check_interval=7&max_connections=2")  # others kept
    assert store.url == f"{base}?health_check_interval=7" and store.max_connections == 2
    assert store._client.connection_pool.connection_kwargs["health_check_interval"] == 7
    store.close()
    assert RedisStore(url=base).max_connections == 50
    with PersistenceManager.from_config({"persistence": {"redis": {
            "url": base, "max_connections": 12, "pool_timeout": "3"}}}) as pm:
        assert (pm.stores["cache"].max_connections, pm.stores["cache"].pool_timeout) == (12, 3.0)
    for bad in ("max_connections=0", "max_connections=x", "pool_timeout=-1", "pool_timeout=soon"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            open_url(f"{base}?{bad}")
    with pytest.raises(ConfigError, match="max_connections"):
        RedisStore(url=base, max_connections=0)
    for setting, value in (("max_connections", 0), ("pool_timeout", 0), ("max_connections", "x")):
        with pytest.raises(ConfigError, match=f"persistence.redis.{setting}"):
            PersistenceManager.from_config({"persistence": {"redis": {"url": base,
                                                                       setting: value}}})


def test_pooled_connections_still_never_resend_a_command(private_redis):
    """The blocking pool keeps kvstore's rule: a command whose reply is lost is not sent again
    (an INCRBY sent twice would count twice)."""
    store = RedisStore(url=private_redis.url, key_prefix="once:")
    kwargs = store._client.connection_pool.connection_kwargs
    assert kwargs["retry"].get_retries() == 0 and not kwargs.get("retry_on_timeout")
    store.close()
