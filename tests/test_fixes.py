"""Fixes from a new user's trial and an adversarial review (issue 13): each test failed before."""

from __future__ import annotations

import os
import subprocess
import sys
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
