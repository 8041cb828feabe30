"""Django's BaseCacheTests against kvstore.contrib.django.KVStoreCache.

Copied by .ci/peer-suites into the tests/cache folder of Django's own source distribution and
run by its runtests.py: the test bodies are Django's. One class per store: SQLite (always),
Redis and PostgreSQL (when KVSTORE_TEST_REDIS_URL / KVSTORE_TEST_POSTGRES_DSN are set).

Each store runs the suite twice: through the synchronous methods, and through the async ones
(``AsyncDrivenCache``: every call the tests make goes to its ``a``-method, awaited on one event
loop running in a thread, as under an ASGI server). Django's own ``tests_async.py`` only tests
its dummy backend, so this is how its test bodies reach a real backend's async API.
"""

import asyncio
import os
import tempfile
import threading
import uuid

from asgiref.sync import SyncToAsync, async_to_sync

from django.test import TestCase, override_settings

from .tests import BaseCacheTests, caches_setting_for_tests

from kvstore.contrib.django import KVStoreCache

BACKEND = "kvstore.contrib.django.KVStoreCache"
ASYNC_BACKEND = "cache.tests_kvstore.AsyncDrivenCache"
# An empty variable means unset, as in tests/conftest.py.
REDIS_URL = os.environ.get("KVSTORE_TEST_REDIS_URL", "").strip() or None
POSTGRES_DSN = os.environ.get("KVSTORE_TEST_POSTGRES_DSN", "").strip() or None
_LOOP = asyncio.new_event_loop()
threading.Thread(target=_LOOP.run_forever, daemon=True, name="asgi-loop").start()


class AsyncDrivenCache(KVStoreCache):
    """KVStoreCache whose synchronous calls each run its async twin on the event loop."""


def _through_async(name):
    def call(self, *args, **kwargs):
        # async_to_sync onto the one running loop (asgiref's own hook for "the server's loop"),
        # so thread-sensitive sync_to_async work comes back to this thread, as under ASGI.
        SyncToAsync.threadlocal.main_event_loop = _LOOP
        SyncToAsync.threadlocal.main_event_loop_pid = os.getpid()
        return async_to_sync(getattr(self, "a" + name))(*args, **kwargs)
    call.__name__ = name
    return call


for _name in ("add", "get", "set", "touch", "delete", "get_many", "set_many", "delete_many",
              "has_key", "incr", "decr", "clear", "get_or_set", "incr_version", "decr_version"):
    setattr(AsyncDrivenCache, _name, _through_async(_name))


@override_settings(CACHES=caches_setting_for_tests(
    BACKEND=BACKEND, LOCATION=f"sqlite://{tempfile.mkdtemp()}/django-cache.db"))
class KVStoreSQLiteCacheTests(BaseCacheTests, TestCase):
    pass


@override_settings(CACHES=caches_setting_for_tests(
    BACKEND=ASYNC_BACKEND, LOCATION=f"sqlite://{tempfile.mkdtemp()}/django-cache.db"))
class KVStoreSQLiteAsyncCacheTests(BaseCacheTests, TestCase):
    pass


if REDIS_URL:
    @override_settings(CACHES=caches_setting_for_tests(
        BACKEND=BACKEND, LOCATION=f"{REDIS_URL}?key_prefix=kvdjango:{uuid.uuid4().hex[:8]}:"))
    class KVStoreRedisCacheTests(BaseCacheTests, TestCase):
        pass

    @override_settings(CACHES=caches_setting_for_tests(
        BACKEND=ASYNC_BACKEND,
        LOCATION=f"{REDIS_URL}?key_prefix=kvdjango-async:{uuid.uuid4().hex[:8]}:"))
    class KVStoreRedisAsyncCacheTests(BaseCacheTests, TestCase):
        pass


if POSTGRES_DSN:
    class _DropTable:
        @classmethod
        def tearDownClass(cls):
            from django.core.cache import caches

            caches["default"].store.drop_table()  # and its _log / _meta siblings
            super().tearDownClass()

    @override_settings(CACHES=caches_setting_for_tests(
        BACKEND=BACKEND, LOCATION=f"{POSTGRES_DSN}?table=kvdjango_{os.getpid()}"))
    class KVStorePostgresCacheTests(_DropTable, BaseCacheTests, TestCase):
        pass

    @override_settings(CACHES=caches_setting_for_tests(
        BACKEND=ASYNC_BACKEND, LOCATION=f"{POSTGRES_DSN}?table=kvdjango_async_{os.getpid()}"))
    class KVStorePostgresAsyncCacheTests(_DropTable, BaseCacheTests, TestCase):
        pass


if REDIS_URL:
    @override_settings(CACHES={"default": {
        "BACKEND": BACKEND, "LOCATION": f"{REDIS_URL}?key_prefix=kvdjango-loops:"}})
    class KVStoreAsyncLoopTests(TestCase):
        """An async client belongs to one event loop: each asyncio.run gets its own, closed
        when that loop shuts down (no connection is left open per run)."""

        def test_each_loop_closes_its_connections(self):
            import redis
            from django.core.cache import cache

            server = redis.Redis.from_url(REDIS_URL)

            async def use(i):
                await cache.aset("k", i)
                self.assertEqual(await cache.aget("k"), i)
                self.assertEqual(await cache.aincr("k"), i + 1)

            asyncio.run(use(0))
            before = len(server.client_list())
            for i in range(1, 21):
                asyncio.run(use(i))
                self.assertEqual(len(cache._astores), 0)
            self.assertLessEqual(len(server.client_list()), before)
            self.assertEqual(cache.get("k"), 21)
            cache.clear()
