"""PersistenceManager: routing, TTL policies, overrides, as_type, events, stats, transactions."""

from __future__ import annotations

import datetime as dt
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from kvstore import (ConfigError, InvalidArgumentError, KVStoreError, PersistenceManager,
                     SerializationError, StoreUnavailableError, TransactionError)
from kvstore.manager import Event

CATEGORIES = {
    "session": {"store": "memory"},
    "query_history": {"store": "cache", "ttl": "24h"},
    "token_usage": {"store": "cache", "ttl": "1h"},
    "preferences": {"store": "database"},
    "access_patterns": {"store": "database", "ttl": "30d"},
    "config": {"store": "file"},
}


@pytest.fixture
def pm(data_dir):
    manager = PersistenceManager.from_config({"persistence": {"categories": CATEGORIES}})
    yield manager
    manager.close()


@pytest.fixture
def fake_redis_pm(data_dir):
    """A manager whose cache tier is a RedisStore (fakeredis, or the real server in CI)."""
    from conftest import REDIS_URL, _redis_build

    import uuid

    config = {"persistence": {"categories": CATEGORIES}}
    manager = PersistenceManager.from_config(config)
    manager.stores["cache"].close()
    redis = _redis_build(REDIS_URL, f"kvtest:{uuid.uuid4().hex[:8]}:")(ttl_default=3600)
    manager.stores["cache"] = redis
    yield manager
    redis.clear()
    manager.close()


def test_embedded_default_needs_no_server(data_dir):
    with PersistenceManager() as pm:
        assert set(pm.stores) == {"memory", "cache", "database", "file"}
        for name in pm.stores:
            pm.save(f"probe-{name}", {"n": name}, store=name)
            assert pm.load(f"probe-{name}", store=name) == {"n": name}
        assert pm.route("anything").store == "database"
    assert (data_dir / "kvstore.db").exists()
    assert (data_dir / "files").is_dir()


def test_routing_by_category(pm):
    assert pm.route("session:1").store == "memory"
    assert pm.route("query_history:abc").store == "cache"
    assert pm.route("preferences:u1").store == "database"
    assert pm.route("config:ui/theme").store == "file"
    assert pm.route("unknown:1").store == "database"
    assert pm.route("plain").store == "database"
    r = pm.route("query_history:abc")
    assert r.category == "query_history" and r.ttl == 86400 and "query_history" in r.reason
    assert "default_store" in pm.route("unknown:1").reason
    assert pm.route("plain").category is None
    assert pm.route("session:1").ttl is None
    assert pm.route("query_history:a:b").category == "query_history"


def test_values_land_in_the_routed_store(pm):
    pm.save("session:1", {"user": "ann"})
    pm.save("preferences:u1", {"theme": "dark"})
    pm.save("config:ui", {"font": 12})
    assert pm.stores["memory"].load("session:1") == {"user": "ann"}
    assert pm.stores["database"].load("preferences:u1") == {"theme": "dark"}
    assert pm.stores["file"].load("config:ui") == {"font": 12}
    assert pm.stores["database"].load("session:1") is None
    assert pm.load("session:1") == {"user": "ann"}


def test_category_ttl_policies(pm):
    pm.save("token_usage:u1", 5)
    pm.save("access_patterns:u1", [1])
    pm.save("preferences:u1", {"x": 1})
    assert 3590 <= pm.stores["cache"].ttl("token_usage:u1") <= 3600
    assert 30 * 86400 - 10 <= pm.stores["database"].ttl("access_patterns:u1") <= 30 * 86400
    assert pm.stores["database"].ttl("preferences:u1") is None
    pm.save("token_usage:u2", 5, ttl="90s")
    assert 85 <= pm.stores["cache"].ttl("token_usage:u2") <= 90


def test_store_override(pm):
    pm.save("session:x", "in the database", store="database")
    assert pm.load("session:x") is None
    assert pm.load("session:x", store="database") == "in the database"
    assert pm.exists("session:x", store="database")
    assert "session:x" in list(pm.keys("session:", store="database"))
    assert pm.delete("session:x", store="database") is True
    with pytest.raises(ConfigError, match="disk"):
        pm.save("k", 1, store="disk")


def test_keys_across_stores(pm):
    pm.save("session:1", 1)
    pm.save("preferences:1", 1)
    pm.save("config:1", 1)
    assert {"session:1", "preferences:1", "config:1"} <= set(pm.keys())
    assert list(pm.keys("session:")) == ["session:1"]


