"""The near cache (issue 24): a per-process copy of hot values in front of Redis, kept coherent
by client tracking. Every test runs on private redis-server processes (tests/redis_servers.py):
CLIENT KILL, CONFIG SET and FLUSHDB must never touch the shared server's other clients.

- the conformance suite (kvstore.testing) on NearStore over Redis and Redis Cluster, both fronts;
- invalidations: a write by another process evicts; a read's reply that raced an invalidation
  is not kept; writes through the store evict at once; a copy never outlives the key's TTL;
- the channel: CLIENT KILL -> flushed and bypassed while it cannot come back, then recovers.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import HAVE_REDIS_SERVER
from kvstore import RedisStore
from kvstore.stores.near import NearSettings, NearStore

pytestmark = pytest.mark.skipif(not HAVE_REDIS_SERVER,
                                reason="redis-server / redis-cli not on PATH")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from redis_servers import RedisServer

    srv = RedisServer(tmp_path_factory.mktemp("near-redis")).start()
    try:
        yield srv
    finally:
        srv.stop()


def open_near(url: str, prefix: str, cluster: bool = False, **options: Any) -> NearStore:
    """A NearStore over a RedisStore (module level: the multi-process tests pickle it)."""
    options.setdefault("ttl_default", None)
    inner = RedisStore(url=url, key_prefix=prefix, cluster=cluster or None, **options)
    store = NearStore(inner, NearSettings(), wait=10)
    assert store.tracking, "the invalidation channel did not come up"
    return store


def _admin(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url.replace("redis+cluster://", "redis://"))


def _tracking_ids(admin: Any) -> list[int]:
    """The near caches' channels: connections that redirect their invalidations to themselves."""
    return [int(c["id"]) for c in admin.client_list()
            if c.get("redir") not in (None, "-1", "0") and c.get("redir") == c.get("id")]


# The conformance suite runs on NearStore as the kinds redis-near, redis-cluster-near and their
# aio- twins of tests/conftest.py (private servers): ``pytest tests/test_conformance.py -k near``.


def test_the_async_face_is_native(server: Any) -> None:
    from kvstore.aio import async_store
    from kvstore.stores.near.aio import AsyncNearStore
    from kvstore.stores.redis.aio import AsyncRedisStore

    store = open_near(server.url, "near:face:")
    try:
        face = async_store(store)
        assert type(face) is AsyncNearStore and type(face.inner) is AsyncRedisStore
        assert face.near is store.near  # one set of copies, one channel, for both fronts
    finally:
        store.close()


# -- invalidation ---------------------------------------------------------------------------------


@pytest.fixture
def near(server: Any) -> Iterator[NearStore]:
    store = open_near(server.url, f"near:{uuid.uuid4().hex[:8]}:")
    yield store
    store.close()


def _settle() -> None:
    """Let the echo of this process's own writes arrive: Redis announces them on the channel
    too, and an echo that comes after the next read's fill evicts that copy (harmless, but
    the tests count hits)."""
    time.sleep(0.05)


def _eventually(check: Any, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.002)
    return check()


def _write_elsewhere(url: str, prefix: str, key: str, value: Any) -> None:
    """Save through a plain RedisStore in another process (acknowledged when it exits)."""
    code = ("import sys; from kvstore import RedisStore; "
            "RedisStore(url=sys.argv[1], key_prefix=sys.argv[2]).save(sys.argv[3], "
            "eval(sys.argv[4]), ttl=None)")
    subprocess.run([sys.executable, "-c", code, url, prefix, key, repr(value)], check=True,
                   timeout=60, cwd=str(Path(__file__).parent))


def test_a_write_by_another_process_evicts_the_copy(near: NearStore, server: Any) -> None:
    near.save("k", {"v": 1})
    _settle()
    assert near.load("k") == {"v": 1}
    hits = near.near_stats()["near_hits"]
    assert near.load("k") == {"v": 1}
    assert near.near_stats()["near_hits"] == hits + 1  # served locally
    _write_elsewhere(server.url, near.inner.key_prefix, "k", {"v": 2})
    assert _eventually(lambda: near.load("k") == {"v": 2}), "the invalidation never arrived"


