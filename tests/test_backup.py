"""Backups, restore, retention, export/import and migration."""

from __future__ import annotations

import io
import json
import time
import uuid

import pytest

from kvstore import CorruptDataError, PersistenceManager
from kvstore.backup import list_backups
from kvstore.transfer import export_jsonl, import_jsonl, migrate

from conftest import POSTGRES_DSN, REDIS_URL, _redis_build

CATEGORIES = {"prefs": {"store": "database"}, "config": {"store": "file"},
              "cache": {"store": "cache", "ttl": "1h"}, "session": {"store": "memory"}}


@pytest.fixture
def pm(tmp_path, monkeypatch):
    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path / "data"))
    manager = PersistenceManager.from_config({"persistence": {
        "categories": CATEGORIES, "backup": {"path": str(tmp_path / "backups"), "retention": 3}}})
    yield manager
    manager.close()


def _fill(pm):
    pm.save("prefs:a", {"theme": "dark", "when": (1, 2)})
    pm.save("prefs:ttl", "short-lived", ttl=500)
    pm.stores["database"].incr("prefs:n", 5)
    pm.save("config:ui/font", {"size": 14})
    pm.save("cache:q", ["x"])


def _check(pm):
    assert pm.load("prefs:a") == {"theme": "dark", "when": (1, 2)}
    assert pm.load("prefs:ttl") == "short-lived"
    assert 400 < pm.stores["database"].ttl("prefs:ttl") <= 500
    assert pm.load("prefs:n") == 5
    assert pm.load("config:ui/font") == {"size": 14}
    assert pm.load("cache:q") == ["x"]
    assert 3000 < pm.stores["cache"].ttl("cache:q") <= 3600


def test_backup_delete_restore_brings_everything_back(pm):
    _fill(pm)
    path = pm.backup()
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["stores"]) == {"cache", "database", "file"}
    assert manifest["stores"]["database"]["keys"] == 3
    assert all(len(part["sha256"]) == 64 for part in manifest["stores"].values())
    assert manifest["kvstore_version"]
    for key in ["prefs:a", "prefs:ttl", "prefs:n", "config:ui/font", "cache:q"]:
        pm.delete(key)
    pm.save("prefs:after-backup", 1)
    counts = pm.restore(path)
    assert counts["database"] == 3 and counts["file"] == 1 and counts["cache"] == 1
    _check(pm)
    assert not pm.exists("prefs:after-backup")  # restore replaces the contents


@pytest.mark.parametrize("damage", ["flip-byte", "truncate", "no-manifest", "missing-part",
                                    "manifest-garbled"])
def test_damaged_backup_is_refused_and_nothing_changes(pm, damage):
    _fill(pm)
    path = pm.backup()
    pm.save("prefs:a", "changed after backup")
    part = path / "database.sqlite3"
    if damage == "flip-byte":
        data = bytearray(part.read_bytes())
        data[len(data) // 2] ^= 0xFF
        part.write_bytes(bytes(data))
    elif damage == "truncate":
        jsonl = path / "file.jsonl"
        jsonl.write_bytes(jsonl.read_bytes()[:-5])
    elif damage == "no-manifest":
        (path / "manifest.json").unlink()
    elif damage == "missing-part":
        (path / "cache.sqlite3").unlink()
    else:
        (path / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptDataError):
        pm.restore(path)
    assert pm.load("prefs:a") == "changed after backup"
    assert pm.load("config:ui/font") == {"size": 14}


def test_retention_keeps_exactly_n(pm, tmp_path):
    pm.save("prefs:x", 1)
    made = [pm.backup() for _ in range(5)]
    kept = list_backups(tmp_path / "backups")
    assert kept == made[-3:]


def test_backup_into_an_explicit_folder_does_not_prune(pm, tmp_path):
    dest = tmp_path / "elsewhere"
    for _ in range(4):
        pm.backup(dest)
    assert len(list_backups(dest)) == 4


def test_interval_backups_run_in_the_background(tmp_path, monkeypatch):
    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path / "data"))
    config = {"persistence": {"backup": {"enabled": True, "interval": 0.2, "retention": 2,
                                         "path": str(tmp_path / "bk")}}}
    with PersistenceManager.from_config(config) as pm:
        pm.save("k", 1)
        deadline = time.time() + 10
        while len(list_backups(tmp_path / "bk")) < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert len(list_backups(tmp_path / "bk")) == 2


