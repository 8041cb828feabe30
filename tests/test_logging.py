"""Records to the ``kvstore`` logger: a Redis outage and its end (a private redis-server stalled
with SIGSTOP), outage writes written back, a store down and up, a journal repair on open, a lock
that expired before its release. None carries a password or a value."""

from __future__ import annotations

import logging
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from conftest import HAVE_REDIS_SERVER
from kvstore import LockNotOwnedError, MemoryStore, PersistenceManager, StoreUnavailableError
from kvstore import observe

needs_redis_server = pytest.mark.skipif(not HAVE_REDIS_SERVER,
                                        reason="redis-server / redis-cli not on PATH")
SECRET = "s3cr3t-pw"
VALUE = "value-text-never-logged"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[object]:
    from redis_servers import RedisServer

    import redis

    srv = RedisServer(tmp_path / "redis").start()
    try:
        # A password, so that the URL has a secret to mask.
        redis.Redis(port=srv.port).config_set("requirepass", SECRET)
        yield srv
    finally:
        os.kill(srv.proc.pid, signal.SIGCONT)  # type: ignore[attr-defined]
        srv.stop()


def _config(tmp_path: Path, server: object, fallback: str | None) -> dict:
    url = f"redis://:{SECRET}@127.0.0.1:{server.port}/0"  # type: ignore[attr-defined]
    redis = {"url": url, "socket_timeout": 0.3, "connect_timeout": 0.3}
    if fallback:
        redis["fallback"] = fallback
    return {"persistence": {"sqlite": {"path": str(tmp_path / "app.db")},
                            "file": {"base_path": str(tmp_path / "files")},
                            "redis": redis, "categories": {"q": {"store": "cache"}}}}


@contextmanager
def _stalled(server: object) -> Iterator[None]:
    pid = server.proc.pid  # type: ignore[attr-defined]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _records(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    found = [r for r in caplog.records if r.name == logger]
    for record in caplog.records:
        text = record.getMessage()
        assert SECRET not in text and VALUE not in text, text
    return found


@needs_redis_server
def test_a_redis_outage_its_end_and_the_write_back_are_logged(tmp_path, data_dir, server,
                                                               caplog):
    caplog.set_level(logging.INFO, logger="kvstore")
    with PersistenceManager.from_config(_config(tmp_path, server, "database")) as pm:
        pm.stores["cache"].retry_after = 0.3
        pm.save("q:a", VALUE)
        assert not _records(caplog, "kvstore.fallback")  # nothing while Redis answers
        with _stalled(server):
            pm.save("q:a", VALUE + "2")  # times out on Redis, lands in the fallback
            pm.save("q:b", VALUE)
            pm.load("q:b")
            assert pm.stores["cache"].using_fallback
            with pytest.raises(StoreUnavailableError):
                pm.incr("q:n")  # refused during the outage: not a second record
        [outage] = _records(caplog, "kvstore.fallback")  # logged once per outage
        assert outage.levelno == logging.WARNING
        assert "unavailable" in outage.getMessage() and "fallback" in outage.getMessage()
        assert "127.0.0.1" in outage.getMessage()  # which Redis, with its password masked
        time.sleep(0.35)
        assert pm.load("q:a") == VALUE + "2"  # this call reaches Redis and writes back first
        records = _records(caplog, "kvstore.fallback")
        messages = [r.getMessage() for r in records[1:]]
        assert all(r.levelno == logging.INFO for r in records[1:])
        assert any("2 outage write(s) written back" in m for m in messages), messages
        assert any("answers again" in m for m in messages), messages
        pm.save("q:c", 1)
        assert len(_records(caplog, "kvstore.fallback")) == 3  # nothing more once recovered
        assert not _records(caplog, "kvstore.store")  # the fallback's records tell the outage


@needs_redis_server
def test_a_store_down_then_up_is_logged_once_each(tmp_path, data_dir, server, caplog):
    caplog.set_level(logging.INFO, logger="kvstore")
    with PersistenceManager.from_config(_config(tmp_path, server, None)) as pm:
        pm.save("q:a", VALUE)
        with _stalled(server):
            for _ in range(3):
                with pytest.raises(StoreUnavailableError):
                    pm.save("q:a", VALUE)
        down = _records(caplog, "kvstore.store")
        assert [(r.levelno, "'cache'" in r.getMessage()) for r in down] == [
            (logging.WARNING, True)]
        assert "save failed" in down[0].getMessage()
        assert pm.load("q:a") == VALUE  # the hot path's first success
        pm.save("q:a", VALUE)
        records = _records(caplog, "kvstore.store")
        assert [r.levelno for r in records] == [logging.WARNING, logging.INFO]
        assert "'cache' serves calls again" in records[1].getMessage()
        assert pm.stats()["cache"]["errors"] == 3 and pm.stats()["cache"]["hits"] == 1


