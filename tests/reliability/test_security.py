"""Owner-only files and folders, and secrets that never show in repr, errors or `config check`.

(A folder swapped for a symbolic link while the file store writes: tests/test_file_paths.py.)"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kvstore import (ConfigError, FileStore, PersistenceManager, RedisStore, Serializer,
                     SQLiteStore, StoreUnavailableError)
from kvstore.config import parse_config


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sqlite_files_are_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        store = SQLiteStore(path=tmp_path / "new" / "kv.db")
        store.save("k", 1)
        assert mode(tmp_path / "new") == 0o700
        for suffix in ("", "-wal", "-shm"):
            path = tmp_path / "new" / f"kv.db{suffix}"
            if path.exists():
                assert mode(path) == 0o600, path
        store.close()
    finally:
        os.umask(old)


def test_file_store_files_and_folders_are_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        store = FileStore(base_path=tmp_path / "files" / "deep")  # its parents are created too
        store.save("a/b/c", 1)
        store.incr("n")
        base = tmp_path / "files" / "deep"
        for folder in (tmp_path / "files", base, base / "a", base / "a" / "b"):
            assert mode(folder) == 0o700, folder
        for path in (base / "a" / "b" / "c.json", base / "n.json", base / ".kvstore.lock"):
            assert mode(path) == 0o600, path
        store.close()
    finally:
        os.umask(old)


def test_backups_and_snapshots_are_owner_only(tmp_path, monkeypatch):
    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path / "data"))
    old = os.umask(0o022)
    try:
        config = {"persistence": {"memory": {"snapshot": str(tmp_path / "snap" / "mem")},
                                  "backup": {"path": str(tmp_path / "bk")}}}
        with PersistenceManager.from_config(config) as pm:
            pm.save("s", 1, store="memory")
            pm.save("d", 1)
            backup = pm.backup()
        assert mode(tmp_path / "snap" / "mem") == 0o600
        assert mode(backup) == 0o700
        for part in backup.iterdir():
            assert mode(part) == 0o600, part
    finally:
        os.umask(old)


SECRET = "hunter2-very-secret"


def test_secrets_stay_out_of_repr_and_errors(caplog):
    caplog.set_level(logging.DEBUG)
    store = RedisStore(url=f"redis://app:{SECRET}@127.0.0.1:1/0", connect_timeout=0.2)
    assert SECRET not in repr(store)
    with pytest.raises(StoreUnavailableError) as err:
        store.load("x")
    assert SECRET not in str(err.value)
    assert SECRET not in repr(Serializer("pickle", secret=SECRET))
    config = parse_config({"persistence": {"pickle_secret": SECRET,
                                           "redis": {"url": f"redis://:{SECRET}@h:6379"}}})
    assert SECRET not in repr(config) and "***" in repr(config)
    with pytest.raises(ConfigError) as err2:
        parse_config({"persistence": {"redis": {"url": f"redis://:{SECRET}@h", "bogus": 1}}})
    assert SECRET not in str(err2.value)
    assert SECRET not in caplog.text


def test_manager_repr_masks_the_redis_password(tmp_path, monkeypatch):
    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path))
    with PersistenceManager.from_config({"persistence": {
            "redis": {"url": f"redis://app:{SECRET}@127.0.0.1:1/0"}}}) as pm:
        assert SECRET not in repr(pm)


def test_config_check_output_masks_secrets(tmp_path):
    """Secrets written in the file and secrets from the environment (``${VAR}``) alike."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"persistence:\n  pickle_secret: {SECRET}\n"
                   f"  redis: {{url: 'redis://u:{SECRET}@h:6379/0'}}\n"
                   f"  postgres: {{dsn: 'postgresql://u:{SECRET}@db/app'}}\n")
    from_env = tmp_path / "env.yaml"
    from_env.write_text("persistence:\n  pickle_secret: ${KV_TEST_SECRET}\n"
                        "  redis: {url: '${REDIS_URL}'}\n")
    env = dict(os.environ, KVSTORE_DATA_DIR=str(tmp_path / "d"), KV_TEST_SECRET=SECRET,
               REDIS_URL=f"redis://app:{SECRET}@127.0.0.1:6379/0")
    outputs = []
    for path in (cfg, from_env):
        r = subprocess.run([sys.executable, "-m", "kvstore", "--config", str(path), "config",
                            "check"], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        assert SECRET not in r.stdout + r.stderr and "***" in r.stdout
        outputs.append(json.loads(r.stdout.split("\n", 1)[1])["persistence"])
    data, expanded = outputs
    assert data["pickle_secret"] == "***"
    assert data["postgres"]["dsn"] == "postgresql://u:***@db/app"
    assert expanded["pickle_secret"] == "***"
    assert expanded["redis"]["url"] == "redis://app:***@127.0.0.1:6379/0"
    assert expanded["default_store"] == "database"
