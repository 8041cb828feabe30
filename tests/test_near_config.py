"""The near cache in the configuration (``near:`` per category and per ``redis:`` section) and
through both managers: checked before anything opens, wired around the Redis store, counted in
``pm.stats()``. The managers run on a private redis-server (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from kvstore import ConfigError, PersistenceManager
from kvstore.config import parse_config
from kvstore.stores.near import NearSettings, NearStore


def _cats(**near: Any) -> dict[str, Any]:
    return {"redis": {"url": "redis://127.0.0.1:1/0"},
            "categories": {"settings": {"store": "cache", "near": near}}}


def test_a_category_and_the_redis_section_take_near_settings() -> None:
    config = parse_config(_cats(max_entries=10000, ttl="1m"))
    assert config.categories["settings"].near == NearSettings(max_entries=10000, ttl=60.0)
    config = parse_config({"redis": {"url": "redis://h/0", "near": {}}})
    assert config.redis is not None and config.redis.near == NearSettings()
    assert parse_config({"redis": {"url": "redis://h/0"}}).redis.near is None


@pytest.mark.parametrize("near, setting", [
    ({"max_entry": 10}, "persistence.categories.settings.near.max_entry"),
    ({"max_entries": 0}, "persistence.categories.settings.near.max_entries"),
    ({"max_entries": "many"}, "persistence.categories.settings.near.max_entries"),
    ({"ttl": "soon"}, "persistence.categories.settings.near.ttl"),
    ({"ttl": None}, "persistence.categories.settings.near.ttl"),
])
def test_bad_near_settings_are_refused_by_name(near: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
        parse_config(_cats(**near))


def test_a_near_cache_needs_redis_behind_it() -> None:
    with pytest.raises(ConfigError, match=r"categories\.settings\.near: .*'database'"):
        parse_config({"redis": {"url": "redis://h/0"},
                      "categories": {"settings": {"store": "database", "near": {}}}})
    with pytest.raises(ConfigError, match=r"categories\.settings\.near: needs a persistence\.redis"):
        parse_config({"categories": {"settings": {"store": "cache", "near": {}}}})
    with pytest.raises(ConfigError, match=r"persistence\.redis\.near\.size"):
        parse_config({"redis": {"url": "redis://h/0", "near": {"size": 1}}})
    with pytest.raises(ConfigError, match=r"persistence\.redis\.near"):
        parse_config({"redis": {"url": "redis://h/0", "near": 5}})


def _config(url: str, tmp_path: Any, **redis: Any) -> dict[str, Any]:
    return {"redis": {"url": url, "key_prefix": f"near:{uuid.uuid4().hex[:8]}:", **redis},
            "sqlite": {"path": str(tmp_path / "app.db")},
            "categories": {"settings": {"store": "cache", "near": {"max_entries": 100,
                                                                   "ttl": "1m"}},
                           "q": {"store": "cache"}}}


def test_the_manager_serves_a_near_category_locally(private_redis_url: str, tmp_path: Any) -> None:
    with PersistenceManager.from_config(_config(private_redis_url, tmp_path)) as pm:
        cache = pm.stores["cache"]
        assert isinstance(cache, NearStore) and cache.wait_tracking(10)
        pm.save("settings:theme", {"dark": True})
        pm.save("q:1", 1)
        time.sleep(0.05)  # the echo of these writes (see test_near._settle)
        for _ in range(3):
            assert pm.load("settings:theme") == {"dark": True} and pm.load("q:1") == 1
        stats = pm.stats()["cache"]
        assert stats["near_hits"] == 2 and stats["near_misses"] == 1  # q: is not near-cached
        assert stats["hits"] == 6
        with pm.transaction() as tx:
            tx.save("settings:theme", {"dark": False})
        assert pm.load("settings:theme") == {"dark": False}  # the commit evicted the copy
        assert pm.incr("settings:n") == 1 and pm.load("settings:n") == 1
        assert pm.incr("settings:n") == 2 and pm.load("settings:n") == 2
        assert "near_hits" not in pm.stats()["database"]


def test_near_behind_the_fallback(private_redis_url: str, tmp_path: Any) -> None:
    from kvstore.stores.fallback import FallbackStore

    config = _config(private_redis_url, tmp_path, fallback="database", near={"ttl": "10s"})
    with PersistenceManager.from_config(config) as pm:
        cache = pm.stores["cache"]
        assert isinstance(cache, FallbackStore) and isinstance(cache.primary, NearStore)
        assert cache.primary.wait_tracking(10)
        assert cache.primary.near_stats() == {"near_hits": 0, "near_misses": 0}
        pm.save("q:a", "x")
        time.sleep(0.05)
        assert pm.load("q:a") == "x" and pm.load("q:a") == "x"
        assert pm.stats()["cache"]["near_hits"] == 1  # redis.near covers every key


def test_the_async_manager_shares_the_copies(private_redis_url: str, tmp_path: Any) -> None:
    from kvstore.aio import AsyncPersistenceManager
    from kvstore.stores.near.aio import AsyncNearStore

    async def main() -> None:
        async with AsyncPersistenceManager.from_config(_config(private_redis_url,
                                                               tmp_path)) as pm:
            cache = pm.stores["cache"]
            assert type(cache) is AsyncNearStore and cache.sync.wait_tracking(10)
            await pm.save("settings:a", [1, 2])
            await asyncio.sleep(0.05)
            for _ in range(3):
                assert await pm.load("settings:a") == [1, 2]
            assert (await pm.stats())["cache"]["near_hits"] == 2
            await pm.save("settings:a", [3])
            assert await pm.load("settings:a") == [3]
            async with pm.transaction() as tx:
                tx.save("settings:a", [4])
            assert await pm.load("settings:a") == [4]
            await pm.clear("settings:")
            assert await pm.load("settings:a") is None

    asyncio.run(main())
