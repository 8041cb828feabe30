"""Restore is all or nothing, and backups, exports and migrations carry logs.

A restore checks every record of every part against the store it goes to before anything
changes (a damaged line, a key the store refuses, a part that is a symbolic link: refused, the
live stores untouched), replaces each store at once, and puts the earlier stores back when a
later one fails. Logs come back exactly as they were at backup time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from kvstore import KVStoreError, PersistenceManager
from kvstore.backup import BackupError
from kvstore.transfer import export_jsonl, import_jsonl, migrate

from conftest import POSTGRES_DSN, REDIS_URL, SYNC_KINDS, _make_case, _redis_build

CATEGORIES = {"prefs": {"store": "database"}, "config": {"store": "file"},
              "cache": {"store": "cache", "ttl": "1h"}, "session": {"store": "memory"},
              "transcript": {"store": "file"}, "checkpoint": {"store": "database"},
              "events": {"store": "cache"}}
PREFIX = {"file": "config:", "database": "prefs:", "cache": "cache:"}


def _manager(tmp_path: Path, postgres_table: str | None = None) -> PersistenceManager:
    body: dict[str, Any] = {"categories": CATEGORIES,
                            "backup": {"path": str(tmp_path / "backups"), "retention": 50}}
    if postgres_table:
        body["postgres"] = {"dsn": POSTGRES_DSN, "table": postgres_table}
    return PersistenceManager.from_config({"persistence": body})


@pytest.fixture
def pm(tmp_path, monkeypatch):
    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path / "data"))
    manager = _manager(tmp_path)
    yield manager
    manager.close()


@pytest.fixture
def pm_redis(pm):
    """The manager with a real (or fake) Redis as its cache tier."""
    redis = _redis_build(REDIS_URL, f"kvtest:{uuid.uuid4().hex[:8]}:")(ttl_default=3600)
    pm.stores["cache"].close()
    pm.stores["cache"] = redis
    yield pm
    redis.clear()
    for name in redis.logs():
        redis.log(name).delete()


@pytest.fixture
def pm_pg(tmp_path, monkeypatch):
    if not POSTGRES_DSN:
        pytest.skip("KVSTORE_TEST_POSTGRES_DSN is not set: no PostgreSQL")
    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path / "data"))
    manager = _manager(tmp_path, f"kvt_{uuid.uuid4().hex[:8]}")
    yield manager
    for name in ("database", "cache"):
        manager.stores[name].drop_table()
    manager.close()


def _contents(pm: PersistenceManager) -> dict[str, Any]:
    """Every durable store's keys, values, logs and records."""
    out = {}
    for name in ("cache", "database", "file"):
        store = pm.stores[name]
        out[name] = ({k: store.load(k) for k in store.keys()},
                     {n: store.log(n).read() for n in store.logs()})
    return out


def _fill(pm: PersistenceManager, n: int = 21) -> None:
    for name, prefix in PREFIX.items():
        pm.stores[name].save_many({f"{prefix}{i:03d}": {"i": i, "at": (i, "x")} for i in range(n)})


def _rechecksum(path: Path, store: str, **fields: Any) -> None:
    """Make the manifest's size and sha256 of ``store``'s part match the part as it is now."""
    manifest = json.loads((path / "manifest.json").read_text())
    info = manifest["stores"][store]
    info.update(fields)
    data = (path / info["file"]).read_bytes()
    info.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (path / "manifest.json").write_text(json.dumps(manifest))


def _rewrite_part(path: Path, store: str, lines: list[str]) -> None:
    """Make ``store``'s part the JSON Lines ``lines``, with the manifest's size and checksum
    recomputed, as a damaged copy of a backup would be."""
    info = json.loads((path / "manifest.json").read_text())["stores"][store]
    (path / info["file"]).unlink()
    (path / f"{store}.jsonl").write_text("".join(lines), encoding="utf-8")
    _rechecksum(path, store, file=f"{store}.jsonl", keys=len(lines), logs=0, log_records=0)


