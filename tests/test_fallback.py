"""The Redis fallback (``redis: {fallback: database}``) loses no acknowledged write (issue 21.5).

Each test stalls a private redis-server with SIGSTOP (its data survives, as in a fork stall or a
partition) so that what Redis held before the outage is still there afterwards. The rule under
test: during an outage, reads and blind writes (save, delete, save_many, delete_many) are served
by the fallback; anything that depends on the value Redis holds raises StoreUnavailableError;
on recovery an outage write never overwrites a newer write made directly to Redis.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from conftest import HAVE_REDIS_SERVER
from kvstore import PersistenceManager, StoreUnavailableError, TransactionError

pytestmark = pytest.mark.skipif(not HAVE_REDIS_SERVER,
                                reason="redis-server / redis-cli not on PATH")

RETRY = 0.3  # seconds before Redis is tried again (the default is 5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[object]:
    from redis_servers import RedisServer

    srv = RedisServer(tmp_path / "redis").start()
    try:
        yield srv
    finally:
        srv.stop()


def _config(tmp_path: Path, url: str, fallback: str = "database") -> dict:
    return {"persistence": {
        "sqlite": {"path": str(tmp_path / "app.db")},
        "file": {"base_path": str(tmp_path / "files")},
        "redis": {"url": url, "socket_timeout": 0.3, "connect_timeout": 0.3,
                  "fallback": fallback},
        "categories": {"q": {"store": "cache", "ttl": "1h"}}}}


@contextmanager
def _manager(tmp_path: Path, server: object, retry_after: float = RETRY,
             fallback: str = "database") -> Iterator[PersistenceManager]:
    url = server.url  # type: ignore[attr-defined]
    with PersistenceManager.from_config(_config(tmp_path, url, fallback)) as pm:
        pm.stores["cache"].retry_after = retry_after
        yield pm


@contextmanager
def _stalled(server: object, pm: PersistenceManager) -> Iterator[None]:
    """Redis frozen (SIGSTOP) until the block ends; ``pm`` has noticed (it is on the fallback)."""
    pid = server.proc.pid  # type: ignore[attr-defined]
    os.kill(pid, signal.SIGSTOP)
    try:
        pm.save("q:probe", 1)  # times out on Redis, lands in the fallback
        assert pm.stores["cache"].using_fallback
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _recovered(pm: PersistenceManager) -> None:
    """Wait until ``pm`` tries Redis again (its first call then writes the outage back)."""
    time.sleep(pm.stores["cache"].retry_after + 0.05)
    pm.exists("q:probe")


def test_a_counter_is_exact_across_an_outage(tmp_path, data_dir, server):
    """Before: 100 increments, an outage, 5 more read 5 afterwards (the write-back replaced the
    count). Now each outage increment raises, and the count is 100, then 101."""
    with _manager(tmp_path, server) as pm:
        for _ in range(100):
            pm.incr("q:hits")
        with _stalled(server, pm):
            for _ in range(5):
                with pytest.raises(StoreUnavailableError, match="q:hits"):
                    pm.incr("q:hits")
            assert pm.load("q:hits") is None  # a reader during the outage sees it missing
        _recovered(pm)
        assert pm.load("q:hits") == 100
        assert pm.incr("q:hits") == 101
        assert pm.stores["cache"].primary.load("q:hits") == 101


def test_a_list_keeps_every_item_across_an_outage(tmp_path, data_dir, server):
    """Before: 10 appends, an outage, 3 appends read 3 items. Now the outage appends raise."""
    with _manager(tmp_path, server) as pm:
        for i in range(10):
            pm.append("q:list", i)
        with _stalled(server, pm):
            for i in range(3):
                with pytest.raises(StoreUnavailableError):
                    pm.append("q:list", 100 + i)
            with pytest.raises(StoreUnavailableError):
                pm.update("q:list", lambda v: (v or []) + ["x"])
            with pytest.raises(StoreUnavailableError):
                pm.stores["cache"].add("q:list", ["replaced"])
            with pytest.raises(StoreUnavailableError):
                pm.stores["cache"].touch("q:list", 60)
        _recovered(pm)
        assert pm.load("q:list") == list(range(10))
        assert pm.append("q:list", 10) == 11


def test_a_direct_redis_write_after_recovery_is_not_overwritten(tmp_path, data_dir, server):
    """Process A saves during the outage; process B, which never saw it, saves the same key
    to Redis after Redis is back and before A writes back. B's newer value stays (before: A's
    write-back replaced it with the outage's value), and B's incr of a key A saved during the
    outage counts from A's value (before: from Redis's older one, then A's replaced it)."""
    with _manager(tmp_path, server) as a, _manager(tmp_path, server, retry_after=5.0) as b:
        a.save("q:k", "before")
        a.save("q:c", 1)
        assert b.load("q:k") == "before"  # B is up to date and checked for outage writes just now
        with _stalled(server, a):
            a.save("q:k", "outage")
            a.save("q:c", 10)
            a.save("q:only-outage", "outage")
        b.save("q:k", "direct")            # Redis is back; A has not written back yet
        assert b.incr("q:c") == 11         # counts from the outage save, not from Redis's 1
        _recovered(a)
        for pm in (a, b):
            assert pm.load("q:k") == "direct"
            assert pm.load("q:only-outage") == "outage"
        assert a.stores["cache"].primary.load("q:k") == "direct"
        assert a.load("q:c") == 11


