"""The backend registry (kvstore.registry): lookups, a third-party backend found through its entry
point and opened by config and by URL, refused clashes, and every built-in backend under test."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kvstore import ConfigError, KVStoreError, MemoryStore, SQLiteStore, registry
from kvstore.registry import Backend, BackendError


@pytest.fixture
def fresh_registry():
    """The built-in backends only, entry points read again on first use; restored after."""
    registry._reset()
    yield registry
    registry._reset()


# -- lookups -------------------------------------------------------------------------------------


def test_builtin_backends_by_name_scheme_and_class(fresh_registry):
    names = [b.name for b in registry.backends()]
    assert names[:5] == ["memory", "sqlite", "file", "redis", "postgres"]
    assert registry.get("sqlite").store_class() is SQLiteStore
    assert registry.for_scheme("rediss").name == "redis"
    assert registry.for_scheme("redis+cluster").name == "redis"
    assert registry.for_scheme("POSTGRESQL").name == "postgres"
    assert registry.for_store(MemoryStore()).name == "memory"
    assert registry.for_store(SQLiteStore) is registry.get("sqlite")
    assert registry.for_store(object()) is None


def test_a_subclass_resolves_to_its_base_backend(fresh_registry, tmp_path):
    class Audited(SQLiteStore):
        pass

    with Audited(path=tmp_path / "a.db") as store:
        assert registry.for_store(store).name == "sqlite"
        assert registry.for_store(store).file_copy


def test_a_wrapper_resolves_and_unwraps(fresh_registry, tmp_path):
    from kvstore.stores.fallback import FallbackStore

    primary, fallback = SQLiteStore(path=tmp_path / "p.db"), MemoryStore()
    store = FallbackStore(primary, fallback)
    assert registry.for_store(store).name == "fallback"
    assert list(registry.unwrapped(store)) == [store, primary]
    store.close()


def test_unknown_name_and_scheme_are_errors_naming_them(fresh_registry):
    with pytest.raises(BackendError, match="'nope'"):
        registry.get("nope")
    with pytest.raises(BackendError, match="'nope'"):
        registry.for_scheme("nope")
    from kvstore import open_url

    with pytest.raises(ConfigError, match="unknown scheme 'nope'.*memory.*sqlite"):
        open_url("nope://x")


def test_lookups_import_no_driver():
    code = textwrap.dedent("""
        import sys
        import kvstore
        from kvstore import registry
        assert registry.for_scheme("redis").name == "redis"
        assert registry.get("postgres").async_driver
        assert registry.for_store(kvstore.MemoryStore()).name == "memory"
        assert "redis" not in sys.modules and "psycopg" not in sys.modules, sorted(sys.modules)
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


# -- a third-party backend, through a real entry point --------------------------------------------

