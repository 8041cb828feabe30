"""Django's BaseCacheTests against kvstore.contrib.django.KVStoreCache.

Copied by .ci/peer-suites into the tests/cache folder of Django's own source distribution and
run by its runtests.py: the test bodies are Django's. One class per store: SQLite (always),
Redis and PostgreSQL (when KVSTORE_TEST_REDIS_URL / KVSTORE_TEST_POSTGRES_DSN are set).
"""

import os
import tempfile
import uuid

from django.test import TestCase, override_settings

from .tests import BaseCacheTests, caches_setting_for_tests

BACKEND = "kvstore.contrib.django.KVStoreCache"
REDIS_URL = os.environ.get("KVSTORE_TEST_REDIS_URL")
POSTGRES_DSN = os.environ.get("KVSTORE_TEST_POSTGRES_DSN")


@override_settings(CACHES=caches_setting_for_tests(
    BACKEND=BACKEND, LOCATION=f"sqlite://{tempfile.mkdtemp()}/django-cache.db"))
class KVStoreSQLiteCacheTests(BaseCacheTests, TestCase):
    pass


if REDIS_URL:
    @override_settings(CACHES=caches_setting_for_tests(
        BACKEND=BACKEND, LOCATION=f"{REDIS_URL}?key_prefix=kvdjango:{uuid.uuid4().hex[:8]}:"))
    class KVStoreRedisCacheTests(BaseCacheTests, TestCase):
        pass


if POSTGRES_DSN:
    @override_settings(CACHES=caches_setting_for_tests(
        BACKEND=BACKEND, LOCATION=f"{POSTGRES_DSN}?table=kvdjango_{os.getpid()}"))
    class KVStorePostgresCacheTests(BaseCacheTests, TestCase):
        @classmethod
        def tearDownClass(cls):
            from django.core.cache import caches

            caches["default"].store.drop_table()  # and its _log / _meta siblings
            super().tearDownClass()
