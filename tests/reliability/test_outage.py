"""Outages: Redis (a private redis-server) killed and PostgreSQL connections cut mid-run.

Calls to the lost tier raise StoreUnavailableError within the timeout, the durable tiers keep
working, and the lost tier recovers by itself once the server is back.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from redis_servers import HAVE_REDIS_SERVER, RedisServer  # noqa: E402

from kvstore import PersistenceManager, StoreUnavailableError  # noqa: E402

POSTGRES_DSN = os.environ.get("KVSTORE_TEST_POSTGRES_DSN")


def _until_ok(call, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except StoreUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.skipif(not HAVE_REDIS_SERVER, reason="redis-server / redis-cli not on PATH")
def test_redis_killed_mid_run(tmp_path, monkeypatch):
    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path / "data"))
    server = RedisServer(tmp_path / "redis").start()
    config = {"persistence": {
        "redis": {"url": server.url, "socket_timeout": 1, "connect_timeout": 1},
        "categories": {"q": {"store": "cache"}, "prefs": {"store": "database"},
                       "cfg": {"store": "file"}, "s": {"store": "memory"}}}}
    errors = []
    try:
        with PersistenceManager.from_config(config) as pm:
            pm.on("error", errors.append)
            for i in range(50):
                pm.save(f"q:{i}", i)
                pm.save(f"prefs:{i}", i)
            server.kill()
            start = time.monotonic()
            with pytest.raises(StoreUnavailableError):
                pm.load("q:1")
            with pytest.raises(StoreUnavailableError):
                pm.save("q:new", 1)
            assert time.monotonic() - start < 5
            # The durable tiers (and memory) are unaffected.
            pm.save("prefs:during", "ok")
            pm.save("cfg:during", "ok")
            pm.save("s:during", "ok")
            assert pm.load("prefs:during") == "ok" and pm.load("prefs:7") == 7
            assert pm.load("cfg:during") == "ok" and pm.load("s:during") == "ok"
            assert errors and all(e.store == "cache" for e in errors)
            server.start()
            _until_ok(lambda: pm.save("q:after", "back"))
            assert pm.load("q:after") == "back"
            assert pm.stats()["cache"]["errors"] >= 2
    finally:
        server.stop()


@pytest.mark.skipif(not HAVE_REDIS_SERVER, reason="redis-server / redis-cli not on PATH")
def test_redis_outage_with_fallback_serves_from_the_database(tmp_path, monkeypatch):
    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path / "data"))
    server = RedisServer(tmp_path / "redis").start()
    config = {"persistence": {
        "redis": {"url": server.url, "socket_timeout": 1, "connect_timeout": 1,
                  "fallback": "database"},
        "categories": {"q": {"store": "cache", "ttl": "1h"}}}}
    try:
        with PersistenceManager.from_config(config) as pm:
            pm.save("q:before", 1)
            server.kill()
            pm.save("q:during", 2)  # served by the database tier, no exception
            assert pm.load("q:during") == 2
            assert pm.stores["database"].load("q:during") == 2
    finally:
        server.stop()


@pytest.mark.skipif(not POSTGRES_DSN, reason="KVSTORE_TEST_POSTGRES_DSN is not set: no PostgreSQL")
def test_postgres_connections_cut_mid_run(tmp_path, monkeypatch):
    import psycopg

    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path / "data"))
    table = f"kvtest_{uuid.uuid4().hex[:8]}"
    config = {"persistence": {"postgres": {"dsn": POSTGRES_DSN, "table": table},
                              "categories": {"cfg": {"store": "file"}}}}
    with PersistenceManager.from_config(config) as pm:
        try:
            for i in range(20):
                pm.save(f"p:{i}", i)
            with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = %s", (f"kvstore:{table}",))
            outcomes = []
            for i in range(5):
                try:
                    outcomes.append(pm.load(f"p:{i}"))
                except StoreUnavailableError:
                    outcomes.append("unavailable")
            pm.save("cfg:unaffected", 1)
            assert pm.load("cfg:unaffected") == 1
            assert outcomes[-1] == 4  # recovered without a restart
            assert _until_ok(lambda: pm.load("p:19")) == 19
        finally:
            pm.stores["database"].drop_table()
