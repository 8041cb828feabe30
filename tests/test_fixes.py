"""Fixes from a new user's trial and an adversarial review (issue 13): each test failed before."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvstore import PersistenceManager

# -- 1. the embedded cache belongs to its configuration ------------------------------------------


def _app(folder: Path) -> dict:
    return {"persistence": {"sqlite": {"path": str(folder / "app.db")},
                            "file": {"base_path": str(folder / "files")},
                            "categories": {"query": {"store": "cache"}}}}


def test_two_configurations_never_share_the_embedded_cache(data_dir, tmp_path):
    with PersistenceManager.from_config(_app(tmp_path / "a")) as a, \
            PersistenceManager.from_config(_app(tmp_path / "b")) as b:
        a.save("query:x", "from a")
        assert b.load("query:x") is None
        b.stores["cache"].clear()
        assert a.load("query:x") == "from a"
    assert (tmp_path / "a" / "app.cache.db").exists()
    assert not (data_dir / "cache.db").exists()


def test_config_check_shows_every_path(tmp_path):
    import yaml

    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump(_app(tmp_path)))
    out = subprocess.run([sys.executable, "-m", "kvstore", "--config", str(path), "config",
                          "check"], capture_output=True, text=True, check=True).stdout
    for where in (tmp_path / "app.db", tmp_path / "app.cache.db", tmp_path / "files"):
        assert str(where) in out
    assert "backups" in out and "snapshot" in out


def test_with_postgresql_the_embedded_cache_is_a_table_beside_the_database(data_dir):
    from conftest import POSTGRES_DSN

    if not POSTGRES_DSN:
        pytest.skip("KVSTORE_TEST_POSTGRES_DSN is not set: no PostgreSQL")
    import uuid

    from kvstore import PostgresStore

    table = f"kvtest_{uuid.uuid4().hex[:8]}"
    config = {"persistence": {"postgres": {"dsn": POSTGRES_DSN, "table": table},
                              "categories": {"query": {"store": "cache"}}}}
    with PersistenceManager.from_config(config) as pm:
        cache = pm.stores["cache"]
        assert isinstance(cache, PostgresStore) and cache.table == f"{table}_cache"
        pm.save("query:q", 1)
        assert 3500 < pm.ttl("query:q") <= 3600
        cache.drop_table()
        pm.stores["database"].drop_table()
    assert not (data_dir / "cache.db").exists()


# -- 3. FileStore never follows a symbolic link out of its folder --------------------------------


@pytest.fixture
def linked(tmp_path):
    from kvstore import FileStore

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.json").write_text('"outside data"')
    (outside / "x.json").write_text('"outside x"')
    store = FileStore(base_path=tmp_path / "base")
    store.save("inside", 1)
    (store.base_path / "linkdir").symlink_to(outside, target_is_directory=True)
    (store.base_path / "leak.json").symlink_to(outside / "secret.json")
    yield store, outside
    store.close()


def test_a_linked_folder_is_refused_for_writes_and_reads(linked):
    from kvstore import InvalidKeyError

    store, outside = linked
    with pytest.raises(InvalidKeyError) as err:
        store.save("linkdir/new", 1)
    assert "symbolic link" in str(err.value) and "linkdir" in str(err.value)
    assert not (outside / "new.json").exists()
    with pytest.raises(InvalidKeyError):
        store.load("linkdir/x")
    with pytest.raises(InvalidKeyError):
        store.delete("linkdir/x")
    with pytest.raises(InvalidKeyError):
        store.save_many({"ok": 1, "linkdir/y": 2})
    assert (outside / "x.json").exists() and not store.exists("ok")


def test_a_linked_file_is_refused_and_left_alone(linked):
    from kvstore import InvalidKeyError

    store, outside = linked
    for call in (lambda: store.load("leak"), lambda: store.save("leak", "overwrite"),
                 lambda: store.delete("leak"), lambda: store.incr("leak"),
                 lambda: store.update("leak", lambda v: v)):
        with pytest.raises(InvalidKeyError):
            call()
    assert (outside / "secret.json").read_text() == '"outside data"'
    assert sorted(store.keys()) == ["inside"]


# -- 5. the command line -------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path):
    env = dict(os.environ, KVSTORE_DATA_DIR=str(tmp_path / "data"))
    env.pop("KVSTORE_CONFIG", None)
    return env


def kv(env, *args, config=None):
    cmd = [sys.executable, "-m", "kvstore"] + (["--config", str(config)] if config else [])
    return subprocess.run(cmd + list(args), env=env, capture_output=True, text=True, timeout=60)


def _yaml(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_cli_missing_import_file_is_a_usage_error_in_one_line(cli_env, tmp_path):
    r = kv(cli_env, "import", str(tmp_path / "nope.jsonl"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "nope.jsonl" in r.stderr and "Errno" not in r.stderr


def test_cli_yaml_syntax_error_is_one_line(cli_env, tmp_path):
    bad = _yaml(tmp_path, "bad.yaml", "persistence:\n  categories: {a: [\n")
    r = kv(cli_env, "keys", config=bad)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "bad.yaml" in r.stderr and "line 3" in r.stderr


def test_cli_refuses_to_set_a_key_that_would_vanish_with_the_process(cli_env, tmp_path):
    mem = _yaml(tmp_path, "mem.yaml", "persistence:\n  categories: {session: {store: memory}}\n")
    r = kv(cli_env, "set", "session:x", "1", config=mem)
    assert r.returncode == 2 and "memory" in r.stderr and "snapshot" in r.stderr
    snap = _yaml(tmp_path, "snap.yaml", "persistence:\n  categories: {session: {store: memory}}\n"
                 f"  memory: {{snapshot: {tmp_path}/mem.snap}}\n")
    assert kv(cli_env, "set", "session:x", "1", config=snap).returncode == 0
    assert kv(cli_env, "get", "session:x", config=snap).stdout.strip() == "1"


def test_cli_names_the_ttl_option(cli_env):
    r = kv(cli_env, "set", "a", "1", "--ttl", "5x")
    assert r.returncode == 2 and r.stderr.startswith("kvstore: --ttl: '5x'")


def test_cli_names_a_misspelt_top_level_key_as_written(cli_env, tmp_path):
    typo = _yaml(tmp_path, "typo.yaml", "persistense:\n  default_store: file\n")
    r = kv(cli_env, "keys", config=typo)
    assert r.returncode == 2
    assert r.stderr.startswith("kvstore: persistense: unknown top-level setting")
    assert "did you mean 'persistence'" in r.stderr and "persistence.persistense" not in r.stderr


@pytest.fixture
def redis_down(cli_env, tmp_path):
    from redis_servers import free_port

    return _yaml(tmp_path, "down.yaml", "persistence:\n  redis: {url: 'redis://127.0.0.1:"
                 f"{free_port()}/0', connect_timeout: 0.3, socket_timeout: 0.3}}\n"
                 f"  sqlite: {{path: {tmp_path}/app.db}}\n")


def test_cli_stats_reports_the_other_stores_when_redis_is_down(cli_env, redis_down):
    assert kv(cli_env, "set", "a", "1", config=redis_down).returncode == 0
    r = kv(cli_env, "stats", config=redis_down)
    assert r.returncode == 3
    lines = {line.split()[0]: line for line in r.stdout.splitlines()}
    assert "unavailable" in lines["cache"]
    assert "1 key" in lines["database"] and "keys" in lines["file"]


def test_cli_backup_names_the_unavailable_store_or_skips_it(cli_env, redis_down, tmp_path):
    import json

    kv(cli_env, "set", "a", "1", config=redis_down)
    dest = tmp_path / "backups"
    r = kv(cli_env, "backup", "--dest", str(dest), config=redis_down)
    assert r.returncode == 3 and "'cache'" in r.stderr and "--skip-unavailable" in r.stderr
    assert not dest.exists() or not any(p.name.startswith("kvstore-backup-")
                                        for p in dest.iterdir())
    r = kv(cli_env, "backup", "--dest", str(dest), "--skip-unavailable", config=redis_down)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((Path(r.stdout.strip()) / "manifest.json").read_text())
    assert "cache" in manifest["skipped"] and manifest["stores"]["database"]["keys"] == 1


# -- 2. the Redis fallback's write-back: moved to tests/test_fallback.py ---------------------------


# -- 4. a cross-store commit killed mid-way is all or nothing ------------------------------------

CRASH_KILLS = int(os.environ.get("KVSTORE_CRASH_KILLS", "50"))


def _crash_config(tmp_path: Path, prefix: str | None) -> dict:
    persistence: dict = {"sqlite": {"path": str(tmp_path / "app.db")},
                         "file": {"base_path": str(tmp_path / "files")},
                         "categories": {"p": {"store": "database"}, "c": {"store": "file"},
                                        "q": {"store": "cache"}}}
    if prefix is not None:
        from conftest import REDIS_URL

        persistence["redis"] = {"url": REDIS_URL, "key_prefix": prefix, "ttl_default": None}
    return {"persistence": persistence}


def _crash_keys(prefix: str | None) -> list[str]:
    return [f"p:{i}" for i in range(3)] + [f"c:{i}" for i in range(3)] + \
        ([f"q:{i}" for i in range(3)] if prefix else [])


def _committer(config: dict, keys: list[str], start: int) -> None:
    with PersistenceManager.from_config(config) as pm:
        n = start
        while True:
            n += 1
            with pm.transaction() as tx:
                for key in keys:
                    tx.save(key, {"n": n, "pad": "x" * 2000})


def _kill_committers(config: dict, keys: list[str], seed: int) -> tuple[list, int]:
    """SIGKILL a committing process CRASH_KILLS times; after each, open a manager (which
    recovers) and record the keys' values when they disagree. Returns (torn, last value)."""
    import multiprocessing as mp
    import random
    import signal

    ctx = mp.get_context("fork")
    torn: list = []
    last, rnd = 0, random.Random(seed)
    for run in range(CRASH_KILLS):
        child = ctx.Process(target=_committer, args=(config, keys, last))
        child.start()
        time.sleep(rnd.uniform(0.05, 0.3))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        with PersistenceManager.from_config(config) as pm:  # recovers, like any next user
            values = {key: (pm.load(key) or {}).get("n") for key in keys}
        if len(set(values.values())) != 1:
            torn.append((run, values))
        last = max(v or 0 for v in values.values())
    return torn, last


@pytest.mark.slow
def test_sigkill_during_cross_store_commits_never_tears(data_dir, tmp_path):
    """>= 50 SIGKILLs of a process committing transactions over SQLite + files (+ Redis): after
    each, the next manager to open sees every key of the last transaction at one value."""
    import uuid

    from conftest import REDIS_URL

    prefix = f"kvtest:{uuid.uuid4().hex[:8]}:" if REDIS_URL else None
    config = _crash_config(tmp_path, prefix)
    torn, last = _kill_committers(config, _crash_keys(prefix), 7)
    if prefix:
        with PersistenceManager.from_config(config) as pm:
            pm.stores["cache"].clear()
    assert not torn, f"{len(torn)} torn outcomes of {CRASH_KILLS}: {torn[:3]}"
    assert last > CRASH_KILLS  # the children did commit transactions


@pytest.mark.slow
def test_sigkill_during_multi_key_file_commits_never_tears(data_dir, tmp_path):
    """The file store renames one file per key: its own multi-key commits go through the
    journal too."""
    torn, _ = _kill_committers(_crash_config(tmp_path, None), [f"c:{i}" for i in range(40)], 11)
    assert not torn, f"{len(torn)} torn outcomes of {CRASH_KILLS}: {torn[:3]}"
