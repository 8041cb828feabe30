"""The conformance tests every store passes: values, keys, TTLs, counters, errors, reopen.

Mixed into :class:`kvstore.testing.StoreTests` (see :mod:`kvstore.testing` for the usage). TTLs
are short and time passes through the ``advance`` hook (a fake clock where the store takes one).
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from dataclasses import dataclass
from decimal import Decimal

import pytest

from kvstore import (InvalidArgumentError, InvalidKeyError, InvalidTTLError, KVStoreError, NotAnIntegerError,
                     PersistenceStore, SerializationError)
from kvstore.keyrules import MAX_KEY_BYTES
from kvstore.nesting import MAX_DEPTH

from .base import StoreHooks
from .facade import Blocking, run

__all__ = ["ConformanceTests"]

VALUES = [
    {"user": "ann", "roles": ["admin", "dev"], "n": 3, "ok": True, "none": None},
    ["a", 1, 2.5, None, {"nested": [1, {"deep": "x"}]}],
    "plain string",
    "",
    0,
    -17,
    2**70,
    3.25,
    True,
    False,
]

EXTENDED = {
    "aware": dt.datetime(2026, 11, 22, 15, 30, 1, 123456, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    "naive": dt.datetime(2026, 1, 2, 3, 4, 5),
    "day": dt.date(2026, 2, 28),
    "blob": b"\x00\xff binary",
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "price": Decimal("19.990"),
    "tags": {"a", "b"},
    "pair": (1, (2, "three")),
    "empty_tuple": (),
}


# Keys some store cannot hold (PostgreSQL text has no NUL; its primary-key index no entry over
# ~2,700 bytes): refused on every store alike, so that a backup of any tier restores into any.
UNPORTABLE = ["a\x00b", "\x00kvstore-meta\x00x", "k" * (MAX_KEY_BYTES + 1), "é" * 1025]


def _refused(call, bad):
    with pytest.raises(InvalidKeyError) as err:
        call()
    assert repr(bad)[:30] in str(err.value)


class ConformanceTests(StoreHooks):
    """The basic contract of a store, as its user sees it (``save``, ``load``, ``keys``...)."""

    def test_is_a_persistence_store(self, store):
        if isinstance(store, Blocking):
            from kvstore.aio import AsyncStore

            assert isinstance(store.astore, AsyncStore)
            assert isinstance(store.astore.sync, PersistenceStore)
        else:
            assert isinstance(store, PersistenceStore)

    @pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
    def test_save_load_round_trip(self, store, value):
        assert store.save("rt:key", value) is True
        loaded = store.load("rt:key")
        assert loaded == value
        assert type(loaded) is type(value)

    def test_extended_types_round_trip(self, store):
        store.save("ext", EXTENDED)
        loaded = store.load("ext")
        assert loaded == EXTENDED
        assert loaded["aware"].utcoffset() == dt.timedelta(hours=5, minutes=30)
        assert type(loaded["pair"]) is tuple and type(loaded["pair"][1]) is tuple

    def test_dataclass_is_stored_as_dict(self, store):
        @dataclass
        class Point:
            x: int
            y: int

        store.save("point", Point(1, 2))
        loaded = store.load("point")
        if self.serializes:
            assert loaded == {"x": 1, "y": 2}
        else:
            assert loaded == Point(1, 2)

    def test_missing_key_gives_default(self, store):
        assert store.load("nope") is None
        assert store.load("nope", default="fallback") == "fallback"
        assert store.exists("nope") is False

    def test_stored_none_is_not_the_default(self, store):
        store.save("none", None)
        assert store.load("none", default="fallback") is None
        assert store.exists("none") is True

    def test_overwrite_replaces_value(self, store):
        store.save("k", "one")
        store.save("k", {"two": 2})
        assert store.load("k") == {"two": 2}

    def test_delete_and_exists(self, store):
        store.save("d", 1)
        assert store.exists("d")
        assert store.delete("d") is True
        assert store.delete("d") is False
        assert not store.exists("d")
        assert store.load("d", "gone") == "gone"

    def test_keys_are_sorted(self, store):
        for key in ["b", "a:2", "c", "a:10", "A"]:
            store.save(key, 1)
        assert list(store.keys()) == ["A", "a:10", "a:2", "b", "c"]

    def test_keys_reverse_pages_descending(self, store):
        for i in range(25):
            store.save(f"k{i:02d}", i)
        store.save("j", 0)
        store.save("l", 0)
        store.save("k99", 99, ttl=0.3)
        self.advance(0.4)
        pages, after = [], None
        while page := list(store.keys("k", start_after=after, limit=10, reverse=True)):
            pages.append(page)
            after = page[-1]
        assert [len(p) for p in pages] == [10, 10, 5]
        assert sum(pages, []) == [f"k{i:02d}" for i in reversed(range(25))]
        assert list(store.keys(reverse=True))[:2] == ["l", "k24"]
        assert list(store.keys("k", limit=1, reverse=True)) == ["k24"]  # the latest under a prefix
        assert list(store.keys("k", start_after="k05", reverse=True)) == ["k04", "k03", "k02", "k01", "k00"]
        assert list(store.keys("k", start_after="a", reverse=True)) == []
        assert list(store.keys("k", start_after="z", reverse=True))[0] == "k24"
        assert list(store.items("k", start_after="k03", reverse=True, batch=2)) == [
            ("k02", 2), ("k01", 1), ("k00", 0)]
        assert list(store.items("k", limit=2, reverse=True)) == [("k24", 24), ("k23", 23)]
        for bad in (1, "yes", None):
            with pytest.raises(InvalidArgumentError, match="reverse"):
                list(store.keys(reverse=bad))
            with pytest.raises(InvalidArgumentError, match="reverse"):
                list(store.items(reverse=bad))

    def test_keys_with_prefix(self, store):
        for k in ["user:1", "user:2", "users", "session:1"]:
            store.save(k, k)
        assert sorted(store.keys()) == ["session:1", "user:1", "user:2", "users"]
        assert sorted(store.keys("user:")) == ["user:1", "user:2"]
        assert sorted(store.keys("user")) == ["user:1", "user:2", "users"]
        assert list(store.keys("nothing")) == []

    @pytest.mark.parametrize("special", ["%", "_", "*", "?", "[", "[a]", "\\"])
    def test_prefix_is_literal(self, store, special):
        store.save(f"p{special}1", 1)
        store.save("pX1", 2)
        store.save("pa1", 3)
        assert sorted(store.keys(f"p{special}")) == [f"p{special}1"]
        assert store.clear(f"p{special}") == 1
        assert sorted(store.keys("p")) == ["pX1", "pa1"]

    def test_save_many_load_many_delete_many(self, store):
        items = {f"m:{i}": {"i": i} for i in range(50)}
        assert store.save_many(items) is None
        assert store.load_many(items) == items
        got = store.load_many(["m:1", "missing", "m:2", "m:1"])
        assert got == {"m:1": {"i": 1}, "m:2": {"i": 2}}
        assert store.load_many([]) == {}
        assert store.delete_many(["m:1", "m:2", "missing"]) == 2
        assert store.delete_many([]) == 0
        assert len(list(store.keys("m:"))) == 48

    def test_save_many_with_ttl(self, store):
        store.save_many({"a": 1, "b": 2}, ttl=0.3)
        assert 0 < store.ttl("a") <= 0.3 + 1e-6
        self.advance(0.4)
        assert store.load_many(["a", "b"]) == {}

    def test_ttl_reports_seconds_left(self, store):
        store.save("forever", 1)
        store.save("short", 1, ttl=100)
        assert store.ttl("forever") is None
        assert store.ttl("missing") is None
        assert 99 <= store.ttl("short") <= 100

    @pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("1h", 3600), ("24h", 86400),
                                              ("7d", 604800), ("30d", 2592000), ("1h30m", 5400)])
    def test_duration_strings(self, store, text, seconds):
        store.save("dur", "x", ttl=text)
        assert seconds - 2 <= store.ttl("dur") <= seconds

    @pytest.mark.parametrize("bad", [0, -1, -0.5, "5x", "", "abc", "-1h", float("nan"), float("inf"), True,
                                     [1]])
    def test_invalid_ttl_raises_value_error_and_writes_nothing(self, store, bad):
        store.save("t", "before")
        with pytest.raises(ValueError):
            store.save("t", "after", ttl=bad)
        with pytest.raises(InvalidTTLError):
            store.save_many({"t": "after", "u": 1}, ttl=bad)
        assert store.load("t") == "before"
        assert not store.exists("u")

    def test_expired_key_is_invisible_at_once(self, store):
        store.save("soon", "x", ttl=0.3)
        store.save("later", "y", ttl=100)
        assert store.load("soon") == "x"
        self.advance(0.4)
        assert store.load("soon", "expired") == "expired"
        assert store.exists("soon") is False
        assert "soon" not in list(store.keys())
        assert store.load_many(["soon", "later"]) == {"later": "y"}
        assert store.ttl("soon") is None
        assert store.delete("soon") is False
        assert store.load("later") == "y"

    def test_ttl_default_applies_and_explicit_ttl_wins(self):
        store = self.new_store(ttl_default=0.3)
        store.save("default", 1)
        store.save("explicit", 1, ttl=100)
        assert 0 < store.ttl("default") <= 0.3 + 1e-6
        self.advance(0.4)
        assert store.exists("default") is False
        assert store.exists("explicit") is True

    def test_save_without_ttl_removes_old_expiry(self, store):
        store.save("k", 1, ttl=100)
        store.save("k", 2)
        assert store.ttl("k") is None

    def test_unserializable_value_raises_and_writes_nothing(self, store):
        if not self.serializes:
            pytest.skip("the store keeps values as objects: nothing is unencodable")
        store.save("keep", "old")
        with pytest.raises(SerializationError) as err:
            store.save("keep", {"lock": threading.Lock()})
        assert "keep" in str(err.value) and "lock" in str(err.value).lower()
        with pytest.raises(SerializationError) as err:
            store.save_many({"new1": 1, "new2": object(), "new3": {"x": [1.5]}})
        assert "'new2'" in str(err.value)
        assert store.load("keep") == "old"
        assert not store.exists("new1")

    def test_nesting_limit_is_the_same_on_every_store(self, store):
        if not self.serializes:
            pytest.skip("the store keeps values as objects: nothing is unencodable")
        at_limit: object = 1
        for _ in range(MAX_DEPTH):
            at_limit = [at_limit]
        store.save("deep", at_limit)
        assert store.load("deep") == at_limit
        store.save_many({"deep:1": at_limit, "deep:2": {"k": 1}})
        assert store.load_many(["deep:1"]) == {"deep:1": at_limit}
        for call in (lambda: store.save("deep", [at_limit]), lambda: store.add("deeper", [at_limit]),
                     lambda: store.save_many({"new": 1, "deeper": [at_limit]})):
            with pytest.raises(SerializationError, match=f"'deep(er)?'.*deeper than {MAX_DEPTH} levels"):
                call()
        assert store.load("deep") == at_limit
        assert not store.exists("new") and not store.exists("deeper")

    @pytest.mark.parametrize("key", ["ключ:значение", "日本語/テスト", "emoji:😀🎉", "spaces in key",
                                     "a:b:c", "mixed/ÄÖÜ:ß"])
    def test_unicode_keys(self, store, key):
        store.save(key, {"k": key})
        assert store.load(key) == {"k": key}
        assert key in list(store.keys())
        assert store.delete(key)

    @pytest.mark.parametrize("bad", ["", None, 123, b"bytes", "lone-\ud800-surrogate"])
    def test_invalid_keys_raise_value_error(self, store, bad):
        with pytest.raises(ValueError):
            store.save(bad, 1)
        with pytest.raises(InvalidKeyError):
            store.load(bad)

    @pytest.mark.parametrize("bad", UNPORTABLE, ids=["nul", "reserved", "long", "long-utf8"])
    def test_key_some_store_cannot_hold_is_refused_everywhere(self, store, bad):
        store.save("keep", 1)
        for call in (lambda: store.save(bad, 1), lambda: store.load(bad), lambda: store.delete(bad),
                     lambda: store.exists(bad), lambda: store.save_many({"new": 1, bad: 2}),
                     lambda: store.load_many(["keep", bad]), lambda: store.delete_many(["keep", bad]),
                     lambda: store.add(bad, 1), lambda: store.incr(bad), lambda: store.append(bad, 1),
                     lambda: store.touch(bad), lambda: store.ttl(bad), lambda: store.log(bad),
                     lambda: store.lock(bad)):
            _refused(call, bad)
        assert list(store.keys()) == ["keep"] and list(store.logs()) == []
        if not self.holds_longest_key:
            return  # e.g. the file store's own limit is shorter: 200 bytes a path segment
        longest = "k" * MAX_KEY_BYTES
        store.save(longest, 2)
        assert store.load(longest) == 2 and store.delete(longest)

    def test_prefix_no_key_can_have_is_refused(self, store):
        for bad in ("a\x00", "\ud800"):
            _refused(lambda: list(store.keys(prefix=bad)), bad)
            _refused(lambda: list(store.keys(start_after=bad)), bad)
            _refused(lambda: store.clear(prefix=bad), bad)

    def test_manager_refuses_unportable_keys_on_every_store(self, store):
        from kvstore import PersistenceManager
        from kvstore.aio import AsyncPersistenceManager

        aio = isinstance(store, Blocking)
        sync = store.astore.sync if aio else store
        bad = "a\x00b"
        if aio:
            apm = AsyncPersistenceManager(stores={"database": sync})
            for coro in (lambda: apm.save(bad, 1), lambda: apm.load(bad), lambda: apm.delete(bad),
                         lambda: apm.exists(bad), lambda: apm.save_many({"new": 1, bad: 2})):
                _refused(lambda: run(coro()), bad)
        else:
            pm = PersistenceManager(stores={"database": sync})
            for call in (lambda: pm.save(bad, 1), lambda: pm.load(bad), lambda: pm.delete(bad),
                         lambda: pm.exists(bad), lambda: pm.save_many({"new": 1, bad: 2}),
                         lambda: pm.incr(bad), lambda: pm.log(bad),
                         lambda: list(pm.keys(prefix=bad))):
                _refused(call, bad)
            with pytest.raises(InvalidKeyError):
                with pm.transaction() as tx:
                    tx.save("new", 1)
                    tx.save(bad, 1)
        assert list(sync.keys()) == []

    def test_large_value(self, store):
        big = "x" * (5 * 1024 * 1024)
        store.save("big", {"data": big})
        assert store.load("big")["data"] == big

    def test_incr(self, store):
        assert store.incr("c") == 1
        assert store.incr("c", 5) == 6
        assert store.incr("c", -10) == -4
        assert store.load("c") == -4
        store.save("c2", 10)
        assert store.incr("c2") == 11
        assert store.load("c2") == 11

    def test_incr_rejects_non_integers(self, store):
        store.save("s", "text")
        with pytest.raises(NotAnIntegerError) as err:
            store.incr("s")
        assert "s" in str(err.value)
        assert store.load("s") == "text"
        with pytest.raises(NotAnIntegerError):
            store.incr("c", 1.5)

    def test_incr_keeps_existing_ttl(self, store):
        store.save("ct", 1, ttl=100)
        store.incr("ct")
        assert 98 <= store.ttl("ct") <= 100

    def test_incr_is_atomic_across_threads(self, store):
        def work():
            for _ in range(100):
                store.incr("hits")

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.load("hits") == 400

    def test_clear(self, store):
        for k in ["a:1", "a:2", "b:1"]:
            store.save(k, 1)
        assert store.clear("a:") == 2
        assert list(store.keys()) == ["b:1"]
        assert store.clear() == 1
        assert list(store.keys()) == []
        assert store.clear() == 0

    def test_clear_does_not_count_expired(self, store):
        store.save("e:1", 1, ttl=0.3)
        store.save("e:2", 1)
        self.advance(0.4)
        assert store.clear("e:") == 1

    def test_context_manager_closes(self):
        with self.new_store() as s:
            s.save("cm", 1)
            assert s.load("cm") == 1

    def test_durable_store_survives_reopen(self):
        if not self.durable:
            pytest.skip(f"{type(self).__name__}: the store keeps nothing after close")
        first = self.new_store()
        first.save("keep:1", {"v": 1})
        first.save("keep:ttl", "t", ttl=100)
        first.incr("keep:n", 7)
        first.close()
        second = self.new_store()
        assert second.load("keep:1") == {"v": 1}
        assert second.load("keep:n") == 7
        assert 98 <= second.ttl("keep:ttl") <= 100

    def test_errors_are_kvstore_errors(self, store):
        with pytest.raises(KVStoreError):
            store.save("", 1)
        with pytest.raises(KVStoreError):
            store.save("x", 1, ttl="nonsense")

    def test_repr_is_informative(self, store):
        store = store.astore if isinstance(store, Blocking) else store
        assert type(store).__name__ in repr(store)
