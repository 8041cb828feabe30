"""Logs and paging: dense sequence numbers 1..N per log, atomic across threads and processes
(4 processes: 0 lost, distinct numbers), crash-safe (a SIGKILL mid-append never leaves a record
half-read and never breaks the next append); ``keys``/``items`` with ``start_after`` and
``limit``, sorted by key; the bulk rows exports and backups read and write.

Mixed into :class:`kvstore.testing.StoreTests`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from typing import Any, Callable

import pytest

from kvstore import InvalidArgumentError, SerializationError
from kvstore.rows import iter_rows

from .base import StoreHooks

__all__ = ["LogTests"]


RECORDS = [{"role": "user", "text": "hi"}, ["a", 1, None], "plain", 0, 2.5, True, None]


def _appender(store: Any, proc: int, n: int) -> list[int]:
    log = store.log("shared")
    return [log.append(f"{proc}-{i}") for i in range(n)]


def _killed_appender(opener: Callable[[], Any], ack: Any) -> None:
    store = opener()
    log = store.log("crash")
    i = 0
    while True:
        seq = log.append({"i": i, "pad": "x" * (i % 7) * 3000})
        ack.send(seq)
        i += 1


class LogTests(StoreHooks):
    """Append-only logs, key paging and bulk rows."""

    def test_append_numbers_records_from_one(self, store):
        log = store.log("transcript:t1")
        assert [log.append(r) for r in RECORDS] == list(range(1, len(RECORDS) + 1))
        assert len(log) == len(RECORDS)
        assert log.read() == list(enumerate(RECORDS, start=1))

    def test_read_pages_with_after_and_limit(self, store):
        log = store.log("events")
        for i in range(25):
            log.append({"i": i})
        assert log.read(after=20) == [(s, {"i": s - 1}) for s in range(21, 26)]
        assert log.read(after=3, limit=2) == [(4, {"i": 3}), (5, {"i": 4})]
        assert log.read(limit=0) == [] and log.read(after=25) == [] and log.read(after=99) == []
        assert [seq for seq, _ in log] == list(range(1, 26))
        with pytest.raises(InvalidArgumentError):
            log.read(after=-1)
        with pytest.raises(InvalidArgumentError):
            log.read(limit=-5)

    def test_read_reverse_tail_and_last(self, store):
        log = store.log("events")
        assert log.tail(3) == [] and log.last() is None and log.read(reverse=True) == []
        for i in range(25):
            log.append({"i": i})
        assert log.read(reverse=True) == [(s, {"i": s - 1}) for s in range(25, 0, -1)]
        assert log.read(limit=3, reverse=True) == [(25, {"i": 24}), (24, {"i": 23}), (23, {"i": 22})]
        assert log.read(after=22, reverse=True) == [(25, {"i": 24}), (24, {"i": 23}), (23, {"i": 22})]
        assert log.read(after=20, limit=2, reverse=True) == [(25, {"i": 24}), (24, {"i": 23})]
        assert log.read(after=25, reverse=True) == [] and log.read(limit=0, reverse=True) == []
        assert log.tail(2) == [(24, {"i": 23}), (25, {"i": 24})]
        assert log.tail(100) == log.read()
        assert log.last() == (25, {"i": 24})
        log.append("new")
        assert log.last() == (26, "new") and log.tail(1) == [(26, "new")]
        for bad in (0, -1, 1.5, True, None, "2"):
            with pytest.raises(InvalidArgumentError, match="n must"):
                log.tail(bad)
        for bad in (1, "yes", None):
            with pytest.raises(InvalidArgumentError, match="reverse"):
                log.read(reverse=bad)

    def test_a_missing_log_is_empty(self, store):
        log = store.log("never")
        assert len(log) == 0 and log.read() == [] and log.delete() is False

    def test_delete_and_start_again(self, store):
        log = store.log("t")
        log.append(1)
        log.append(2)
        assert log.delete() is True
        assert len(log) == 0 and log.read() == []
        assert log.append("again") == 1

    def test_logs_live_apart_from_keys(self, store):
        store.save("chat:1", "a key")
        log = store.log("chat:1")
        log.append("a record")
        assert list(store.keys()) == ["chat:1"]
        assert store.clear() == 1
        assert log.read() == [(1, "a record")]
        assert list(store.logs()) == ["chat:1"]

    def test_logs_lists_names_by_prefix_sorted(self, store):
        for name in ["transcript:b", "transcript:a", "audit:x"]:
            store.log(name).append(1)
        assert list(store.logs()) == ["audit:x", "transcript:a", "transcript:b"]
        assert list(store.logs("transcript:")) == ["transcript:a", "transcript:b"]
        assert list(store.logs("nope")) == []

    def test_unencodable_record_writes_nothing(self, store):
        if not self.serializes:
            pytest.skip("the store keeps values as objects: nothing is unencodable")
        log = store.log("t")
        with pytest.raises(SerializationError):
            log.append(object())
        assert len(log) == 0 and log.append("ok") == 1

    def test_appends_from_threads_get_distinct_dense_numbers(self, store):
        log = store.log("shared")
        seqs: list[int] = []
        errors: list[str] = []
        lock = threading.Lock()

        def worker(t: int) -> None:
            try:
                for i in range(25):
                    seq = log.append(f"{t}-{i}")
                    with lock:
                        seqs.append(seq)
            except Exception:
                errors.append(traceback.format_exc())

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        assert sorted(seqs) == list(range(1, 201))
        records = log.read()
        assert [s for s, _ in records] == list(range(1, 201))
        assert len({r for _, r in records}) == 200

    @pytest.mark.slow
    def test_appends_from_processes_lose_nothing(self):
        results = self.run_processes(_appender, 50)
        seqs = sorted(s for r in results for s in r)
        assert seqs == list(range(1, 201))
        records = self.new_store().log("shared").read()
        assert [s for s, _ in records] == seqs and len({r for _, r in records}) == 200

    @pytest.mark.slow
    @pytest.mark.parametrize("rounds", [20])
    def test_sigkill_mid_append_never_tears_a_record(self, rounds):
        opener = self.store_opener()
        if opener is None or self.async_front:
            pytest.skip(f"{type(self).__name__}: not a store a killed process leaves behind")
        ctx = mp.get_context("fork")
        acked = 0
        for _ in range(rounds):
            ours, theirs = ctx.Pipe(duplex=False)
            child = ctx.Process(target=_killed_appender, args=(opener, theirs))
            child.start()
            time.sleep(0.05 + (acked % 5) * 0.02)
            os.kill(child.pid, signal.SIGKILL)
            child.join()
            while ours.poll():
                acked = max(acked, ours.recv())
            store = opener()  # closed below: 20 rounds must not pile up connections
            log = store.log("crash")
            records = log.read()
            assert [s for s, _ in records] == list(range(1, len(records) + 1))  # dense, complete
            assert len(records) >= acked  # every acknowledged append is there
            assert all(r == {"i": s - 1, "pad": "x" * ((s - 1) % 7) * 3000} for s, r in records)
            assert log.append({"i": len(records), "pad": ""}) == len(records) + 1  # appends go on
            log.delete()
            store.close()
            acked = 0

    # -- paging ------------------------------------------------------------------------------------

    def test_keys_and_items_page_in_key_order(self, store):
        for i in range(25):
            store.save(f"k{i:02d}", i)
        store.save("other", 1)
        pages, after = [], None
        while True:
            page = list(store.keys("k", start_after=after, limit=10))
            if not page:
                break
            pages.append(page)
            after = page[-1]
        assert [len(p) for p in pages] == [10, 10, 5]
        assert sum(pages, []) == [f"k{i:02d}" for i in range(25)]
        assert list(store.items("k", start_after="k19", batch=2)) == [(f"k{i}", i) for i in range(20, 25)]
        assert list(store.keys(start_after="k24")) == ["other"]
        with pytest.raises(InvalidArgumentError):
            list(store.keys(limit=-1))

    # -- bulk rows (export, import, migrate, backups go through these) -----------------------------

    def test_bulk_rows_round_trip(self, store):
        if not self.serializes:
            pytest.skip("the store keeps values as objects, not blobs")
        rows = [(f"r{i:02d}", store.encode(f"r{i:02d}", {"i": i}), None if i % 2 else 100.0)
                for i in range(20)]
        rows.append(("r00", store.encode("r00", "last wins"), None))
        store.raw_put_rows(rows)
        assert store.load("r00") == "last wins" and store.load("r05") == {"i": 5}
        assert 90 < store.ttl("r04") <= 100 and store.ttl("r05") is None
        pages = list(iter_rows(store, "r", batch=7))
        assert [len(p) for p in pages] == [7, 7, 6]
        assert [k for p in pages for k, _, _ in p] == [f"r{i:02d}" for i in range(20)]
        assert [k for p in iter_rows(store, "r", after="r15") for k, _, _ in p] == \
            ["r16", "r17", "r18", "r19"]
