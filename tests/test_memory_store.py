"""MemoryStore's lock-free reads: a write of several keys is never seen half done, and the
fast save still reports what it wrote."""

from __future__ import annotations

import sys
import threading

import pytest

from kvstore import MemoryStore


@pytest.fixture
def fine_switching():
    # Let threads switch every few bytecodes, so that a read lands inside a write of many keys.
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@pytest.mark.parametrize("write", ["save_many", "raw_apply"])
def test_a_write_of_several_keys_is_seen_whole(fine_switching, write):
    store = MemoryStore()
    keys = [f"k{i}" for i in range(50)]
    store.save_many({k: 0 for k in keys})
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            if write == "save_many":
                store.save_many({k: n for k in keys})
            else:
                store.raw_apply([(k, n, None) for k in keys])

    thread = threading.Thread(target=writer)
    thread.start()
    torn = 0
    try:
        for _ in range(3000):
            # Keys are written first to last: reading them in that order, a later key never
            # holds an older value than an earlier one unless a write was seen half done.
            seen = [store.load(k) for k in keys]
            torn += any(b < a for a, b in zip(seen, seen[1:]))
    finally:
        stop.set()
        thread.join()
    assert torn == 0


def test_clear_is_seen_whole(fine_switching):
    store = MemoryStore()
    keys = [f"c{i}" for i in range(50)]
    torn = 0
    for _ in range(100):
        store.save_many({k: 1 for k in keys})
        thread = threading.Thread(target=store.clear, args=("c",))
        thread.start()
        # The keys go from all present to all gone, once; clear() removes them first to last, so
        # a missing key followed by a present one is a clear seen half done.
        while True:
            seen = [store.load(k, 0) for k in keys]
            torn += any(a < b for a, b in zip(seen, seen[1:]))
            if not any(seen):
                break
        thread.join()
    assert torn == 0


def test_fast_save_is_the_same_save():
    store = MemoryStore(serializer="json", max_entries=2)
    assert store.save_sized("a", {"x": 1}) == len(store.raw_get("a"))
    store.save("b", [1], ttl=60)
    store.save("c", "v", ttl="1m")
    assert sorted(store.keys()) == ["b", "c"]  # the least recently used key was evicted
    assert store.load("b") == [1] and 0 < store.ttl("c") <= 60
    with pytest.raises(ValueError):
        store.save("", 1)
    with pytest.raises(ValueError):
        store.save("k", 1, ttl=0)
    assert store.load("k") is None