def _edit_sqlite_part(path: Path, sql: str, *params: Any) -> None:
    """Change the database part with ``sql``, its size and checksum recomputed in the manifest."""
    import sqlite3

    part = path / "database.sqlite3"
    con = sqlite3.connect(part)
    con.execute(sql, params)
    con.commit()
    con.close()
    _rechecksum(path, "database")


def _raw_lines(store: Any) -> list[str]:
    buf = io.StringIO()
    export_jsonl(store, buf, raw=True)
    return buf.getvalue().splitlines(keepends=True)


# -- item 1: refused before anything changes ---------------------------------------------------------


@pytest.mark.parametrize("name", ["file", "database", "cache"])
def test_a_part_with_one_damaged_line_changes_nothing(pm_redis, name):
    pm = pm_redis
    _fill(pm)
    pm.stores["file"].log("transcript:t1").append({"turn": 1})
    path = pm.backup()
    lines = _raw_lines(pm.stores[name])
    lines[10] = lines[10][:25] + "#" + lines[10][26:]  # one garbled line in the middle
    _rewrite_part(path, name, lines)
    pm.stores[name].save(f"{PREFIX[name]}new", "after the backup")
    before = _contents(pm)
    with pytest.raises(BackupError, match=rf"{name}\.jsonl:11"):
        pm.restore(path)
    assert _contents(pm) == before
    assert len(before[name][0]) == 22


def test_a_part_missing_a_line_is_refused_by_its_counts(pm):
    _fill(pm)
    path = pm.backup()
    part = path / "file.jsonl"
    part.write_text("".join(part.read_text().splitlines(keepends=True)[1:]))  # one key less
    _rechecksum(path, "file")  # the checksum matches the shortened part; the counts do not
    before = _contents(pm)
    with pytest.raises(BackupError, match="holds 20 keys, the manifest says 21"):
        pm.restore(path)
    assert _contents(pm) == before


def test_a_sqlite_row_that_does_not_decode_changes_nothing(pm):
    _fill(pm)
    path = pm.backup()
    _edit_sqlite_part(path, "UPDATE kvstore SET value = x'c16a2d7b7b7b' WHERE key = 'prefs:007'")
    pm.save("prefs:new", 1)
    before = _contents(pm)
    with pytest.raises(BackupError, match="prefs:007"):
        pm.restore(path)
    assert _contents(pm) == before


def test_a_nul_key_part_into_postgresql_is_refused_and_nothing_changes(pm_pg):
    pm = pm_pg
    for i in range(30):
        pm.save(f"prefs:{i}", {"i": i})
    pm.save("config:x", "file value")
    path = pm.backup()
    lines = _raw_lines(pm.stores["database"])
    bad = json.loads(lines[0])
    bad["key"] = "prefs:nul\x00key"  # a key SQLite could hold: a backup from a SQLite tier
    _rewrite_part(path, "database", [json.dumps(bad) + "\n", *lines[1:]])
    pm.save("config:x", "changed since")
    before = _contents(pm)
    with pytest.raises(BackupError) as caught:
        pm.restore(path)
    assert "psycopg" not in type(caught.value).__module__
    assert "nul" in str(caught.value).lower()
    assert _contents(pm) == before and len(before["database"][0]) == 30


def test_a_part_that_is_a_symlink_is_refused(pm, tmp_path):
    _fill(pm)
    path = pm.backup()
    outside = tmp_path / "outside.jsonl"
    os.replace(path / "file.jsonl", outside)  # the same bytes, so the checksum matches
    os.symlink(outside, path / "file.jsonl")
    pm.stores["file"].clear()
    pm.save("config:only", 1)
    with pytest.raises(BackupError, match="symbolic link"):
        pm.restore(path)
    assert list(pm.stores["file"].keys()) == ["config:only"]
    (path / "file.jsonl").unlink()
    os.mkfifo(path / "file.jsonl")
    with pytest.raises(BackupError, match="not a regular file"):
        pm.restore(path)