def test_an_outage_write_wins_over_what_redis_held_before(tmp_path, data_dir, server):
    """A key Redis holds, re-saved (or deleted) during the outage: the outage write is newer and
    acknowledged, so it is what Redis holds afterwards; an outage value that expired during the
    outage does not bring back the value Redis held before it."""
    with _manager(tmp_path, server) as pm:
        pm.save("q:a", "before")
        pm.save("q:gone", "before")
        pm.save("q:short", "before")
        pm.save_many({"q:d1": "before", "q:d2": "before"})
        with _stalled(server, pm):
            pm.save("q:a", "during")
            pm.delete("q:gone")
            pm.delete_many(["q:d1", "q:d2"])
            pm.save("q:short", "during", ttl=0.2)
            pm.save_many({"q:m1": 1, "q:m2": 2}, ttl=600)
            with pm.transaction() as tx:  # writes only: a blind write too
                tx.save("q:tx", "during")
            time.sleep(0.3)
        _recovered(pm)
        primary = pm.stores["cache"].primary
        assert primary.load("q:a") == "during" and primary.load("q:tx") == "during"
        assert not primary.exists("q:gone") and not primary.exists("q:short")
        assert primary.load_many(["q:d1", "q:d2"]) == {}
        assert primary.load_many(["q:m1", "q:m2"]) == {"q:m1": 1, "q:m2": 2}
        assert 500 < primary.ttl("q:m1") <= 600


def test_what_depends_on_redis_raises_during_the_outage(tmp_path, data_dir, server):
    """get_or_set, locks, transactions that read, and multi-store transactions raise; reads
    and get_or_set of a key written during the outage are served by the fallback."""
    config = _config(tmp_path, server.url)
    config["persistence"]["categories"]["p"] = {"store": "database"}
    with PersistenceManager.from_config(config) as pm:
        pm.stores["cache"].retry_after = RETRY
        pm.save("q:x", "before")
        with _stalled(server, pm):
            pm.save("q:new", "during")
            assert pm.get_or_set("q:new", lambda: "computed") == "during"
            with pytest.raises(StoreUnavailableError):
                pm.get_or_set("q:x", lambda: "computed")
            with pytest.raises(StoreUnavailableError):
                with pm.stores["cache"].lock("job", timeout=0):
                    pass
            with pytest.raises((StoreUnavailableError, TransactionError), match="q:x"):
                with pm.transaction() as tx:
                    tx.save("q:y", tx.load("q:x", "none"))
            with pytest.raises((StoreUnavailableError, TransactionError)):
                with pm.transaction() as tx:  # its undo would need what Redis holds
                    tx.save("q:y", 1)
                    tx.save("p:y", 1)
            assert pm.load("p:y") is None
        _recovered(pm)
        assert pm.load("q:x") == "before" and not pm.exists("q:y")
        assert pm.get_or_set("q:x", lambda: "computed") == "before"


@pytest.mark.parametrize("fallback", ["database", "file", "memory"])
def test_fallback_writes_are_put_back_after_a_redis_outage(tmp_path, data_dir, server, fallback):
    """Before: Redis answers. During (Redis frozen): writes go to the fallback tier, reads see
    them. After (Redis back): every outage write is read from Redis, the fallback keeps no
    stale copy nor outage record, and a second process sees the same."""
    with _manager(tmp_path, server, fallback=fallback) as pm:
        pm.save("q:a", "before")
        pm.save("q:gone", "before")
        with _stalled(server, pm):
            pm.save("q:a", "during")          # routed to the fallback, no exception
            pm.save("q:b", "during", ttl=600)
            pm.delete("q:gone")
            assert pm.load("q:a") == "during" and pm.load("q:b") == "during"
            assert pm.load_many(["q:a", "q:b"]) == {"q:a": "during", "q:b": "during"}
            assert pm.stores[fallback].exists("q:b")
        _recovered(pm)
        assert pm.load("q:a") == "during"
        assert pm.load("q:b") == "during" and 500 < pm.ttl("q:b") <= 600
        assert not pm.exists("q:gone")
        primary = pm.stores["cache"].primary
        assert primary.load("q:a") == "during" and not primary.exists("q:gone")
        tier = pm.stores[fallback]
        assert not any(tier.exists(k) for k in ("q:a", "q:b", "q:probe"))  # nothing stale
        assert list(tier.meta.keys("outage:")) == []
    with _manager(tmp_path, server, fallback=fallback) as other:  # another process's view
        assert other.load("q:a") == "during" and other.load("q:b") == "during"


def test_the_async_front_follows_the_same_rule(tmp_path, data_dir, server):
    """The asyncio manager runs the same FallbackStore in threads: an outage incr raises, a save
    is served by the fallback and written back."""
    import asyncio

    from kvstore.aio import AsyncPersistenceManager

    async def main() -> None:
        async with AsyncPersistenceManager.from_config(_config(tmp_path, server.url)) as pm:
            cache = pm.stores["cache"].sync
            cache.retry_after = RETRY
            assert await pm.incr("q:n") == 1
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                await pm.save("q:a", "during")
                assert cache.using_fallback
                with pytest.raises(StoreUnavailableError):
                    await pm.incr("q:n")
                assert await pm.load("q:a") == "during"
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            await asyncio.sleep(RETRY + 0.05)
            assert await pm.incr("q:n") == 2
            assert cache.primary.load("q:a") == "during"

    asyncio.run(main())
