"""``max_entries`` on the durable stores (SQLite, PostgreSQL): a size bound like MemoryStore's,
evicting the least recently stored keys, enforced in every writer's statement.

Run on the sync stores and on their asyncio faces; the memory store's bound (least recently
*used*) is in the conformance suite.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from conftest import open_spec
from kvstore import ConfigError, PersistenceManager, SQLiteStore
from kvstore.transfer import migrate

BOUNDED = ["sqlite-json", "sqlite-msgpack", "postgres", "aio-sqlite-json", "aio-postgres"]
bounded = pytest.mark.parametrize("case", BOUNDED, indirect=True)


@bounded
def test_keeps_the_most_recently_stored_keys(case: Any) -> None:
    store = case.make(max_entries=5)
    for i in range(12):
        store.save(f"k{i:02}", i)
    assert list(store.keys()) == [f"k{i:02}" for i in range(7, 12)]
    assert store.load("k11") == 11 and store.load("k06") is None


@bounded
def test_a_new_value_counts_as_storing_and_a_read_does_not(case: Any) -> None:
    store = case.make(max_entries=3)
    for key in "abc":
        store.save(key, 1)
    store.save("a", 2)            # stored again: now the newest
    assert store.load("b") == 1   # read: still the oldest
    store.save("d", 1)
    assert sorted(store.keys()) == ["a", "c", "d"]
    store.update("c", lambda v: v + 1)  # an update stores a new value
    store.save("e", 1)
    assert sorted(store.keys()) == ["c", "d", "e"]
    store.touch("d", 60)          # a new TTL is not a new value: d is still the oldest
    store.save("f", 1)
    assert sorted(store.keys()) == ["c", "e", "f"]


@bounded
def test_every_write_path_keeps_the_bound(case: Any) -> None:
    store = case.make(max_entries=4)
    store.save_many({f"m{i}": i for i in range(6)})
    assert list(store.keys()) == ["m2", "m3", "m4", "m5"]
    assert store.add("a1", 1) is True
    assert store.incr("n1") == 1
    store.append("l1", "x")
    assert sorted(store.keys()) == ["a1", "l1", "m5", "n1"]
    assert store.get_or_set("g1", lambda: 5) == 5
    assert sorted(store.keys()) == ["a1", "g1", "l1", "n1"]


@bounded
def test_deletes_and_clear_free_room(case: Any) -> None:
    store = case.make(max_entries=4)
    for i in range(4):
        store.save(f"k{i}", i)
    store.delete("k0")
    store.delete_many(["k1", "nope"])
    store.save_many({"x": 1, "y": 2})
    assert sorted(store.keys()) == ["k2", "k3", "x", "y"]  # room was made: nothing evicted
    store.clear()
    store.save_many({f"c{i}": i for i in range(4)})
    assert len(list(store.keys())) == 4


@bounded
def test_migrating_into_a_bounded_store_keeps_the_last_keys(case: Any, tmp_path: Path) -> None:
    source = SQLiteStore(tmp_path / "src.db")
    source.save_many({f"s{i:03}": i for i in range(100)})
    target = case.make(max_entries=10)
    migrate(source, target.astore.sync if hasattr(target, "astore") else target)
    assert len(list(target.keys())) == 10
    source.close()


@bounded
def test_locks_are_never_evicted(case: Any) -> None:
    store = case.make(max_entries=2)
    with store.lock("job", ttl=30) as lock:
        for i in range(10):
            store.save(f"k{i}", i)
        assert lock.locked()
        assert not store.lock("job", ttl=30).acquire(blocking=False)
    assert list(store.keys()) == ["k8", "k9"]


@bounded
def test_an_existing_table_is_bounded_on_open_and_unbounded_again(case: Any) -> None:
    plain = case.make()
    for i in range(10):
        plain.save(f"old{i}", i)
    bounded = case.make(max_entries=4)   # rows from before the bound are the first to go
    assert list(bounded.keys()) == ["old6", "old7", "old8", "old9"]
    bounded.save("new", 1)
    assert list(bounded.keys()) == ["new", "old7", "old8", "old9"]
    lower = case.make(max_entries=2)     # the last store to open sets the table's bound
    assert list(lower.keys()) == ["new", "old9"]
    unbounded = case.make()              # opened without max_entries: the bound is removed
    for i in range(10):
        unbounded.save(f"more{i}", i)
    assert len(list(unbounded.keys())) == 12


def _writer(spec: dict[str, Any], worker: int) -> None:
    store = open_spec(spec)
    for i in range(60):
        store.save(f"w{worker}:{i:02}", i)
    store.close()


@bounded
def test_processes_writing_together_stay_within_the_bound(case: Any) -> None:
    store = case.make(max_entries=50)
    spec = dict(case.spec, max_entries=50)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(spec, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    keys = list(store.keys())
    assert len(keys) == 50
    # Each writer's own last writes are the newest of its keys: every survivor of a writer
    # is a suffix of what it wrote.
    for w in range(4):
        mine = sorted(int(k.split(":")[1]) for k in keys if k.startswith(f"w{w}:"))
        assert mine == list(range(60 - len(mine), 60))
    store.save("after", 1)  # the count stayed exact: one more write evicts exactly one key
    assert len(list(store.keys())) == 50


@bounded
def test_bad_bounds_are_refused(case: Any) -> None:
    for bad in (0, -1, 2.5, "10", True):
        with pytest.raises(ConfigError, match="max_entries"):
            case.make(max_entries=bad)


def test_yaml_bounds_the_database(tmp_path: Path) -> None:
    config = tmp_path / "kv.yaml"
    config.write_text(f"persistence:\n  sqlite:\n    path: {tmp_path / 'db.sqlite'}\n"
                      "    max_entries: 3\n  categories:\n    doc:\n      store: database\n")
    with PersistenceManager.from_yaml(config) as pm:
        for i in range(5):
            pm.save(f"doc:{i}", i)
        assert list(pm.keys("doc:")) == ["doc:2", "doc:3", "doc:4"]
        with pm.transaction() as tx:
            tx.save("doc:5", 5)
            tx.save("doc:6", 6)
        assert list(pm.keys("doc:")) == ["doc:4", "doc:5", "doc:6"]
    config.write_text("persistence:\n  sqlite:\n    max_entries: many\n")
    with pytest.raises(ConfigError, match="persistence.sqlite.max_entries"):
        PersistenceManager.from_yaml(config)