def _changed_since_backup(pm: PersistenceManager) -> Any:
    _fill(pm)
    pm.stores["file"].log("transcript:t1").append("old")
    path = pm.backup()
    for name, prefix in PREFIX.items():
        pm.stores[name].delete(f"{prefix}003")
        pm.stores[name].save(f"{prefix}new", "since the backup")
    pm.stores["file"].log("transcript:t1").append("new")
    pm.stores["database"].log("checkpoint:t1").append("new")
    return path


def test_a_failure_in_a_later_store_puts_the_earlier_ones_back(pm):
    path = _changed_since_backup(pm)
    before = _contents(pm)
    # The database fails halfway through its own replacement (after deleting the old rows):
    # a trigger on this thread's connection aborts the insert of one key.
    pm.stores["database"]._conn().execute(
        "CREATE TEMP TRIGGER boom BEFORE INSERT ON main.kvstore WHEN NEW.key = 'prefs:010' "
        "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
    with pytest.raises(KVStoreError, match="store 'database' failed.*injected.*cache put back"):
        pm.restore(path)
    assert _contents(pm) == before


def test_a_file_store_failing_halfway_leaves_every_store_as_it_was(pm, monkeypatch):
    path = _changed_since_backup(pm)
    before = _contents(pm)
    real, calls = os.replace, []

    def replace(src, dst, *args, **kw):  # the file store's 8th rename fails (a full disk...)
        # The file store renames relative to folder descriptors (dst_dir_fd=...).
        if kw.get("dst_dir_fd") is not None or str(pm.stores["file"].base_path) in str(dst):
            calls.append(dst)
            if len(calls) == 8:
                raise OSError(28, "No space left on device", str(dst))
        return real(src, dst, *args, **kw)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KVStoreError, match="store 'file' failed"):
        pm.restore(path)
    monkeypatch.setattr(os, "replace", real)
    assert _contents(pm) == before


# -- item 2: logs ----------------------------------------------------------------------------------


def _logs_come_back(pm: PersistenceManager, store: str) -> None:
    s = pm.stores[store]
    a, b = s.log("events:a"), s.log("events:b")
    for i in range(3):
        a.append({"i": i, "when": (i,)})
    b.append("one"), b.append(2)
    s.save("events:key", 1)
    path = pm.backup()
    a.append("after the backup"), a.append("and again")
    b.delete()
    s.log("events:c").append("a log made after the backup")
    counts = pm.restore(path)
    assert counts[store] >= 1
    assert a.read() == [(1, {"i": 0, "when": (0,)}), (2, {"i": 1, "when": (1,)}),
                        (3, {"i": 2, "when": (2,)})]
    assert b.read() == [(1, "one"), (2, 2)]
    assert list(s.logs("events:")) == ["events:a", "events:b"]
    assert a.append("next") == 4  # numbering goes on from the backup's
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["version"] == 2
    assert manifest["stores"][store]["logs"] == 2 and manifest["stores"][store]["log_records"] == 5


@pytest.mark.parametrize("name", ["file", "database"])
def test_logs_come_back_exactly(pm, name):
    _logs_come_back(pm, name)


def test_logs_come_back_exactly_on_redis(pm_redis):
    _logs_come_back(pm_redis, "cache")


def test_logs_come_back_exactly_on_postgresql(pm_pg):
    _logs_come_back(pm_pg, "database")
    _logs_come_back(pm_pg, "cache")


def test_an_agents_transcript_and_checkpoints_come_back_in_step(pm):
    def turn(n: int) -> None:  # one agent turn: a transcript line (file log), a checkpoint (SQLite)
        pm.log("transcript:thread-1").append({"role": "user", "n": n})
        pm.save(f"checkpoint:thread-1:{n:04d}", {"step": n, "messages": n})

    for n in range(1, 4):
        turn(n)
    path = pm.backup()
    for n in range(4, 7):
        turn(n)
    pm.log("transcript:thread-2").append("another thread, after the backup")
    pm.restore(path)
    transcript = pm.log("transcript:thread-1").read()
    checkpoints = list(pm.keys("checkpoint:thread-1:"))
    assert [seq for seq, _ in transcript] == [1, 2, 3]
    assert checkpoints[-1] == "checkpoint:thread-1:0003" and len(checkpoints) == 3
    assert pm.load(checkpoints[-1])["messages"] == len(transcript)
    assert list(pm.logs("transcript:")) == ["transcript:thread-1"]
    # a person can still read the file store's log
    text = (pm.stores["file"].base_path / "transcript:thread-1.jsonl").read_text()
    assert [json.loads(line)["seq"] for line in text.splitlines()] == [1, 2, 3]


