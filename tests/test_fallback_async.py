"""The conformance suite on the async face of ``redis.fallback`` (Redis up): an
:class:`~kvstore.stores.fallback.aio.AsyncFallbackStore` over the native asyncio Redis driver must
behave exactly as Redis does. (The ``case`` here adds the kind ``aio-redis-fallback`` to the
suite's kinds without changing conftest; see test_fallback.py for outages.)"""

from __future__ import annotations

import pytest

from conftest import REDIS_URL, _make_case
from test_conformance import *  # noqa: F401,F403 (the suite's tests, collected here too)


@pytest.fixture(params=["aio-redis-fallback"])
def case(request, tmp_path):
    if REDIS_URL is None:  # fakeredis: the async driver would open its own (real) connection
        pytest.skip("KVSTORE_TEST_REDIS_URL is not set: the async fallback needs a Redis server")
    c = _make_case(request.param, request, tmp_path)
    yield c
    try:
        c.make().clear()
    except Exception:
        pass
    c.close_all()


def test_the_async_face_keeps_the_native_redis_driver(case):
    from kvstore.stores.fallback.aio import AsyncFallbackStore
    from kvstore.stores.redis.aio import AsyncRedisStore

    astore = case.make().astore
    assert type(astore) is AsyncFallbackStore
    assert type(astore.primary) is AsyncRedisStore
    assert type(astore.meta) is AsyncFallbackStore and type(astore.meta.primary) is AsyncRedisStore


def test_the_async_manager_keeps_redis_native_behind_its_fallback(tmp_path, data_dir):
    import asyncio

    from kvstore.aio import AsyncPersistenceManager, ThreadStore
    from kvstore.stores.fallback.aio import AsyncFallbackStore
    from kvstore.stores.redis.aio import AsyncRedisStore

    if REDIS_URL is None:
        pytest.skip("KVSTORE_TEST_REDIS_URL is not set")
    config = {"redis": {"url": REDIS_URL, "fallback": "database", "key_prefix": "kvtest:fb:"},
              "sqlite": {"path": str(tmp_path / "app.db")},
              "categories": {"q": {"store": "cache"}}}

    async def main() -> None:
        async with AsyncPersistenceManager.from_config(config) as pm:
            cache = pm.stores["cache"]
            assert type(cache) is AsyncFallbackStore and type(cache.primary) is AsyncRedisStore
            assert isinstance(cache.fallback, ThreadStore)  # SQLite, as its own face runs
            await pm.save("q:a", {"n": 1}, ttl=60)
            assert await pm.load("q:a") == {"n": 1} and 0 < await pm.ttl("q:a") <= 60
            assert cache.sync.primary.load("q:a") == {"n": 1}  # written to Redis itself
            assert await pm.incr("q:n") == 1
            await pm.clear("q:")

    asyncio.run(main())
