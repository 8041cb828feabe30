"""Owner-only files and folders, and secrets that never show in repr, errors or `config check`."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kvstore import (ConfigError, FileStore, InvalidKeyError, PersistenceManager, RedisStore,
                     Serializer, SQLiteStore, StoreUnavailableError)
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


# -- a folder swapped for a symbolic link while the store writes ----------------------------------


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (links not followed), with its bytes."""
    out = {}
    for where, _, names in os.walk(folder):
        for name in names:
            path = Path(where, name)
            rel = str(path.relative_to(folder))
            out[rel] = b"<link>" if path.is_symlink() else path.read_bytes()
    return out


def test_a_folder_swapped_for_a_link_while_writing_is_never_followed(tmp_path):
    """Two threads save, save_many, delete, read and append logs under ``sub/`` while a third
    swaps ``sub`` for a symbolic link to a folder outside the store, at least 50 times (the
    check-then-open race found in issue 21): nothing outside is ever created, changed, removed
    or read. A call that meets the link raises kvstore's own error; no other error escapes."""
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("k0.json", "k1.json", "m0.json", "t.jsonl"):
        (outside / name).write_text('"outside"\n')
    before = _tree(outside)
    store = FileStore(base_path=tmp_path / "store", fsync=False)
    base = store.base_path
    stop = threading.Event()
    unexpected: list[BaseException] = []
    leaked: list[object] = []

    def work(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                store.save(f"sub/k{i % 2}", i)
                store.save_many({f"sub/m{n}": i, f"sub/deep/d{n}": i})
                store.log("sub/t").append(i)
                for key in (f"sub/k{(i + 1) % 2}", f"sub/m{n}"):
                    if store.load(key) == "outside":
                        leaked.append(key)
                if [seq for seq, r in store.log("sub/t").read() if r == "outside"]:
                    leaked.append("sub/t")
                store.delete(f"sub/k{(i + 1) % 2}")
                list(store.keys("sub/"))
            except (InvalidKeyError, StoreUnavailableError):
                pass  # the call met the link (or its folder vanished): refused, as it should be
            except BaseException as exc:  # noqa: BLE001 - anything else fails the test
                unexpected.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for t in workers:
        t.start()
    swaps, tries, started = 0, 0, time.monotonic()
    try:
        while swaps < 400 and (swaps < 50 or time.monotonic() - started < 3.0):
            if time.monotonic() - started > 30:
                break
            tries += 1
            try:
                os.rename(base / "sub", base / f".held-{tries}")
            except FileNotFoundError:
                pass
            os.symlink(outside, base / ".link", target_is_directory=True)
            try:
                os.rename(base / ".link", base / "sub")
            except OSError:  # a writer recreated `sub` meanwhile: try again
                os.unlink(base / ".link")
                continue
            swaps += 1
            time.sleep(0.0005)
            os.unlink(base / "sub")
            time.sleep(0.0005)
    finally:
        stop.set()
        for t in workers:
            t.join(30)
        store.close()
    assert swaps >= 50
    assert _tree(outside) == before, "the store wrote or removed files outside its folder"
    assert not leaked, f"read outside data through the link: {leaked[:5]}"
    assert not unexpected, unexpected[:3]