def test_a_backup_from_before_logs_leaves_logs_as_they_are(pm):
    pm.save("config:a", 1)
    pm.stores["file"].log("transcript:t").append("kept")
    path = pm.backup()
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["version"] = 1
    for info in manifest["stores"].values():
        info.pop("logs"), info.pop("log_records")
    (path / "manifest.json").write_text(json.dumps(manifest))
    pm.stores["file"].log("transcript:t").append("written since")
    pm.save("config:a", 2)
    pm.restore(path)
    assert pm.load("config:a") == 1
    assert pm.log("transcript:t").read() == [(1, "kept"), (2, "written since")]


def test_export_import_carries_logs(pm, tmp_path):
    from kvstore.transfer import export_logs

    s = pm.stores["database"]
    s.save("events:k", {"v": 1})
    for i in range(5):
        s.log("events:log").append({"i": i, "t": (i,)})
    buf = io.StringIO()
    export_jsonl(s, buf, "events:")
    assert export_logs(s, buf, "events:") == (1, 5)
    lines = buf.getvalue().splitlines()
    assert json.loads(lines[1]) == {"log": "events:log", "seq": 1,
                                    "record": {"i": 0, "t": {"__kv__": "tuple", "v": [0]}}}
    for target in (pm.stores["file"], pm.stores["cache"]):
        counts: dict[str, int] = {}
        assert import_jsonl(target, lines, counts=counts) == 1
        assert counts == {"keys": 1, "log_records": 5}
        assert target.log("events:log").read() == [(i + 1, {"i": i, "t": (i,)}) for i in range(5)]
        import_jsonl(target, lines, counts=counts)  # again: nothing appended twice
        assert counts["log_records"] == 0 and len(target.log("events:log")) == 5
    with pytest.raises(KVStoreError, match="records are missing"):
        import_jsonl(pm.stores["memory"], [lines[0], lines[3]])


@pytest.mark.parametrize("target", ["file", "cache", "memory"])
def test_migrate_carries_logs(pm_redis, target):
    pm = pm_redis
    source = pm.stores["database"]
    source.save("events:k", 1)
    for i in range(7):
        source.log("events:t").append({"i": i})
    counts: dict[str, int] = {}
    assert migrate(source, pm.stores[target], "events:", batch=3, counts=counts) == 1
    assert counts == {"keys": 1, "log_records": 7}
    assert pm.stores[target].log("events:t").read() == [(i + 1, {"i": i}) for i in range(7)]
    source.log("events:t").append("new")
    migrate(source, pm.stores[target], "events:", counts=counts)
    assert counts["log_records"] == 1 and len(pm.stores[target].log("events:t")) == 8
    assert migrate(source, pm.stores[target], "events:", logs=False, counts=counts) == 1
    assert counts["log_records"] == 0


# -- the primitive: store.raw_replace_all on every store --------------------------------------------------


@pytest.fixture(params=SYNC_KINDS)
def replaceable(request, tmp_path):
    c = _make_case(request.param, request, tmp_path)
    store = c.make()
    store.save_many({"old:a": 1, "old:b": {"v": "b"}})
    store.save("old:ttl", "t", ttl=500)
    store.log("log:1").append("one"), store.log("log:1").append("two")
    store.log("log:2").append({"x": 2})
    yield store
    for name in store.logs():
        store.log(name).delete()
    store.clear()
    if request.param == "postgres":
        store.drop_table()
    c.close_all()


def _state(store: Any) -> Any:
    return ({k: (store.load(k), store.ttl(k) is not None) for k in store.keys()},
            {n: store.log(n).read() for n in store.logs()})