def test_a_known_missing_key_is_invalidated_when_created(near: NearStore, server: Any) -> None:
    assert near.load("absent", "none") == "none"
    assert near.load("absent", "none") == "none"
    assert near.near_stats()["near_hits"] == 1  # the miss itself is kept
    _write_elsewhere(server.url, near.inner.key_prefix, "absent", 7)
    assert _eventually(lambda: near.load("absent") == 7)


def test_a_reply_that_raced_an_invalidation_is_not_kept(near: NearStore, server: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The read is answered with the old value; before the reply is handled another client
    writes and its invalidation arrives. Keeping the reply would serve the old value until the
    local ttl (60 s): it must be dropped."""
    near.save("race", "old")
    admin = _admin(server.url)
    real = near.inner.raw_snapshot
    generations = []

    def racing(keys: list[str]) -> Any:
        rows = real(keys)  # the old value, as Redis answered before the write
        flushes = near.near.flushes
        admin.set(near.inner.key_prefix + "race", near.inner.encode("race", "new"))
        time.sleep(0.05)  # the invalidation arrives on the channel meanwhile
        generations.append(near.near.flushes == flushes)
        return rows

    monkeypatch.setattr(near.inner, "raw_snapshot", racing)
    assert near.load("race") == "old"  # what the read returned: current when it was sent
    monkeypatch.undo()
    assert generations == [True] and near.tracking
    assert near.load("race") == "new"  # not the kept old reply


def test_a_read_in_flight_across_this_process_write_is_not_kept(
        near: NearStore, monkeypatch: pytest.MonkeyPatch) -> None:
    near.save("own", 1)
    real = near.inner.raw_snapshot

    def racing(keys: list[str]) -> Any:
        rows = real(keys)
        near.save("own", 2)  # this process writes while the read's reply is in flight
        return rows

    # The echo invalidation of the write must not be what saves us: delay it out of the way.
    monkeypatch.setattr(near.inner, "raw_snapshot", racing)
    monkeypatch.setattr(near.tracker, "_invalidated", lambda keys: None)
    assert near.load("own") == 1
    monkeypatch.setattr(near.inner, "raw_snapshot", real)
    assert near.load("own") == 2


def test_writes_through_the_store_update_the_copy_at_once(
        near: NearStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(near.tracker, "_invalidated", lambda keys: None)  # no echo help
    near.save("w", 1)
    assert near.load("w") == 1 and near.load("w") == 1
    near.save("w", 2)
    assert near.load("w") == 2
    assert near.incr("n") == 1 and near.load("n") == 1
    assert near.incr("n", 5) == 6 and near.load("n") == 6
    assert near.update("w", lambda v: v + 10) == 12 and near.load("w") == 12
    assert near.append("l", "a") == 1 and near.load("l") == ["a"]
    assert near.append("l", "b") == 2 and near.load("l") == ["a", "b"]
    near.save_many({"w": 3, "x": 4})
    assert near.load_many(["w", "x"]) == {"w": 3, "x": 4}
    assert near.delete("w") and near.load("w") is None
    assert near.add("w", 5) and near.load("w") == 5
    with _commit(near, "w", 6):
        pass
    assert near.load("w") == 6
    assert near.clear("") >= 3 and near.load("x") is None


class _commit:
    """A raw commit, as a transaction's."""

    def __init__(self, store: NearStore, key: str, value: Any) -> None:
        self.cm = store.raw_commit([(key, store.encode(key, value), None)], [])

    def __enter__(self) -> None:
        self.cm.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.cm.__exit__(*exc)


def test_a_copy_never_outlives_the_keys_ttl(near: NearStore, server: Any) -> None:
    admin = _admin(server.url)
    admin.set(near.inner.key_prefix + "short", near.inner.encode("short", "v"), px=300)
    assert near.load("short") == "v" and near.load("short") == "v"
    time.sleep(0.35)
    assert near.load("short") is None  # the server's expiry, even if its invalidation is late


def test_the_copies_are_bounded(server: Any) -> None:
    inner = RedisStore(url=server.url, key_prefix=f"near:{uuid.uuid4().hex[:8]}:")
    with NearStore(inner, NearSettings(max_entries=3, ttl=60), wait=10) as store:
        for i in range(6):
            store.save(f"k{i}", i)
        _settle()
        for i in range(6):
            store.load(f"k{i}")
        assert len(store.near) == 3
        store.load("k5")
        assert store.near_stats()["near_hits"] == 1


def test_only_the_configured_categories_are_kept(server: Any) -> None:
    inner = RedisStore(url=server.url, key_prefix=f"near:{uuid.uuid4().hex[:8]}:")
    with NearStore(inner, None, {"settings": NearSettings(ttl=60)}, wait=10) as store:
        store.save("settings:a", 1)
        store.save("other:a", 2)
        _settle()
        for _ in range(3):
            assert store.load("settings:a") == 1 and store.load("other:a") == 2
        assert store.near_stats() == {"near_hits": 2, "near_misses": 1}
        assert len(store.near) == 1


def test_the_local_ttl_is_a_limit(server: Any) -> None:
    inner = RedisStore(url=server.url, key_prefix=f"near:{uuid.uuid4().hex[:8]}:")
    with NearStore(inner, NearSettings(ttl=0.2), wait=10) as store:
        store.save("a", 1, ttl=None)
        _settle()
        store.load("a")
        assert store.load("a") == 1 and store.near_stats()["near_hits"] == 1
        time.sleep(0.25)
        assert store.load("a") == 1 and store.near_stats()["near_misses"] == 2


def test_flushdb_drops_every_copy(near: NearStore, server: Any) -> None:
    near.save("f", 1)
    _settle()
    near.load("f")
    assert len(near.near) == 1
    _admin(server.url).flushdb()
    assert _eventually(lambda: len(near.near) == 0)
    assert near.load("f") is None


# -- the channel ----------------------------------------------------------------------------------


def test_client_kill_flushes_and_bypasses_until_tracking_is_back(near: NearStore,
                                                                 server: Any) -> None:
    admin = _admin(server.url)
    near.save("c", "before")
    _settle()
    assert near.load("c") == "before" and near.load("c") == "before"
    mine = [i for i in _tracking_ids(admin)]
    assert mine, "no tracking connection on the server"
    established = near.tracker.established
    connected = int(admin.info("clients")["connected_clients"])
    admin.config_set("maxclients", connected)  # the channel cannot come back for now
    try:
        for client_id in mine:
            admin.client_kill_filter(_id=client_id)
        assert _eventually(lambda: not near.tracking)
        assert len(near.near) == 0
        # Written while nothing announces writes: the store reads Redis, keeps nothing.
        admin.set(near.inner.key_prefix + "c", near.inner.encode("c", "during"))
        misses = near.near_stats()["near_misses"]
        assert near.load("c") == "during" and near.load("c") == "during"
        assert near.near_stats()["near_misses"] == misses + 2 and len(near.near) == 0
    finally:
        admin.config_set("maxclients", 10000)
    assert near.wait_tracking(10) and near.tracker.established > established
    _settle()
    assert near.load("c") == "during" and near.load("c") == "during"
    assert len(near.near) == 1  # kept again
    _write_elsewhere(server.url, near.inner.key_prefix, "c", "after")
    assert _eventually(lambda: near.load("c") == "after")


def test_a_restarted_redis_is_tracked_again(tmp_path: Path) -> None:
    from redis_servers import RedisServer

    srv = RedisServer(tmp_path / "r").start()
    try:
        store = open_near(srv.url, "near:restart:", socket_timeout=0.5, connect_timeout=0.5)
        store.save("r", 1)
        assert store.load("r") == 1 and store.load("r") == 1
        srv.kill()
        assert _eventually(lambda: not store.tracking)
        assert len(store.near) == 0
        srv.start()  # empty: nothing was persisted
        assert store.wait_tracking(10)
        assert store.load("r") is None
        store.close()
    finally:
        srv.stop()


def test_a_reader_changing_a_loaded_value_changes_no_copy(server: Any) -> None:
    inner = RedisStore(url=server.url, key_prefix=f"near:{uuid.uuid4().hex[:8]}:")
    with NearStore(inner, NearSettings(), wait=10) as store:
        store.save("d", {"a": [1]})
        _settle()
        first = store.load("d")
        first["a"].append(2)
        assert store.load("d") == {"a": [1]} and store.near_stats()["near_hits"] == 1
    inner = RedisStore(url=server.url, key_prefix=inner.key_prefix)
    with NearStore(inner, NearSettings(shared=True), wait=10) as store:
        store.load("d")
        assert store.load("d") is store.load("d")  # shared: one object, read-only by contract


def test_a_cluster_slot_move_flushes_and_tracks_again(tmp_path: Path) -> None:
    from redis_servers import start_cluster

    cluster = start_cluster(tmp_path / "cluster")
    try:
        store = open_near(cluster.url, "near:slots:", cluster=True)
        store.save("s", 1)
        _settle()
        assert store.load("s") == 1 and store.load("s") == 1 and len(store.near) == 1
        established, flushes = store.tracker.established, store.near.flushes
        ports = [node.port for node in cluster.nodes]
        ids = [subprocess.run(["redis-cli", "-p", str(port), "cluster", "myid"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
               for port in ports]
        subprocess.run(["redis-cli", "--cluster", "reshard", f"127.0.0.1:{ports[0]}",
                        "--cluster-from", ids[0], "--cluster-to", ids[1],
                        "--cluster-slots", "1", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        assert _eventually(lambda: store.tracker.established > established, timeout=10)
        assert store.near.flushes > flushes and store.tracking
        _settle()
        assert store.load("s") == 1 and store.load("s") == 1
        _write_elsewhere(cluster.url, "near:slots:", "s", 2)
        assert _eventually(lambda: store.load("s") == 2)
        store.close()
    finally:
        cluster.stop()


def test_local_hits_on_an_event_loop_do_not_hold_up_invalidations(near: NearStore,
                                                                   server: Any) -> None:
    """A coroutine whose every load is a local hit never suspends: the channel must still
    be read (its listener is a thread, handed the GIL every few milliseconds)."""
    import asyncio
    import threading

    from kvstore.aio import async_store

    face = async_store(near)
    near.save("loop", "old")
    _settle()
    assert near.load("loop") == "old"
    written: list[float] = []

    def write_later() -> None:
        time.sleep(0.2)
        writer = RedisStore(url=server.url, key_prefix=near.inner.key_prefix)
        writer.save("loop", "new")
        written.append(time.monotonic())
        writer.close()

    async def spin() -> float:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if await face.load("loop") == "new":
                return time.monotonic()
        raise AssertionError("the invalidation never reached a spinning event loop")

    thread = threading.Thread(target=write_later)
    thread.start()
    seen = asyncio.run(spin())
    thread.join()
    assert seen - written[0] < 0.5


def test_on_the_async_front_a_reply_that_raced_an_invalidation_is_not_kept(
        near: NearStore, server: Any) -> None:
    import asyncio

    from kvstore.aio import async_store

    face = async_store(near)
    near.save("arace", "old")
    _settle()
    admin = _admin(server.url)
    real = face.inner.raw_snapshot

    async def racing(keys: list[str]) -> Any:
        rows = await real(keys)
        admin.set(near.inner.key_prefix + "arace", near.inner.encode("arace", "new"))
        await asyncio.sleep(0.05)  # the invalidation arrives meanwhile
        return rows

    async def main() -> list[Any]:
        face.inner.raw_snapshot = racing
        first = await face.load("arace")
        face.inner.raw_snapshot = real
        return [first, await face.load("arace"), await face.load("arace")]

    assert asyncio.run(main()) == ["old", "new", "new"]


def test_a_forked_child_gets_its_own_channel(near: NearStore, server: Any) -> None:
    """A pre-forking server forks after opening the store: the child's copies (inherited)
    must not be served without a listener of its own."""
    import multiprocessing

    near.save("fk", 1)
    _settle()
    assert near.load("fk") == 1 and len(near.near) == 1
    ctx = multiprocessing.get_context("fork")
    here, there = ctx.Pipe()
    before = near.tracker.established

    def child() -> None:
        ok = near.wait_tracking(10) and near.tracker.established > before
        there.send(ok)
        there.recv()  # the parent wrote 2
        there.send(_eventually(lambda: near.load("fk") == 2, timeout=5))

    proc = ctx.Process(target=child)
    proc.start()
    try:
        assert here.poll(30) and here.recv() is True
        _write_elsewhere(server.url, near.inner.key_prefix, "fk", 2)
        here.send("written")
        assert here.poll(30) and here.recv() is True
    finally:
        proc.join(30)
    assert near.tracking and _eventually(lambda: near.load("fk") == 2)
