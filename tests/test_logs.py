"""Logs beyond the shared contract (which :mod:`kvstore.testing` checks on every store): the
file store's JSON-lines logs after a torn or damaged line, and logs routed by the manager."""

from __future__ import annotations

import pytest

from kvstore import PersistenceManager


# -- the file store's log files ------------------------------------------------------------------


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


def test_file_tail_reads_from_the_end_past_a_torn_line_and_stops_before_damage(tmp_path):
    """tail/last/read(reverse=True) read the file backwards: a torn last line is not a record;
    a damaged line is reached only when the read asks for it, then reported as forwards."""
    from kvstore import CorruptDataError

    store, log, path = _file_log(tmp_path, 5)
    _damage_line(path, 2)
    with open(path, "ab") as fh:
        fh.write(b'{"seq":6,"record":{"n":')  # a writer killed mid-line
    assert log.last() == (5, {"n": 5})
    assert log.tail(3) == [(3, {"n": 3}), (4, {"n": 4}), (5, {"n": 5})]
    assert log.read(after=2, reverse=True) == [(5, {"n": 5}), (4, {"n": 4}), (3, {"n": 3})]
    with pytest.raises(CorruptDataError, match="line 2"):
        log.tail(4)
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


def test_stats_count_log_appends_and_reads_per_store(data_dir):
    config = {"persistence": {"categories": {"transcript": {"store": "file"},
                                             "audit": {"store": "database"}}}}
    with PersistenceManager.from_config(config) as pm:
        log = pm.log("transcript:t1")
        for i in range(3):
            log.append({"n": i})
        pm.log("audit:a").append("x")
        assert log.read() and log.tail(2) and log.last() == (3, {"n": 2})
        assert log.read(limit=0) == []  # nothing asked of the store: not a read
        assert len(list(log)) == 3  # one page
        pm.stores["file"].log("transcript:t1").append("direct")  # the store's own: not counted
        stats = pm.stats()
        assert stats["file"]["log_appends"] == 3 and stats["file"]["log_reads"] == 4
        assert stats["database"]["log_appends"] == 1 and stats["database"]["log_reads"] == 0
        assert stats["file"]["saves"] == 0  # the other counters are the keys' alone


def test_the_async_manager_counts_log_appends_and_reads(data_dir):
    import asyncio

    from kvstore.aio import AsyncPersistenceManager

    async def main() -> dict:
        config = {"persistence": {"categories": {"transcript": {"store": "file"}}}}
        async with AsyncPersistenceManager.from_config(config) as pm:
            log = pm.log("transcript:t1")
            await log.append("a")
            await log.append("b")
            assert await log.tail(1) == [(2, "b")]
            return await pm.stats()

    stats = asyncio.run(main())
    assert stats["file"]["log_appends"] == 2 and stats["file"]["log_reads"] == 1