def test_keys_reverse_merges_stores_descending(data_dir):
    """reverse=True: several stores' descending pages merged into one descending listing,
    each key once, paged by start_after (the last key of the previous page) and limit."""
    config = {"persistence": {"categories": {"b": {"store": "database"}, "a": {"store": "memory"},
                                             "c": {"store": "file"}}}}
    names = ([f"a:{i:04d}" for i in range(1_200)] + [f"b:{i:04d}" for i in range(1_100)]
             + [f"c:{i:02d}" for i in range(30)])
    with PersistenceManager.from_config(config) as pm:
        pm.save_many({name: i for i, name in enumerate(names)})
        pm.save("a:0007", "again", store="database")  # one key in two stores: listed once
        descending = sorted(names, reverse=True)
        assert list(pm.keys(reverse=True)) == descending
        pages, after = [], None
        while page := list(pm.keys(start_after=after, limit=700, reverse=True)):
            pages.append(page)
            after = page[-1]
        assert [len(p) for p in pages] == [700, 700, 700, 230] and sum(pages, []) == descending
        assert list(pm.keys("b:", limit=2, reverse=True)) == ["b:1099", "b:1098"]
        assert list(pm.items("c:", start_after="c:02", reverse=True)) == [
            ("c:01", names.index("c:01")), ("c:00", names.index("c:00"))]
        with pytest.raises(InvalidArgumentError, match="reverse"):
            list(pm.keys(reverse="yes"))


def test_sqlite_latest_key_is_one_short_query(data_dir, tmp_path):
    """keys(limit=1, reverse=True) on SQLite reads one row from the end of the index."""
    from kvstore import SQLiteStore

    with SQLiteStore(path=tmp_path / "latest.db") as store:
        store.save_many({f"c:{i:05d}": i for i in range(2_500)})
        statements: list[str] = []
        store._conn().set_trace_callback(statements.append)
        assert list(store.keys("c:", limit=1, reverse=True)) == ["c:02499"]
        listed = [s for s in statements if "ORDER BY key DESC" in s]
        assert len(listed) == 1 and listed[0].endswith("LIMIT 1")


def test_delete_and_exists(pm):
    pm.save("preferences:d", 1)
    assert pm.exists("preferences:d")
    assert pm.delete("preferences:d") is True
    assert pm.delete("preferences:d") is False
    assert not pm.exists("preferences:d")


@dataclass
class Address:
    city: str
    since: dt.datetime


@dataclass
class User:
    name: str
    address: Address
    tags: list[str] = field(default_factory=list)
    previous: list[Address] = field(default_factory=list)
    nickname: str | None = None


def test_load_as_type_rebuilds_dataclasses(pm):
    when = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)
    user = User("ann", Address("Oslo", when), ["a"], [Address("Rome", when)])
    for key in ("preferences:u", "config:u", "session:u"):
        pm.save(key, user)
        loaded = pm.load(key, as_type=User)
        assert loaded == user, key
        assert isinstance(loaded.address, Address)
        assert loaded.address.since.tzinfo is not None
    assert pm.load("preferences:missing", as_type=User) is None


def test_events_and_stats(pm):
    seen: list[Event] = []
    pm.on("save", seen.append)
    pm.on("load", seen.append)
    pm.on("delete", seen.append)
    pm.save("preferences:e", {"a": 1})
    pm.load("preferences:e")
    pm.load("preferences:nope")
    pm.delete("preferences:e")
    assert [e.name for e in seen] == ["save", "load", "load", "delete"]
    assert all(e.key.startswith("preferences:") and e.store == "database" for e in seen)
    assert seen[0].size and seen[0].size > 0
    assert all(e.duration >= 0 for e in seen)
    stats = pm.stats()["database"]
    assert stats == {"hits": 1, "misses": 1, "saves": 1, "deletes": 1, "errors": 0,
                     "log_appends": 0, "log_reads": 0}


def test_a_failing_listener_does_not_break_the_operation(pm):
    def boom(event):
        raise RuntimeError("listener bug")

    pm.on("save", boom)
    pm.on("load", boom)
    assert pm.save("preferences:x", 1) is True
    assert pm.load("preferences:x") == 1


def test_error_event_and_error_stats(pm):
    errors: list[Event] = []
    pm.on("error", errors.append)
    with pytest.raises(SerializationError):
        pm.save("preferences:bad", object())
    assert errors and isinstance(errors[0].error, SerializationError)
    assert errors[0].key == "preferences:bad" and errors[0].store == "database"
    assert pm.stats()["database"]["errors"] == 1


