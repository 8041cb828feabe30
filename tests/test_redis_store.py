"""RedisStore beyond the conformance suite: namespaces, native TTLs, round trips, outages,
Sentinel. Private servers are started on free loopback ports and stopped by their pid."""

from __future__ import annotations

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
    finally:
        sentinel.stop()
        primary.stop()
