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