def test_a_journal_repair_on_open_is_logged(tmp_path, data_dir, caplog):
    from kvstore.config import journal_dir
    from kvstore.journal import Journal

    config = {"persistence": {"sqlite": {"path": str(tmp_path / "app.db")}}}
    with PersistenceManager.from_config(config) as pm:
        pm.save("k", VALUE)
        store = pm.stores["database"]
        before = store.raw_snapshot(["k"])
        # A committer that wrote its record and its first store, then died (its lock gone).
        journal = Journal(journal_dir(pm.config))
        new = store.encode("k", "torn")
        handle = journal.begin("t1", [("database", [("k", new, None)], before, False)])
        store.raw_set("k", new, None)
        journal.release(handle)
    caplog.set_level(logging.INFO, logger="kvstore")
    with PersistenceManager.from_config(config) as pm:
        assert pm.load("k") == VALUE  # undone when the manager opened
    [record] = _records(caplog, "kvstore.journal")
    assert record.levelno == logging.INFO
    assert "undid 1 interrupted transaction" in record.getMessage()


def test_a_lock_that_expired_before_its_release_is_logged(caplog):
    caplog.set_level(logging.INFO, logger="kvstore")
    store = MemoryStore()
    lock = store.lock("jobs:nightly", ttl=0.05)
    lock.acquire()
    time.sleep(0.1)
    with pytest.raises(LockNotOwnedError):
        lock.release()
    lock.acquire()
    time.sleep(0.1)
    with pytest.raises(LockNotOwnedError):
        lock.extend()
    records = _records(caplog, "kvstore.lock")
    assert [r.levelno for r in records] == [logging.WARNING, logging.WARNING]
    assert "'jobs:nightly' expired (ttl 0.05s) before it was released" in records[0].getMessage()
    assert "before it was extended" in records[1].getMessage()
    with store.lock("jobs:ok", ttl=5):
        pass
    assert len(_records(caplog, "kvstore.lock")) == 2  # a lock released in time: nothing


def test_subscribers_get_each_signal_and_a_failing_one_breaks_nothing(caplog):
    seen: list[tuple[str, dict]] = []

    def boom(name: str, attributes: dict) -> None:
        raise RuntimeError("subscriber bug")

    def keep(name: str, attributes: dict) -> None:
        seen.append((name, attributes))

    observe.subscribe(boom)
    observe.subscribe(keep)
    try:
        observe.near("cache", True)
        observe.near("cache", False)
        observe.signal("store_down", store="cache", operation="save",
                       error=StoreUnavailableError(f"Redis at redis://:{SECRET}@h is down"))
    finally:
        observe.unsubscribe(boom)
        observe.unsubscribe(keep)
    assert [n for n, _ in seen] == ["near", "near", "store_down"]
    assert seen[0][1] == {"store": "cache", "hit": True} and seen[1][1]["hit"] is False
    assert SECRET not in seen[2][1]["error"] and "StoreUnavailableError" in seen[2][1]["error"]
    assert not [r for r in caplog.records if SECRET in r.getMessage()]


@needs_redis_server
def test_the_async_manager_logs_a_store_down_and_up_the_same(tmp_path, data_dir, server, caplog):
    import asyncio

    from kvstore.aio import AsyncPersistenceManager

    caplog.set_level(logging.INFO, logger="kvstore")

    async def main() -> None:
        async with AsyncPersistenceManager.from_config(_config(tmp_path, server, None)) as pm:
            await pm.save("q:a", VALUE)
            with _stalled(server):
                for _ in range(2):
                    with pytest.raises(StoreUnavailableError):
                        await pm.load("q:a")
            assert await pm.load("q:a") == VALUE

    asyncio.run(main())
    records = _records(caplog, "kvstore.store")
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO]
    assert "load failed" in records[0].getMessage()