def test_error_events_name_the_operation_that_failed(pm):
    errors: list[Event] = []
    pm.on("error", errors.append)
    for call in (lambda: pm.save("preferences:bad", object()),
                 lambda: pm.append("preferences:text", 1),
                 lambda: pm.incr("preferences:text")):
        pm.stores["database"].save("preferences:text", "not a number")
        with pytest.raises(KVStoreError):
            call()
    assert [e.operation for e in errors] == ["save", "append", "incr"]
    assert errors[0]["operation"] == "save"


def test_unknown_event_is_refused(pm):
    with pytest.raises(ConfigError):
        pm.on("explode", print)


# -- transactions ------------------------------------------------------------------------------


def test_transaction_commits_across_stores(pm):
    pm.save("preferences:gone", 1)
    with pm.transaction() as tx:
        tx.save("session:t", {"s": 1})
        tx.save("preferences:t", {"p": 1})
        tx.save("config:t", {"c": 1})
        tx.save("query_history:t", ["q"])
        tx.delete("preferences:gone")
        assert tx.load("preferences:t") == {"p": 1}
        assert tx.load("preferences:gone", "deleted") == "deleted"
        assert pm.load("preferences:t") is None  # nothing visible before the commit
    assert pm.load("session:t") == {"s": 1}
    assert pm.load("preferences:t") == {"p": 1}
    assert pm.load("config:t") == {"c": 1}
    assert pm.load("query_history:t") == ["q"]
    assert 86000 < pm.stores["cache"].ttl("query_history:t") <= 86400
    assert not pm.exists("preferences:gone")


def test_exception_in_block_writes_nothing_and_propagates(pm):
    pm.save("preferences:keep", "old")

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with pm.transaction() as tx:
            tx.save("preferences:keep", "new")
            tx.save("session:new", 1)
            tx.delete("preferences:keep")
            raise Boom()
    assert pm.load("preferences:keep") == "old"
    assert not pm.exists("session:new")


def test_unencodable_value_fails_the_commit_before_any_write(pm):
    with pytest.raises(SerializationError):
        with pm.transaction() as tx:
            tx.save("session:ok", 1)
            tx.save("preferences:ok", 1)
            tx.save("config:bad", object())
    assert not pm.exists("session:ok")
    assert not pm.exists("preferences:ok")


def _fail_commit(store, at):
    """Make ``store`` fail its part of a commit: on entering (before it writes anything) or at
    COMMIT, after every store nested inside it has already committed."""
    real = store.raw_commit

    @contextmanager
    def broken(ops, checks, *rest):
        if at == "enter":
            raise StoreUnavailableError("simulated outage")
        with real(ops, checks, *rest):
            yield
            raise StoreUnavailableError("simulated failure at commit")

    store.raw_commit = broken


@pytest.mark.parametrize("at", ["enter", "exit"])
@pytest.mark.parametrize("failing", ["file", "database", "memory"])
def test_failure_of_a_store_restores_the_others(pm, failing, at):
    stores = ["memory", "database", "file"]
    keys = {"memory": "session:r", "database": "preferences:r", "file": "config:r"}
    for name in stores:
        pm.save(keys[name], f"before-{name}", ttl=1000)
    pm.save("preferences:new", "x")
    pm.delete("preferences:new")
    _fail_commit(pm.stores[failing], at)
    with pytest.raises(TransactionError) as err:
        with pm.transaction() as tx:
            for name in stores:
                tx.save(keys[name], f"after-{name}")
            tx.save("preferences:new", "created in tx")
    assert repr(failing) in str(err.value) and "rolled back" in str(err.value)
    assert err.value.store == failing
    for name in stores:
        assert pm.load(keys[name]) == f"before-{name}", name
        assert pm.stores[name].ttl(keys[name]) is not None
    assert not pm.exists("preferences:new")


def test_a_store_failing_partway_undoes_its_own_writes(pm, data_dir):
    """A folder sits where the file store must write ``config:new``: ``config:c``, written by
    the same store in the same commit, keeps its old value, as do the other stores."""
    pm.save("config:c", "old")
    pm.save("preferences:p", "old")
    (pm.stores["file"].base_path / "config:new.json").mkdir(parents=True)
    with pytest.raises(TransactionError) as err:
        with pm.transaction() as tx:
            tx.save("config:c", "new")
            tx.save("config:new", "new")
            tx.save("preferences:p", "new")
            tx.save("session:s", "new")
    assert "'file'" in str(err.value)
    assert pm.load("config:c") == "old"
    assert pm.load("preferences:p") == "old"
    assert not pm.exists("session:s")