_MODULE = '''
from kvstore import MemoryStore
from kvstore.registry import Backend


class DictStore(MemoryStore):
    """A third-party store: a named in-process dict (as a plugin would ship it)."""

    def __init__(self, name="default", **options):
        super().__init__(**options)
        self.name = name

    @classmethod
    def from_url(cls, url, **options):
        return cls(name=url.split("://", 1)[1] or "default", **options)


BACKEND = Backend("dictkv", "dictkv_backend:DictStore", schemes=("dictkv",),
                  section="dictkv", tier="cache")
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch, fresh_registry):
    """A distribution ``dictkv`` on sys.path whose ``kvstore.backends`` entry point is
    ``dictkv_backend:BACKEND``."""
    site = tmp_path / "site"
    dist = site / "dictkv-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dictkv\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[kvstore.backends]\ndictkv = dictkv_backend:BACKEND\n")
    (site / "dictkv_backend.py").write_text(_MODULE)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    sys.modules.pop("dictkv_backend", None)


def _basic_calls(store):
    assert store.save("session:1", {"user": "ann"}, ttl="15m")
    assert store.load("session:1") == {"user": "ann"}
    assert 0 < store.ttl("session:1") <= 900
    assert store.save("plain", [1, 2])
    assert store.ttl("plain") is None
    assert store.incr("count") == 1
    assert store.delete("plain") and store.load("plain", "gone") == "gone"


def test_an_entry_point_backend_is_found_and_opened_by_url(plugin):
    backend = registry.get("dictkv")
    assert backend.schemes == ("dictkv",)
    from kvstore import open_url

    with open_url("dictkv://sessions", max_entries=10) as store:
        assert type(store).__name__ == "DictStore" and store.name == "sessions"
        assert store.max_entries == 10
        assert registry.for_store(store) is backend
        _basic_calls(store)


def test_an_entry_point_backend_is_opened_by_config(plugin, data_dir):
    from kvstore import PersistenceManager

    config = {"dictkv": {"name": "shared", "max_entries": 100},
              "categories": {"session": {"store": "cache", "ttl": "1h"}}}
    with PersistenceManager.from_config(config) as pm:
        cache = pm.stores["cache"]
        assert type(cache).__name__ == "DictStore" and cache.name == "shared"
        assert pm.save("session:1", {"user": "ann"})
        assert pm.load("session:1") == {"user": "ann"}
        assert 3500 < pm.ttl("session:1") <= 3600
        assert pm.incr("session:n") == 1
        assert pm.delete("session:1") and pm.load("session:1") is None
        assert pm.stores["database"].durable  # the other tiers open their defaults


def test_an_entry_point_backend_under_the_async_manager(plugin, data_dir):
    from kvstore.aio import AsyncPersistenceManager, InlineStore

    async def main():
        config = {"dictkv": {}, "categories": {"session": {"store": "cache"}}}
        async with AsyncPersistenceManager.from_config(config) as pm:
            await pm.save("session:1", "x", ttl=60)
            assert await pm.load("session:1") == "x"
            assert 0 < await pm.ttl("session:1") <= 60
            return pm

    pm = asyncio.run(main())
    assert pm is not None
    from kvstore.aio import async_store

    # a subclass of MemoryStore registered as its own backend: no driver, not inline: threads
    assert not isinstance(async_store(registry.get("dictkv").store_class()()), InlineStore)


def test_a_third_party_section_is_checked(plugin, data_dir):
    from kvstore import PersistenceManager
    from kvstore.config import parse_config

    assert parse_config({"dictkv": {"name": "x"}}).backends == {"dictkv": {"name": "x"}}
    with pytest.raises(ConfigError, match="persistence.dictkv: .*bogus"):
        PersistenceManager.from_config({"dictkv": {"bogus": 1}})
    with pytest.raises(ConfigError, match=r"persistence.dictkx: unknown setting \(known: .*dictkv"):
        parse_config({"persistence": {"dictkx": {}}})
    with pytest.raises(ConfigError, match="cache store is already"):
        parse_config({"dictkv": {}, "redis": {"url": "redis://localhost/0"}})


def test_a_settings_function_checks_a_section(fresh_registry, data_dir):
    from kvstore import checks
    from kvstore.config import parse_config

    registry.register(Backend("checked", "kvstore.stores.memory:MemoryStore", section="checked",
                              tier="memory", settings=f"{__name__}:_checked_settings"))
    assert parse_config({"checked": {"max_entries": "5"}}).backends["checked"] == {"max_entries": 5}
    with pytest.raises(ConfigError, match="persistence.checked.max_entries: must be at least 1"):
        parse_config({"checked": {"max_entries": 0}})
    assert checks.duration("15m", "x") == 900


def _checked_settings(value, setting):
    from kvstore import checks

    data = checks.mapping(value, setting)
    return {"max_entries": checks.whole(data.get("max_entries", 10), f"{setting}.max_entries", 1)}


# -- clashes -------------------------------------------------------------------------------------


def test_a_clashing_name_or_scheme_is_refused(fresh_registry):
    with pytest.raises(BackendError, match="backend 'redis' is already registered"):
        registry.register(Backend("redis", "mykv:Store"))
    with pytest.raises(BackendError, match="'myredis': URL scheme 'rediss' is already backend 'redis'"):
        registry.register(Backend("myredis", "mykv:Store", schemes=("RediSS",)))
    with pytest.raises(BackendError, match="config section 'sqlite'"):
        registry.register(Backend("mysqlite", "mykv:Store", section="sqlite"))
    assert issubclass(BackendError, KVStoreError)
    assert "myredis" not in [b.name for b in registry.backends()]
    assert registry.register(registry.get("redis")) is registry.get("redis")  # the same again


def test_a_clashing_entry_point_is_refused_with_its_name(plugin):
    (plugin / "dictkv_backend.py").write_text(_MODULE.replace('schemes=("dictkv",)',
                                                              'schemes=("sqlite",)'))
    with pytest.raises(BackendError, match="'dictkv': URL scheme 'sqlite' is already backend 'sqlite'"):
        registry.backends()
    with pytest.raises(BackendError, match="'dictkv'"):  # every lookup says so, not only the first
        registry.get("dictkv")


def test_a_broken_entry_point_is_an_error_naming_it(plugin):
    (plugin / "dictkv_backend.py").write_text("BACKEND = 42\n")
    with pytest.raises(BackendError, match="entry point 'dictkv' .*is not a kvstore.registry.Backend"):
        registry.for_scheme("dictkv")


def test_a_bad_record_is_refused(fresh_registry):
    with pytest.raises(BackendError, match="tier 'disk'"):
        registry.register(Backend("x", "m:C", tier="disk"))
    with pytest.raises(BackendError, match="'module:Class'"):
        registry.register(Backend("x", "nocolon"))
    with pytest.raises(BackendError):
        registry.register("redis")  # type: ignore[arg-type]


# -- every built-in backend is tested --------------------------------------------------------------


def test_every_builtin_backend_has_a_conformance_kind():
    """A backend added to the registry without a conformance kind in tests/conftest.py fails
    here: each backend runs the suite on the synchronous front, and (a wrapper excepted: it runs
    through the store it wraps) on the async front."""
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import AIO_KINDS, SYNC_KINDS

    def covered(name: str, kinds: list[str]) -> bool:
        return any(name in kind.removeprefix("aio-").split("-") for kind in kinds)

    for backend in registry.BUILTIN:
        assert covered(backend.name, SYNC_KINDS), f"no conformance kind for {backend.name!r}"
        if backend.wraps is None:
            assert covered(backend.name, AIO_KINDS), f"no aio conformance kind for {backend.name!r}"