def test_replace_all_swaps_keys_and_logs(replaceable):
    s = replaceable
    rows = [("old:b", s.encode("old:b", "new b"), None), ("new:c", s.encode("new:c", [3]), 100.0)]
    logs = [("log:1", [s.encode_record("log:1", "only")]),
            ("log:3", [s.encode_record("log:3", r) for r in ({"y": 1}, "z")])]
    s.raw_replace_all(iter(rows), iter(logs))
    assert _state(s) == ({"old:b": ("new b", False), "new:c": ([3], True)},
                         {"log:1": [(1, "only")], "log:3": [(1, {"y": 1}), (2, "z")]})
    assert 90 < s.ttl("new:c") <= 100 and s.log("log:3").append("next") == 3
    s.raw_replace_all(iter([]), None)  # logs=None: logs stay
    assert list(s.keys()) == [] and list(s.logs()) == ["log:1", "log:3"]


def test_replace_all_failing_partway_leaves_the_old_contents(replaceable):
    s = replaceable
    before = _state(s)

    def rows():
        for i in range(50):
            if i == 30:
                raise OSError(5, "Input/output error")
            yield f"new:{i:02d}", s.encode(f"new:{i:02d}", i), None

    with pytest.raises(OSError):
        s.raw_replace_all(rows(), iter([("log:9", [s.encode_record("log:9", 1)])]))
    assert _state(s) == before


def test_cli_export_import_and_migrate_carry_logs(tmp_path, monkeypatch):
    from kvstore.cli import main

    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path / "one"))
    config = tmp_path / "kv.yaml"
    config.write_text("persistence:\n  categories:\n    transcript: {store: file}\n")

    def kv(*args: str) -> str:
        out, err = io.StringIO(), io.StringIO()
        assert main(["--config", str(config), *args], out, err) == 0, err.getvalue()
        return out.getvalue()

    with PersistenceManager.from_yaml(config) as pm:
        pm.save("transcript:meta", {"title": "t"})
        for i in range(4):
            pm.log("transcript:t1").append({"turn": i})
    dump = tmp_path / "dump.jsonl"
    assert kv("export", "--category", "transcript", "-o", str(dump)) == \
        f"1 key and 4 log records exported to {dump}\n"
    assert len(dump.read_text().splitlines()) == 5
    keys_only = tmp_path / "keys.jsonl"
    kv("export", "--no-logs", "-o", str(keys_only))
    assert all('"log"' not in line for line in keys_only.read_text().splitlines())
    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path / "two"))  # a fresh data folder
    assert kv("import", str(dump)) == "1 key and 4 log records imported\n"
    assert kv("import", str(dump)) == "1 key imported\n"  # the log has those records already
    assert kv("migrate", "--from", "file", "--to", "database") == \
        "1 key and 4 log records copied from file to database\n"
    with PersistenceManager.from_yaml(config) as pm:
        assert pm.log("transcript:t1").read() == [(i + 1, {"turn": i}) for i in range(4)]
        assert pm.stores["database"].log("transcript:t1").read() == pm.log("transcript:t1").read()


def test_a_sqlite_tier_backup_with_a_nul_key_into_postgresql_changes_nothing(pm_pg, tmp_path):
    with _manager(tmp_path / "sqlite-tier") as source:  # a SQLite tier's backup
        for i in range(5):
            source.save(f"prefs:s{i}", i)
        path = source.backup()
    # the key with NUL that SQLite could hold
    _edit_sqlite_part(path, "INSERT INTO kvstore (key, value) VALUES (?, x'31')", "prefs:nul\x00b")
    for i in range(30):
        pm_pg.save(f"prefs:{i}", {"i": i})
    pm_pg.save("cache:c", 1), pm_pg.save("config:f", 2)
    before = _contents(pm_pg)
    with pytest.raises(BackupError, match="(?i)nul"):
        pm_pg.restore(path)
    assert _contents(pm_pg) == before and len(before["database"][0]) == 30
    pm_pg.stores["database"].clear()  # a backup without that key restores across tiers
    _edit_sqlite_part(path, "DELETE FROM kvstore WHERE key = ?", "prefs:nul\x00b")
    assert pm_pg.restore(path)["database"] == 5
    assert pm_pg.load("prefs:s3") == 3 and not pm_pg.exists("prefs:0")