def test_redis_transaction_and_rollback(fake_redis_pm):
    pm = fake_redis_pm
    pm.save("query_history:a", "before")
    with pm.transaction() as tx:
        tx.save("query_history:a", "after")
        tx.save("preferences:a", "p")
    assert pm.load("query_history:a") == "after"
    _fail_commit(pm.stores["file"], "exit")
    with pytest.raises(TransactionError):
        with pm.transaction() as tx:
            tx.save("query_history:a", "lost")
            tx.save("config:a", "lost")
    assert pm.load("query_history:a") == "after"
    assert 3000 < pm.stores["cache"].ttl("query_history:a") <= 86400


# -- memory snapshots -------------------------------------------------------------------------


def test_memory_snapshot_survives_restart(data_dir, tmp_path):
    config = {"persistence": {"categories": CATEGORIES,
                              "memory": {"snapshot": str(tmp_path / "mem.snap"), "autosave": "1h"}}}
    with PersistenceManager.from_config(config) as pm:
        pm.save("session:1", {"user": "ann"})
        pm.save("session:short", 1, ttl=600)
    with PersistenceManager.from_config(config) as pm:
        assert pm.load("session:1") == {"user": "ann"}
        assert 590 < pm.stores["memory"].ttl("session:short") <= 600


def test_autosave_runs_in_the_background(data_dir, tmp_path):
    snap = tmp_path / "mem.snap"
    config = {"persistence": {"memory": {"snapshot": str(snap), "autosave": 0.2}}}
    pm = PersistenceManager.from_config(config)
    try:
        pm.save("s", "v", store="memory")
        deadline = time.time() + 5
        while not snap.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert snap.exists()
    finally:
        pm.close()


# -- the cache tier's failure policy -----------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redis_down_raises_by_default(data_dir):
    config = {"persistence": {"redis": {"url": f"redis://127.0.0.1:{_closed_port()}/0",
                                        "connect_timeout": 0.5},
                              "categories": {"q": {"store": "cache"}}}}
    errors: list[Event] = []
    with PersistenceManager.from_config(config) as pm:
        pm.on("error", errors.append)
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            pm.save("q:1", 1)
        assert time.monotonic() - start < 5
    assert errors and errors[0].store == "cache"


def test_redis_down_falls_back_when_configured(data_dir):
    config = {"persistence": {"redis": {"url": f"redis://127.0.0.1:{_closed_port()}/0",
                                        "connect_timeout": 0.5, "fallback": "database"},
                              "categories": {"q": {"store": "cache", "ttl": "1h"}}}}
    errors: list[Event] = []
    with PersistenceManager.from_config(config) as pm:
        pm.on("error", errors.append)
        assert pm.save("q:1", {"v": 1}) is True
        assert pm.load("q:1") == {"v": 1}
        assert pm.stores["database"].load("q:1") == {"v": 1}
        assert 3500 < pm.stores["database"].ttl("q:1") <= 3600
    assert errors and isinstance(errors[0].error, StoreUnavailableError)


def test_assigning_a_store_takes_effect_for_the_next_call(pm):
    from kvstore import MemoryStore

    pm.save("preferences:u1", "old")  # routes (and caches) preferences -> the SQLite store
    old, other = pm.stores["database"], MemoryStore()
    pm.stores["database"] = other
    pm.save("preferences:u1", "new")
    assert other.load("preferences:u1") == "new" and old.load("preferences:u1") == "old"
    assert pm.load("preferences:u1") == "new"
    assert pm.stats()["database"]["saves"] == 2
    with pytest.raises(ConfigError, match="'database'.*routes to it"):
        del pm.stores["database"]
    with pytest.raises(ConfigError, match="stores\\['cache'\\]"):
        pm.stores["cache"] = {"not": "a store"}
    assert pm.stores["database"] is other and "database" in pm.stores
    old.close()


class _CountingSerializer:
    """A store's serializer, counting how often a value is encoded."""

    def __init__(self, inner: object) -> None:
        self.inner, self.calls = inner, 0

    def serialize(self, data: object) -> bytes:
        self.calls += 1
        return self.inner.serialize(data)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_save_with_a_listener_encodes_the_value_once(pm):
    st = pm.stores["database"]
    st.serializer = counting = _CountingSerializer(st.serializer)
    sizes: list[int | None] = []
    pm.on("save", lambda e: sizes.append(e.size))
    value = {"theme": "dark", "langs": ["en", "de"]}
    pm.save("preferences:u1", value)
    assert counting.calls == 1
    assert sizes == [len(counting.inner.serialize(value))]
    assert pm.load("preferences:u1") == value

