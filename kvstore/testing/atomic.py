"""The atomic operations: add, update, append, touch, get_or_set, lock and the checked commit
underneath transactions (``raw_commit``), under threads and processes.

Mixed into :class:`kvstore.testing.StoreTests`. The multi-process tests run 4 processes against
the same store (they need ``store_opener``; a store whose data lives in one process skips them)
and count: 0 lost appends, exclusive locks, a factory computed once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from kvstore import (ConflictError, InvalidArgumentError, InvalidTTLError, KVStoreError,
                     LockNotOwnedError, LockTimeout, NotAListError, SerializationError)
from kvstore.store import KEEP, MISSING

from .base import StoreHooks
from .workers import PROCESSES, in_threads

__all__ = ["AtomicTests"]


def _appender(store: Any, proc: int, n: int) -> int:
    for i in range(n):
        store.append(f"chat:{i % 5}", f"{proc}-{i}")
    return n


def _locker(store: Any, proc: int, n: int) -> list[tuple[float, float]]:
    spans = []
    for _ in range(n):
        with store.lock("critical", ttl=30, timeout=60):
            t0 = time.time()
            store.save("counter", store.load("counter", 0) + 1)
            spans.append((t0, time.time()))
    return spans


def _filler(store: Any, proc: int) -> Any:
    def expensive() -> Any:
        store.incr("computed")
        time.sleep(0.5)
        return {"by": proc}

    return store.get_or_set("report", expensive, ttl=60, timeout=30)


class AtomicTests(StoreHooks):
    """Read-modify-write operations, locks and commits: one winner, nothing lost."""

    # -- add ---------------------------------------------------------------------------------------

    def test_add_writes_only_a_missing_key(self, store):
        assert store.add("a", {"v": 1}) is True
        assert store.add("a", {"v": 2}) is False
        assert store.load("a") == {"v": 1}

    def test_add_treats_an_expired_key_as_missing(self, store):
        store.save("a", "old", ttl=0.2)
        self.advance(0.5)
        assert store.add("a", "new") is True
        assert store.load("a") == "new"
        assert store.ttl("a") is None

    def test_add_with_ttl(self, store):
        assert store.add("a", 1, ttl=100)
        assert 90 < store.ttl("a") <= 100

    def test_add_rejects_bad_input_and_writes_nothing(self, store):
        with pytest.raises(InvalidTTLError):
            store.add("a", 1, ttl=-1)
        if self.serializes:
            with pytest.raises(SerializationError):
                store.add("a", object())
        assert not store.exists("a")

    def test_add_has_one_winner_among_threads(self, store):
        wins = in_threads(8, lambda i: store.add("only", i))
        assert wins.count(True) == 1
        assert store.load("only") == wins.index(True)

    # -- update ------------------------------------------------------------------------------------

    def test_update_missing_key_starts_from_default(self, store):
        assert store.update("n", lambda v: v + 1, default=10) == 11
        assert store.load("n") == 11
        assert store.update("n", lambda v: v * 2) == 22

    def test_update_returns_and_stores_the_new_value(self, store):
        store.save("doc", {"tags": ["a"]})
        new = store.update("doc", lambda d: {**d, "tags": d["tags"] + ["b"]})
        assert new == {"tags": ["a", "b"]} == store.load("doc")

    def test_update_fn_raising_writes_nothing(self, store):
        store.save("n", 1)

        def boom(v: Any) -> Any:
            raise RuntimeError("no")

        with pytest.raises(RuntimeError):
            store.update("n", boom)
        with pytest.raises(RuntimeError):
            store.update("fresh", boom)
        assert store.load("n") == 1 and not store.exists("fresh")

    def test_update_keeps_the_ttl_unless_given(self, store):
        store.save("n", 1, ttl=100)
        store.update("n", lambda v: v + 1)
        assert 90 < store.ttl("n") <= 100
        store.update("n", lambda v: v + 1, ttl=1000)
        assert 990 < store.ttl("n") <= 1000

    def test_update_new_key_gets_the_default_ttl(self):
        store = self.new_store(ttl_default=100)
        store.update("n", lambda v: 1)
        assert 90 < store.ttl("n") <= 100

    def test_update_rejects_bad_input(self, store):
        store.save("n", 1)
        with pytest.raises(InvalidArgumentError):
            store.update("n", "not callable")
        with pytest.raises(InvalidTTLError):
            store.update("n", lambda v: v + 1, ttl="5x")
        if self.serializes:
            with pytest.raises(SerializationError):
                store.update("n", lambda v: object())
        assert store.load("n") == 1

    def test_update_loses_nothing_across_threads(self, store):
        in_threads(8, lambda i: [store.update("n", lambda v: v + 1, default=0) for _ in range(25)])
        assert store.load("n") == 200

    # -- append ------------------------------------------------------------------------------------

    def test_append_returns_the_new_length(self, store):
        assert store.append("log", "a") == 1
        assert store.append("log", {"b": 2}) == 2
        assert store.load("log") == ["a", {"b": 2}]

    def test_append_refuses_a_non_list_and_leaves_it(self, store):
        store.save("s", "text")
        with pytest.raises(NotAListError) as err:
            store.append("s", "x")
        assert isinstance(err.value, TypeError) and isinstance(err.value, KVStoreError)
        assert "'s'" in str(err.value)
        assert store.load("s") == "text"

    def test_append_keeps_the_ttl(self, store):
        store.save("log", [], ttl=100)
        store.append("log", 1)
        assert 90 < store.ttl("log") <= 100

    def test_append_loses_nothing_across_threads(self, store):
        in_threads(8, lambda i: [store.append("log", f"{i}-{j}") for j in range(25)])
        items = store.load("log")
        assert len(items) == 200 and len(set(items)) == 200

    # -- touch -------------------------------------------------------------------------------------

    def test_touch_sets_a_new_ttl_on_an_existing_key(self, store):
        store.save("a", 1)
        assert store.touch("a", 100) is True
        assert 90 < store.ttl("a") <= 100
        assert store.load("a") == 1

    def test_touch_missing_or_expired_key_is_false(self, store):
        assert store.touch("nope", 10) is False
        store.save("a", 1, ttl=0.2)
        self.advance(0.5)
        assert store.touch("a", 10) is False
        assert not store.exists("a")

    def test_touch_without_ttl_uses_the_default(self):
        store = self.new_store(ttl_default=100)
        store.save("a", 1, ttl=5)
        assert store.touch("a")
        assert 90 < store.ttl("a") <= 100

    # -- get_or_set --------------------------------------------------------------------------------

    def test_get_or_set_computes_on_a_miss_only(self, store):
        calls = []

        def factory() -> Any:
            calls.append(1)
            return {"computed": len(calls)}

        assert store.get_or_set("k", factory) == {"computed": 1}
        assert store.get_or_set("k", factory) == {"computed": 1}
        assert len(calls) == 1
        store.save("none", None)
        assert store.get_or_set("none", factory) is None  # a stored None is a hit
        assert len(calls) == 1

    def test_get_or_set_saves_with_ttl(self, store):
        store.get_or_set("k", lambda: 1, ttl=100)
        assert 90 < store.ttl("k") <= 100

    def test_get_or_set_factory_raising_saves_nothing(self, store):
        def boom() -> Any:
            raise ValueError("no")

        with pytest.raises(ValueError):
            store.get_or_set("k", boom)
        assert not store.exists("k")
        assert store.get_or_set("k", lambda: 2) == 2  # the fill lock was released

    def test_get_or_set_computes_once_among_threads(self, store):
        calls = []

        def slow() -> Any:
            calls.append(1)
            time.sleep(0.3)
            return "value"

        results = in_threads(8, lambda i: store.get_or_set("k", slow))
        assert results == ["value"] * 8
        assert len(calls) == 1

    def test_get_or_set_waiter_times_out(self, store):
        hold = store.lock("x")  # any lock: just to check the meta namespace works under keys()
        del hold
        started = threading.Event()

        def slow() -> Any:
            started.set()
            time.sleep(1.0)
            return 1

        t = threading.Thread(target=store.get_or_set, args=("k", slow))
        t.start()
        started.wait(5)
        with pytest.raises(LockTimeout) as err:
            store.get_or_set("k", lambda: 2, timeout=0.1)
        assert isinstance(err.value, TimeoutError) and "'k'" in str(err.value)
        t.join()
        assert store.load("k") == 1

    # -- locks -------------------------------------------------------------------------------------

    def test_lock_is_exclusive_across_threads(self, store):
        store.save("n", 0)

        def work(i: int) -> None:
            for _ in range(10):
                with store.lock("counter", ttl=30):
                    value = store.load("n")  # a plain read-modify-write, safe inside the lock
                    store.save("n", value + 1)

        in_threads(6, work)
        assert store.load("n") == 60

    def test_lock_timeout_raises_lock_timeout(self, store):
        with store.lock("job", ttl=30):
            other = store.lock("job", timeout=0.1)
            t0 = time.monotonic()
            with pytest.raises(LockTimeout):
                with other:
                    pass
            assert time.monotonic() - t0 < 5
            assert other.acquire(blocking=False) is False

    def test_lock_of_a_dead_holder_expires(self, store):
        held = store.lock("job", ttl=0.3)
        assert held.acquire()  # never released: the holder "died"
        self.advance(1.0)
        other = self.new_store().lock("job", timeout=0)
        assert other.acquire()
        other.release()

    def test_lock_released_only_by_its_owner(self, store):
        first = store.lock("job", ttl=0.3)
        assert first.acquire()
        self.advance(1.0)  # first's lock expired ...
        second = store.lock("job", ttl=30)
        assert second.acquire()  # ... and someone else holds it now
        with pytest.raises(LockNotOwnedError):
            first.release()
        assert second.locked()
        assert store.lock("job", timeout=0).acquire() is False  # still held by second
        second.release()
        assert not second.locked()

    def test_lock_extend(self, store):
        lock = store.lock("job", ttl=0.5)
        with lock:
            lock.extend(100)
            self.advance(1.0)
            assert lock.locked() and lock.owned
        assert not lock.locked()

    def test_locks_are_not_keys(self, store):
        store.save("job", "a key of the same name")
        with store.lock("job"):
            assert list(store.keys()) == ["job"]
            assert store.clear() == 1
            assert store.lock("job", timeout=0).acquire() is False  # clear() left the lock alone
        assert store.get_or_set("filled", lambda: 1) == 1
        assert list(store.keys()) == ["filled"]

    def test_lock_rejects_bad_arguments(self, store):
        with pytest.raises(InvalidTTLError):
            store.lock("a", ttl=0)
        with pytest.raises(InvalidArgumentError):
            store.lock("a", timeout=-1)
        with pytest.raises(ValueError):
            store.lock("")

    # -- the checked commit underneath transactions ------------------------------------------------

    def test_committing_applies_all_ops_when_the_checks_hold(self, store):
        store.save("a", 1, ttl=100)
        blob = store.raw_get("a")
        ops = [("a", store.encode("a", 2), KEEP), ("b", store.encode("b", 3), None),
               ("c", MISSING, None)]
        store.save("c", 0)
        with store.raw_commit(ops, [("a", blob), ("new", MISSING)]):
            pass
        assert store.load("a") == 2 and 90 < store.ttl("a") <= 100
        assert store.load("b") == 3 and not store.exists("c")

    def test_committing_conflict_writes_nothing(self, store):
        store.save("a", 1)
        blob = store.raw_get("a")
        store.save("a", 2)  # another writer, after our read
        with pytest.raises(ConflictError):
            with store.raw_commit([("b", store.encode("b", 1), None)], [("a", blob)]):
                pass
        store.save("x", 1)
        with pytest.raises(ConflictError):  # checked absent, but created meanwhile
            with store.raw_commit([("b", store.encode("b", 1), None)], [("x", MISSING)]):
                pass
        assert not store.exists("b") and store.load("a") == 2

    def test_committing_block_raising_writes_nothing(self, store):
        store.save("a", 1)
        with pytest.raises(RuntimeError):
            with store.raw_commit([("a", store.encode("a", 2), None),
                                    ("b", store.encode("b", 2), None)], []):
                raise RuntimeError("a later store failed")
        assert store.load("a") == 1 and not store.exists("b")

    @pytest.mark.slow
    def test_processes_append_without_losing_any(self):
        self.run_processes(_appender, 100)
        store = self.new_store()
        items = [x for c in range(5) for x in store.load(f"chat:{c}")]
        assert len(items) == PROCESSES * 100
        assert len(set(items)) == PROCESSES * 100

    @pytest.mark.slow
    def test_processes_hold_a_lock_one_at_a_time(self):
        spans = sorted(s for r in self.run_processes(_locker, 15) for s in r)
        assert self.new_store().load("counter") == PROCESSES * 15
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end - 0.001  # no two critical sections overlap

    @pytest.mark.slow
    def test_processes_get_or_set_computes_once(self):
        results = self.run_processes(_filler)
        assert self.new_store().load("computed") == 1
        assert len({r["by"] for r in results}) == 1