def test_when_putting_back_fails_too_the_copy_is_kept_and_restorable(pm, monkeypatch):
    path = _changed_since_backup(pm)
    before = _contents(pm)
    db = pm.stores["database"]
    real, calls = db.replace_from_file, []

    def second_call_fails(*args: Any) -> None:  # the restore works, putting back does not
        calls.append(args)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real(*args)

    monkeypatch.setattr(db, "replace_from_file", second_call_fails)
    monkeypatch.setattr(pm.stores["file"], "raw_replace_all", lambda rows, logs: 1 / 0)
    with pytest.raises(BackupError, match="NOT put back.*database") as caught:
        pm.restore(path)
    kept = Path(str(caught.value).split("is kept in ")[1].split(" (")[0])
    assert kept.name.startswith(".tmp-restore-") and (kept / "manifest.json").exists()
    monkeypatch.undo()
    assert pm.restore(kept) == {"cache": len(before["cache"][0]), "database": len(before["database"][0])}
    assert _contents(pm) == before


def test_a_restore_left_halfway_is_finished_once_its_process_is_gone(pm, tmp_path):
    import fcntl

    from kvstore.restore import recover_restores

    path = _changed_since_backup(pm)
    before = _contents(pm)
    copies = tmp_path / "backups" / ".tmp-restore-killed"  # what a killed restore leaves
    copies.mkdir()
    fd = os.open(copies / "RESTORING", os.O_RDWR | os.O_CREAT, 0o600)
    os.write(fd, json.dumps({"backup": str(path)}).encode())
    fcntl.flock(fd, fcntl.LOCK_EX)  # still held: its process is alive and restoring
    assert recover_restores(pm._core) == 0 and _contents(pm) == before
    os.close(fd)  # the process is gone
    assert recover_restores(pm._core) == 1
    finished = _contents(pm)
    assert not copies.exists() and finished != before
    pm.restore(path)
    assert _contents(pm) == finished  # what the restore would have given
    assert recover_restores(pm._core) == 0


def test_backup_and_restore_a_sqlite_tier_with_its_own_table(tmp_path):
    """A database tier ``SQLiteStore(table="custom")`` backs up, restores and migrates its own
    table (no raw sqlite3 error about a missing ``kvstore`` table), leaving another table in
    the same file alone."""
    from kvstore import FileStore, MemoryStore, SQLiteStore
    from kvstore.config import parse_config

    db = tmp_path / "app.db"
    neighbour = SQLiteStore(path=db)  # the default "kvstore" table, same file
    neighbour.save("other:x", "kept")
    config = parse_config({"persistence": {"categories": CATEGORIES,
                                           "backup": {"path": str(tmp_path / "backups")}}})
    stores = {"memory": MemoryStore(), "cache": MemoryStore(serializer="msgpack"),
              "database": SQLiteStore(path=db, table="custom"),
              "file": FileStore(base_path=tmp_path / "files")}
    with PersistenceManager(config, stores=stores) as pm:
        pm.save_many({f"prefs:{i}": {"n": i} for i in range(300)})
        pm.log("prefs:audit").append("created")
        folder = pm.backup()
        pm.save("prefs:0", "changed")
        pm.save("prefs:new", 1)
        pm.delete("prefs:5")
        counts = pm.restore(folder)
        assert counts["database"] == 300
        assert pm.load("prefs:0") == {"n": 0}
        assert pm.load("prefs:5") == {"n": 5}
        assert not pm.exists("prefs:new")
        assert [r for _, r in pm.log("prefs:audit").read()] == ["created"]
        assert pm.stats()["database"]["saves"] >= 300
        copy = SQLiteStore(path=tmp_path / "copy.db", table="moved")
        assert migrate(pm.stores["database"], copy) == 300
        assert copy.load("prefs:7") == {"n": 7}
        copy.close()
    assert neighbour.load("other:x") == "kept"
    assert list(neighbour.keys()) == ["other:x"]
    neighbour.close()
