"""Conformance suite for logs and paging, on every store (see ``case`` in conftest).

Logs: dense sequence numbers 1..N per log, atomic across threads and processes (4 processes: 0
lost, distinct numbers), crash-safe (a SIGKILL mid-append never leaves a record half-read and
never breaks the next append). Paging: ``keys``/``items`` with ``start_after`` and ``limit``,
sorted by key, on every store.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from typing import Any

import pytest

from conftest import open_spec
from kvstore import InvalidArgumentError, PersistenceManager, SerializationError

RECORDS = [{"role": "user", "text": "hi"}, ["a", 1, None], "plain", 0, 2.5, True, None]


def test_append_numbers_records_from_one(store):
    log = store.log("transcript:t1")
    assert [log.append(r) for r in RECORDS] == list(range(1, len(RECORDS) + 1))
    assert len(log) == len(RECORDS)
    assert log.read() == list(enumerate(RECORDS, start=1))


def test_read_pages_with_after_and_limit(store):
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


def test_a_missing_log_is_empty(store):
    log = store.log("never")
    assert len(log) == 0 and log.read() == [] and log.delete() is False


def test_delete_and_start_again(store):
    log = store.log("t")
    log.append(1)
    log.append(2)
    assert log.delete() is True
    assert len(log) == 0 and log.read() == []
    assert log.append("again") == 1


def test_logs_live_apart_from_keys(store):
    store.save("chat:1", "a key")
    log = store.log("chat:1")
    log.append("a record")
    assert list(store.keys()) == ["chat:1"]
    assert store.clear() == 1
    assert log.read() == [(1, "a record")]
    assert list(store.logs()) == ["chat:1"]


def test_logs_lists_names_by_prefix_sorted(store):
    for name in ["transcript:b", "transcript:a", "audit:x"]:
        store.log(name).append(1)
    assert list(store.logs()) == ["audit:x", "transcript:a", "transcript:b"]
    assert list(store.logs("transcript:")) == ["transcript:a", "transcript:b"]
    assert list(store.logs("nope")) == []


def test_unencodable_record_writes_nothing(case, store):
    if not case.serializes:
        pytest.skip("a MemoryStore without serializer keeps any object")
    log = store.log("t")
    with pytest.raises(SerializationError):
        log.append(object())
    assert len(log) == 0 and log.append("ok") == 1


def test_appends_from_threads_get_distinct_dense_numbers(store):
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


def _appender(spec: dict[str, Any], proc: int, n: int, queue: Any) -> None:
    try:
        store = open_spec(spec)
        log = store.log("shared")
        queue.put(("ok", [log.append(f"{proc}-{i}") for i in range(n)]))
        store.close()
    except BaseException:
        queue.put(("error", traceback.format_exc()))


@pytest.mark.slow
def test_appends_from_processes_lose_nothing(case):
    if case.spec is None:
        pytest.skip(f"{case.kind}: not shared between processes")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_appender, args=(case.spec, p, 50, queue)) for p in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    errors = [r for kind, r in results if kind == "error"]
    assert not errors, errors[0]
    seqs = sorted(s for _, r in results for s in r)
    assert seqs == list(range(1, 201))
    records = case.make().log("shared").read()
    assert [s for s, _ in records] == seqs and len({r for _, r in records}) == 200


def _killed_appender(spec: dict[str, Any], ack: Any) -> None:
    store = open_spec(spec)
    log = store.log("crash")
    i = 0
    while True:
        seq = log.append({"i": i, "pad": "x" * (i % 7) * 3000})
        ack.send(seq)
        i += 1


@pytest.mark.slow
@pytest.mark.parametrize("rounds", [20])
def test_sigkill_mid_append_never_tears_a_record(case, rounds):
    if case.spec is None or case.kind.startswith("aio-"):
        pytest.skip(f"{case.kind}: not a store a killed process leaves behind")
    ctx = mp.get_context("fork")
    acked = 0
    for _ in range(rounds):
        ours, theirs = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_killed_appender, args=(case.spec, theirs))
        child.start()
        time.sleep(0.05 + (acked % 5) * 0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        while ours.poll():
            acked = max(acked, ours.recv())
        store = open_spec(case.spec)  # closed below: 20 rounds must not pile up connections
        log = store.log("crash")
        records = log.read()
        assert [s for s, _ in records] == list(range(1, len(records) + 1))  # dense, complete
        assert len(records) >= acked  # every acknowledged append is there
        assert all(r == {"i": s - 1, "pad": "x" * ((s - 1) % 7) * 3000} for s, r in records)
        assert log.append({"i": len(records), "pad": ""}) == len(records) + 1  # appends go on
        log.delete()
        store.close()
        acked = 0


def test_a_torn_last_line_is_never_read_and_the_next_append_cuts_it(tmp_path):
    from kvstore import FileStore

    store = FileStore(base_path=tmp_path)
    log = store.log("transcript/t1")
    log.append({"a": 1})
    path = tmp_path / "transcript" / "t1.jsonl"
    with open(path, "ab") as fh:
        fh.write(b'{"seq":2,"record":{"a":')  # a writer killed mid-line
    assert log.read() == [(1, {"a": 1})] and len(log) == 1
    assert log.append({"a": 2}) == 2
    assert path.read_text().splitlines() == ['{"seq":1,"record":{"a":1}}',
                                             '{"seq":2,"record":{"a":2}}']



def _file_log(tmp_path, records: int):
    from kvstore import FileStore

    store = FileStore(base_path=tmp_path)
    log = store.log("transcript/t1")
    for i in range(1, records + 1):
        log.append({"n": i})
    return store, log, tmp_path / "transcript" / "t1.jsonl"


def _damage_line(path, number: int, text: bytes = b'{"seq":3,"rec\x00rd": garbled') -> None:
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = text
    path.write_bytes(b"\n".join(lines))


def test_a_damaged_last_line_no_longer_blocks_appends(tmp_path):
    from kvstore import CorruptDataError

    store, log, path = _file_log(tmp_path, 2)
    with open(path, "ab") as fh:
        fh.write(b"not json at all\n")  # a complete line: a bad hand edit, bit rot
    assert len(log) == 3  # the damaged line keeps its number
    assert log.append({"n": 4}) == 4  # appends go on (main raised CorruptDataError here)
    assert log.append({"n": 5}) == 5
    assert log.read(limit=2) == [(1, {"n": 1}), (2, {"n": 2})]
    assert log.read(after=3) == [(4, {"n": 4}), (5, {"n": 5})]
    with pytest.raises(CorruptDataError) as err:
        log.read()
    assert "line 3" in str(err.value) and "transcript/t1" in str(err.value)
    store.close()


def test_a_damaged_middle_line_is_reported_with_its_line_number_only_when_reached(tmp_path):
    from kvstore import CorruptDataError

    store, log, path = _file_log(tmp_path, 5)
    _damage_line(path, 3)
    assert log.read(limit=2) == [(1, {"n": 1}), (2, {"n": 2})]  # stops before it
    assert log.read(after=1, limit=1) == [(2, {"n": 2})]
    assert log.read(after=3) == [(4, {"n": 4}), (5, {"n": 5})]  # starts past it
    for after in (0, 2):
        with pytest.raises(CorruptDataError) as err:
            log.read(after=after)
        assert "line 3" in str(err.value) and "'transcript/t1'" in str(err.value)
        assert str(path) in str(err.value)
    with pytest.raises(CorruptDataError):
        list(log)
    assert len(log) == 5
    assert log.append({"n": 6}) == 6
    assert log.read(after=3) == [(4, {"n": 4}), (5, {"n": 5}), (6, {"n": 6})]
    # Repaired by hand (the line removed), the log reads through again.
    _damage_line(path, 3, b'{"seq":3,"record":{"n":3}}')
    assert [seq for seq, _ in log] == [1, 2, 3, 4, 5, 6]
    store.close()


def test_a_torn_tail_after_a_damaged_line_is_cut_and_numbering_goes_on(tmp_path):
    store, log, path = _file_log(tmp_path, 3)
    _damage_line(path, 3, b"\x00\x00\x00")
    with open(path, "ab") as fh:
        fh.write(b'{"seq":4,"record":{"n":')  # then a writer killed mid-line
    assert len(log) == 3
    assert log.append({"n": 4}) == 4
    assert path.read_bytes().endswith(b'\x00\x00\x00\n{"seq":4,"record":{"n":4}}\n')
    assert log.read(after=3) == [(4, {"n": 4})]
    store.close()


# -- paging ------------------------------------------------------------------------------------


def test_keys_and_items_page_in_key_order(store):
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


# -- through the manager -----------------------------------------------------------------------


def test_manager_routes_logs_by_category(data_dir):
    config = {"persistence": {"categories": {"transcript": {"store": "file"},
                                             "audit": {"store": "database"}}}}
    with PersistenceManager.from_config(config) as pm:
        assert pm.log("transcript:t1").append({"role": "user"}) == 1
        pm.log("audit:a").append("x")
        assert list(pm.stores["file"].logs()) == ["transcript:t1"]
        assert list(pm.logs()) == ["audit:a", "transcript:t1"]
        assert list(pm.logs("transcript:")) == ["transcript:t1"]
        assert (data_dir / "files" / "transcript:t1.jsonl").exists()
        for i in range(5):
            pm.save(f"audit:{i}", i)
            pm.save(f"transcript:{i}", i)
        assert list(pm.keys(limit=3)) == ["audit:0", "audit:1", "audit:2"]
        assert list(pm.keys(start_after="audit:4", limit=2)) == ["transcript:0", "transcript:1"]
        assert dict(pm.items("transcript:")) == {f"transcript:{i}": i for i in range(5)}


# -- bulk rows (export, import, migrate, backups go through these) -------------------------------


def test_bulk_rows_round_trip(case, store):
    if not case.serializes:
        pytest.skip("a MemoryStore without serializer holds objects, not blobs")
    rows = [(f"r{i:02d}", store.encode(f"r{i:02d}", {"i": i}), None if i % 2 else 100.0)
            for i in range(20)]
    rows.append(("r00", store.encode("r00", "last wins"), None))
    store.raw_put_rows(rows)
    assert store.load("r00") == "last wins" and store.load("r05") == {"i": 5}
    assert 90 < store.ttl("r04") <= 100 and store.ttl("r05") is None
    from kvstore.transfer import iter_rows

    pages = list(iter_rows(store, "r", batch=7))
    assert [len(p) for p in pages] == [7, 7, 6]
    assert [k for p in pages for k, _, _ in p] == [f"r{i:02d}" for i in range(20)]
    assert [k for p in iter_rows(store, "r", after="r15") for k, _, _ in p] == \
        ["r16", "r17", "r18", "r19"]
