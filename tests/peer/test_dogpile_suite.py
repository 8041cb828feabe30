"""dogpile.cache's own generic backend and mutex test suites, run against kvstore's backend on
SQLite, files, Redis and PostgreSQL (the test bodies are dogpile's: dogpile.testing.fixtures)."""

from __future__ import annotations

import os
import tempfile
import uuid

import pytest

pytest.importorskip("dogpile.cache")

from dogpile.cache import register_backend  # noqa: E402
from dogpile.testing.fixtures import (  # noqa: E402
    _GenericBackendTestSuite, _GenericMutexTestSuite)

from conftest import POSTGRES_DSN, REDIS_URL  # noqa: E402

from kvstore.contrib.dogpile import KVStoreBackend  # noqa: E402

_TMP = tempfile.mkdtemp(prefix="kvstore-dogpile-")
_OPENED: list[KVStoreBackend] = []


class _Tracked(KVStoreBackend):
    """dogpile's fixtures open a backend per test and never close it: each would keep its
    store's connections (PostgreSQL: a pool per store) until the process ends."""

    def __init__(self, arguments: dict) -> None:
        super().__init__(arguments)
        _OPENED.append(self)


def _close_opened(self: object, method: object) -> None:
    super(type(self), self).teardown_method(method)  # type: ignore[misc]  # dogpile's first
    while _OPENED:
        _OPENED.pop().store.close()


def _suite(name: str, url: str, options: dict | None = None) -> None:
    args = {"url": url, "store_options": options or {}}
    for base, label in ((_GenericBackendTestSuite, "Backend"), (_GenericMutexTestSuite, "Mutex")):
        cls = type(f"Test{name}{label}", (base,), {
            "backend": "kvstore_tracked", "config_args": {"arguments": args},
            "teardown_method": _close_opened})
        globals()[cls.__name__] = cls


register_backend("kvstore_tracked", __name__, "_Tracked")
_suite("SQLite", f"sqlite://{_TMP}/dogpile.db")
_suite("File", f"file://{_TMP}/files", {"format": "msgpack"})
if REDIS_URL:
    _suite("Redis", REDIS_URL, {"key_prefix": f"kvtest:{uuid.uuid4().hex[:8]}:", "ttl_default": None})
if POSTGRES_DSN:
    _suite("Postgres", f"{POSTGRES_DSN}?table=kvtest_dogpile_{os.getpid()}")


def teardown_module() -> None:
    if POSTGRES_DSN:
        from kvstore import PostgresStore

        store = PostgresStore(dsn=POSTGRES_DSN, table=f"kvtest_dogpile_{os.getpid()}")
        store.drop_table()
        store.close()