def test_failing_interval_backup_fires_error_and_app_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path / "data"))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the backup folder should be")
    config = {"persistence": {"backup": {"enabled": True, "interval": 0.1, "path": str(blocker)}}}
    errors = []
    with PersistenceManager.from_config(config) as pm:
        pm.on("error", errors.append)
        deadline = time.time() + 5
        while not errors and time.time() < deadline:
            time.sleep(0.05)
        assert errors and errors[0].store == "backup"
        assert pm.save("still:works", 1) and pm.load("still:works") == 1


def test_backup_with_redis_cache(pm):
    redis = _redis_build(REDIS_URL, f"kvtest:{uuid.uuid4().hex[:8]}:")(ttl_default=3600)
    pm.stores["cache"].close()
    pm.stores["cache"] = redis
    try:
        _fill(pm)
        path = pm.backup()
        assert (path / "cache.jsonl").exists()
        redis.clear()
        pm.delete("prefs:a")
        pm.restore(path)
        _check(pm)
    finally:
        redis.clear()


def test_export_import_round_trip(pm):
    _fill(pm)
    buf = io.StringIO()
    assert export_jsonl(pm.stores["database"], buf, "prefs:") == 3
    lines = buf.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert {r["key"] for r in records} == {"prefs:a", "prefs:ttl", "prefs:n"}
    assert next(r for r in records if r["key"] == "prefs:ttl")["ttl"] <= 500
    pm.stores["database"].clear()
    assert import_jsonl(pm.stores["database"], lines) == 3
    assert pm.load("prefs:a") == {"theme": "dark", "when": (1, 2)}
    assert 400 < pm.stores["database"].ttl("prefs:ttl") <= 500


def _check_migrated(source, target, n):
    assert sorted(target.keys("m:")) == sorted(f"m:{i:05d}" for i in range(n))
    assert target.load("m:00007") == {"i": 7, "when": (7,)}
    assert 80 < target.ttl("m:00001") <= 100
    assert target.ttl("m:00002") is None


def _fill_source(source, n):
    source.save_many({f"m:{i:05d}": {"i": i, "when": (i,)} for i in range(0, n, 2)})
    source.save_many({f"m:{i:05d}": {"i": i, "when": (i,)} for i in range(1, n, 2)}, ttl=100)


def test_migrate_sqlite_to_redis(pm):
    redis = _redis_build(REDIS_URL, f"kvtest:{uuid.uuid4().hex[:8]}:")(ttl_default=None)
    try:
        _fill_source(pm.stores["database"], 250)
        assert migrate(pm.stores["database"], redis, "m:", batch=64) == 250
        _check_migrated(pm.stores["database"], redis, 250)
    finally:
        redis.clear()


@pytest.mark.skipif(not POSTGRES_DSN, reason="KVSTORE_TEST_POSTGRES_DSN is not set: no PostgreSQL")
def test_migrate_sqlite_to_postgres(pm):
    from kvstore import PostgresStore

    pg = PostgresStore(dsn=POSTGRES_DSN, table=f"kvtest_{uuid.uuid4().hex[:8]}")
    try:
        _fill_source(pm.stores["database"], 250)
        assert migrate(pm.stores["database"], pg, "m:", batch=64) == 250
        _check_migrated(pm.stores["database"], pg, 250)
    finally:
        pg.drop_table()
        pg.close()


def test_migrate_resumes_from_checkpoint(pm, tmp_path):
    source, target = pm.stores["database"], pm.stores["file"]
    _fill_source(source, 100)
    ckpt = tmp_path / "migrate.ckpt"
    calls = []

    def stop_after_two_batches(count):
        calls.append(count)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        migrate(source, target, "m:", batch=20, checkpoint=ckpt, progress=stop_after_two_batches)
    assert ckpt.read_text() == "m:00039"
    copied = migrate(source, target, "m:", batch=20, checkpoint=ckpt)
    assert copied == 60
    assert not ckpt.exists()
    _check_migrated(source, target, 100)


def test_migrate_to_memory_store_holding_objects(pm):
    _fill_source(pm.stores["database"], 10)
    assert migrate(pm.stores["database"], pm.stores["memory"], "m:") == 10
    assert pm.stores["memory"].load("m:00003") == {"i": 3, "when": (3,)}
