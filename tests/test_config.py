"""The YAML configuration: every class of mistake is a ConfigError naming the setting."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from kvstore import ConfigError, PersistenceManager
from kvstore.config import Config, load_config, mask_secrets, parse_config

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_loads(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    config = load_config(ROOT / "config.example.yaml")
    assert config.default_store == "database"
    assert config.categories["query_history"].store == "cache"
    assert config.categories["query_history"].ttl == 86400
    assert config.categories["access_patterns"].ttl == 30 * 86400
    assert config.redis is not None and config.redis.url == "redis://localhost:6379/0"
    assert config.redis.fallback == "database"
    assert config.memory.autosave == 300
    assert config.backup.interval == 86400 and config.backup.retention == 7
    assert config.pickle_secret is None
    assert str(config.file.base_path).startswith(str(Path.home()))


def test_empty_config_is_the_embedded_default():
    assert parse_config({}) == Config()
    assert parse_config({"persistence": None}) == Config()


def test_env_expansion_and_home(monkeypatch):
    monkeypatch.setenv("KV_TEST_URL", "redis://example:6380/2")
    config = parse_config({"persistence": {
        "redis": {"url": "${KV_TEST_URL}", "key_prefix": "${KV_UNSET_PREFIX:-app:}"},
        "sqlite": {"path": "~/x/kv.db"}}})
    assert config.redis.url == "redis://example:6380/2"
    assert config.redis.key_prefix == "app:"
    assert config.sqlite.path == Path.home() / "x" / "kv.db"


def test_input_mapping_is_not_mutated():
    data = {"persistence": {"categories": {"session": {"store": "memory", "ttl": "15m"}},
                            "memory": {"max_entries": 5}}}
    before = copy.deepcopy(data)
    parse_config(data)
    assert data == before


def test_duration_message_names_the_setting():
    with pytest.raises(ConfigError) as err:
        parse_config({"persistence": {"categories": {"session": {"store": "memory", "ttl": "5x"}}}})
    assert str(err.value).startswith("persistence.categories.session.ttl: '5x' is not a duration")


@pytest.mark.parametrize("body,setting", [
    ({"defualt_store": "memory"}, "persistence.defualt_store"),
    ({"default_store": "disk"}, "persistence.default_store"),
    ({"memory": {"max_entries": "lots"}}, "persistence.memory.max_entries"),
    ({"memory": {"max_entries": 0}}, "persistence.memory.max_entries"),
    ({"memory": {"max_entry": 10}}, "persistence.memory.max_entry"),
    ({"memory": ["not", "a", "mapping"]}, "persistence.memory"),
    ({"memory": {"autosave": "5m"}}, "persistence.memory.autosave"),
    ({"sqlite": {"synchronous": "SOMETIMES"}}, "persistence.sqlite.synchronous"),
    ({"sqlite": {"serializer": "yaml"}}, "persistence.sqlite.serializer"),
    ({"sqlite": {"serializer": "pickle"}}, "persistence.sqlite.serializer"),
    ({"redis": {"url": 6379}}, "persistence.redis.url"),
    ({"redis": {"ttl_default": -5}}, "persistence.redis.ttl_default"),
    ({"redis": {"cluster": "maybe"}}, "persistence.redis.cluster"),
    ({"redis": {"fallback": "cache"}}, "persistence.redis.fallback"),
    ({"redis": {"fallback": "elsewhere"}}, "persistence.redis.fallback"),
    ({"file": {"format": "xml"}}, "persistence.file.format"),
    ({"postgres": {"table": "kv"}}, "persistence.postgres.dsn"),
    ({"postgres": {"dsn": "postgresql://x", "table": "kv; drop"}}, "persistence.postgres.table"),
    ({"postgres": {"dsn": "${KV_SURELY_UNSET_VAR}"}}, "persistence.postgres.dsn"),
    ({"categories": {"session": {"store": "ram"}}}, "persistence.categories.session.store"),
    ({"categories": {"session": {"ttl": "1h"}}}, "persistence.categories.session.store"),
    ({"categories": {"session": {"store": "memory", "tll": "1h"}}}, "persistence.categories.session.tll"),
    ({"categories": {"a:b": {"store": "memory"}}}, "persistence.categories.a:b"),
    ({"categories": ["session"]}, "persistence.categories"),
    ({"backup": {"interval": "fortnightly"}}, "persistence.backup.interval"),
    ({"backup": {"retention": 0}}, "persistence.backup.retention"),
    ({"backup": {"enabled": "sure"}}, "persistence.backup.enabled"),
])
def test_mistakes_name_the_setting(body, setting):
    with pytest.raises(ConfigError) as err:
        parse_config({"persistence": body})
    assert str(err.value).startswith(setting + ":"), str(err.value)


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match="persistance"):
        parse_config({"persistance": {}, "persistence": {}})


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_malformed_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("persistence:\n  categories: {session: [unclosed\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(path)


def test_wrong_type_in_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("persistence:\n  memory:\n    max_entries: [1, 2]\n")
    with pytest.raises(ConfigError, match="persistence.memory.max_entries"):
        load_config(path)


@pytest.mark.parametrize("text,message", [
    ("persistence:\n  categories:\n    session: {store: memory}\n    prefs: database\n"
     "    session: {store: cache, ttl: 1h}\n",
     "persistence.categories.session: duplicate key at line 5 (first at line 3)"),
    ("persistence:\n  default_store: cache\n  default_store: database\n",
     "persistence.default_store: duplicate key at line 3 (first at line 2)"),
    ("persistence:\n  categories: {a: memory, 'a': cache}\n",
     "persistence.categories.a: duplicate key at line 2 (first at line 2)"),
    ("persistence:\n  sqlite: {path: a.db}\npersistence: {}\n",
     "persistence: duplicate key at line 3 (first at line 1)"),
])
def test_duplicate_yaml_key_is_refused_with_its_path_and_lines(tmp_path, text, message):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: {message}"


def test_yaml_merge_keys_and_aliases_are_not_duplicates(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("persistence:\n  categories:\n    a: &s {store: cache, ttl: 1h}\n"
                    "    b: {<<: *s, ttl: 2h}\n    c: *s\n")
    config = load_config(path)
    assert config.categories["b"].ttl == 7200 and config.categories["c"].ttl == 3600


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_pickle_with_secret_is_accepted():
    config = parse_config({"persistence": {"pickle_secret": "s3cret", "sqlite": {"serializer": "pickle"}}})
    assert config.sqlite.serializer == "pickle"
    assert "s3cret" not in repr(config)


def test_mask_secrets():
    assert mask_secrets("redis://user:hunter2@host:6379/0") == "redis://user:***@host:6379/0"
    assert "hunter2" not in mask_secrets("host=db password=hunter2 user=x")


def test_relative_paths_are_relative_to_the_yaml_file(tmp_path, monkeypatch):
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "kv.yaml").write_text("persistence:\n  sqlite: {path: data/kv.db}\n"
                                    "  file: {base_path: /abs/files}\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(folder / "kv.yaml")
    assert config.sqlite.path == (folder / "data" / "kv.db").resolve()
    assert config.file.base_path == Path("/abs/files")


def test_open_url_is_exported_at_the_top_level_and_loads_lazily(tmp_path):
    import subprocess
    import sys

    code = (  # a fresh interpreter: importing kvstore must not import the opener or a driver
        "import sys, kvstore\n"
        "assert 'kvstore.stores.opening' not in sys.modules and 'redis' not in sys.modules\n"
        "from kvstore import open_url\n"
        "assert 'open_url' in kvstore.__all__ and open_url is kvstore.open_url\n"
        f"store = open_url('sqlite:///{tmp_path}/app.db')\n"
        "store.save('a:1', 1); print(type(store).__name__, store.load('a:1')); store.close()\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["SQLiteStore", "1"]


def test_file_section_takes_serializer_like_every_store_section(tmp_path):
    """API.md: every store section takes ``serializer:``; for ``file:`` it sets the encoding
    of each file (the same as ``format:``), compression included."""
    from kvstore import PersistenceManager

    for serializer, ext in [("msgpack", ".msgpack"), ("json+gzip", ".json")]:
        base = tmp_path / serializer
        body = {"persistence": {"file": {"base_path": str(base), "serializer": serializer},
                                "categories": {"config": {"store": "file"}}}}
        assert parse_config(body).file.format == serializer.split("+")[0]
        with PersistenceManager.from_config(body) as pm:
            pm.save("config:ui", {"font": 14})
            assert pm.load("config:ui") == {"font": 14}
            assert pm.stores["file"].serializer.name == serializer
        assert [p.suffix for p in base.rglob("config*ui*")] == [ext]
    agreed = {"persistence": {"file": {"serializer": "msgpack", "format": "msgpack"}}}
    assert parse_config(agreed).file.format == "msgpack"


@pytest.mark.parametrize("file_section, message", [
    ({"serializer": "msgpack", "format": "json"},
     "persistence.file.serializer: 'msgpack' disagrees with persistence.file.format: 'json'"),
    ({"serializer": "pickle"}, "persistence.file.serializer: pickle needs persistence.pickle_secret"),
    ({"serializer": "yaml"}, "persistence.file.serializer"),
])
def test_file_serializer_mistakes_name_the_setting(file_section, message):
    with pytest.raises(ConfigError) as err:
        parse_config({"persistence": {"file": file_section}})
    assert message in str(err.value)


def test_sqlite_url_opens_the_table_it_names(tmp_path):
    """``sqlite:///app.db?table=custom`` (adapters, one-string configs) opens that table; a
    misspelt option is refused instead of silently opening the default table."""
    from kvstore import ConfigError, SQLiteStore
    from kvstore.stores.opening import open_url

    db = tmp_path / "app.db"
    SQLiteStore(path=db, table="custom").save("k", 1)
    store = open_url(f"sqlite://{db}?table=custom")
    assert (store.table, store.load("k")) == ("custom", 1)
    store.close()
    with pytest.raises(ConfigError, match="'tabel'"):
        open_url(f"sqlite://{db}?tabel=custom")


# -- the embedded cache belongs to its configuration ----------------------------------------


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


def test_two_path_less_configuration_files_never_share_data(data_dir, tmp_path):
    """Issue 25: a YAML file that gives no paths keeps its data in a folder of its own (named
    for the file), which `kvstore config check` shows; the embedded default keeps its place."""
    import json
    import subprocess
    import sys

    from kvstore.config import config_data_dir

    body = "persistence:\n  default_store: database\n  backup: {retention: 2}\n"
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first, second = tmp_path / "one" / "kv.yaml", tmp_path / "two" / "kv.yaml"
    first.write_text(body)
    second.write_text(body)
    with PersistenceManager.from_yaml(first) as a, PersistenceManager.from_yaml(second) as b, \
            PersistenceManager() as default:
        a.save("prefs:x", "from one")
        a.save("config:y", "file of one", store="file")
        assert b.load("prefs:x") is None and b.load("config:y", store="file") is None
        assert default.load("prefs:x") is None
        backup = a.backup()
    own = config_data_dir(first)
    assert own.parent == data_dir / "configs" and own.name.startswith("kv-")
    assert own != config_data_dir(second) and own == config_data_dir(str(first))
    assert (own / "kvstore.db").exists() and (own / "kvstore.cache.db").exists()
    assert backup.parent == own / "backups"
    assert sorted(first.parent.iterdir()) == [first]  # nothing written beside the file
    assert (data_dir / "kvstore.db").exists()  # the embedded default: where it always was
    # a path the file gives is kept; only the missing ones move to its own folder
    first.write_text(f"persistence:\n  sqlite: {{path: {tmp_path / 'mine.db'}}}\n")
    config = load_config(first)
    assert config.sqlite.path == tmp_path / "mine.db" and config.file.base_path == own / "files"
    env = dict(os.environ, KVSTORE_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-m", "kvstore", "--config", str(second), "config",
                          "check"], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    where = json.loads(run.stdout.split("\n", 1)[1])["locations"]
    assert where["database"] == str(config_data_dir(second) / "kvstore.db")
    assert where["file"] == str(config_data_dir(second) / "files")
    assert where["backups"] == str(config_data_dir(second) / "backups")
