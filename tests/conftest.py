"""Fixtures shared by the test suite: one factory per store kind, and the server settings.

Server-backed stores follow one rule: without ``KVSTORE_TEST_REDIS_URL`` the Redis store runs on
fakeredis; with it, the tests talk to that server and fail (never skip) when it is unreachable.
PostgreSQL runs only with ``KVSTORE_TEST_POSTGRES_DSN`` and is skipped, with that reason,
otherwise.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

# The shipped suite's asserts report their values like the tests' own (before its first import).
pytest.register_assert_rewrite("kvstore.testing")

from kvstore.testing import FakeClock  # noqa: E402



def server_setting(variable: str) -> str | None:
    """A ``KVSTORE_TEST_*`` server variable; empty or blank means unset (as with ``VAR= pytest``)."""
    value = os.environ.get(variable, "").strip()
    return value or None


REDIS_URL = server_setting("KVSTORE_TEST_REDIS_URL")
POSTGRES_DSN = server_setting("KVSTORE_TEST_POSTGRES_DSN")
HAVE_REDIS_SERVER = shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


@dataclass
class StoreCase:
    """How to build one kind of store, and how to make time pass for it."""

    kind: str
    build: Callable[..., Any]
    advance: Callable[[float], None]
    durable: bool
    #: False for a MemoryStore without serializer: it keeps any object, so nothing is unencodable.
    serializes: bool = True
    #: How another process opens the same store (see :func:`open_spec`); None: per process.
    spec: dict[str, Any] | None = None
    opened: list[Any] = field(default_factory=list)

    def make(self, **kwargs: Any) -> Any:
        store = self.build(**kwargs)
        self.opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self.opened:
            try:
                store.close()
            except Exception:
                pass


def _memory_case(tmp_path: Path, serializer: str | None) -> StoreCase:
    from kvstore import MemoryStore

    clock = FakeClock()
    return StoreCase(
        kind="memory" if serializer is None else f"memory-{serializer}",
        build=lambda **kw: MemoryStore(serializer=serializer, clock=clock, **kw),
        advance=clock.advance, durable=False, serializes=serializer is not None)


def _sqlite_case(tmp_path: Path, serializer: str) -> StoreCase:
    from kvstore import SQLiteStore

    clock = FakeClock(time.time())
    path = tmp_path / "store.db"
    return StoreCase(
        kind=f"sqlite-{serializer}",
        build=lambda **kw: SQLiteStore(path=path, serializer=serializer, clock=clock, **kw),
        advance=clock.advance, durable=True,
        spec={"kind": "sqlite", "path": str(path), "serializer": serializer})


def _file_case(tmp_path: Path, fmt: str) -> StoreCase:
    from kvstore import FileStore

    clock = FakeClock(time.time())
    base = tmp_path / "files"
    return StoreCase(
        kind=f"file-{fmt}",
        build=lambda **kw: FileStore(base_path=base, format=fmt, clock=clock, **kw),
        advance=clock.advance, durable=True,
        spec={"kind": "file", "base_path": str(base), "format": fmt})


_FAKE_SERVER: Any = None


def _redis_build(url: str | None, prefix: str, cluster: bool = False) -> Callable[..., Any]:
    """A factory of RedisStores on ``url``, or on one shared fakeredis server when url is None
    (shared like a real server: tests keep apart by their unique key prefixes)."""
    from kvstore import RedisStore

    global _FAKE_SERVER
    fake_server = None
    if url is None:
        import fakeredis

        if _FAKE_SERVER is None:
            _FAKE_SERVER = fakeredis.FakeServer()
        fake_server = _FAKE_SERVER

    def build(**kw: Any) -> Any:
        kw.setdefault("ttl_default", None)
        if fake_server is not None:
            import fakeredis

            return RedisStore(client=fakeredis.FakeRedis(server=fake_server), key_prefix=prefix, **kw)
        return RedisStore(url=url, key_prefix=prefix, cluster=cluster or None, **kw)

    return build


def _redis_case(tmp_path: Path) -> StoreCase:
    prefix = f"kvtest:{uuid.uuid4().hex[:8]}:"
    return StoreCase(kind="redis", build=_redis_build(REDIS_URL, prefix),
                     advance=time.sleep, durable=True,
                     spec=None if REDIS_URL is None else  # fakeredis lives in this process
                     {"kind": "redis", "url": REDIS_URL, "key_prefix": prefix})


def _redis_fallback_case(tmp_path: Path) -> StoreCase:
    """Redis behind ``redis.fallback`` (a FallbackStore over SQLite), Redis up: it must behave
    exactly as Redis does, outage records checked on every write."""
    from kvstore import SQLiteStore
    from kvstore.stores.fallback import FallbackStore

    c = _redis_case(tmp_path)
    redis_build = c.build

    def build(**kw: Any) -> Any:
        return FallbackStore(redis_build(**kw), SQLiteStore(path=tmp_path / "fallback.db"))

    c.kind, c.build, c.spec = "redis-fallback", build, None
    return c


def _postgres_case(tmp_path: Path) -> StoreCase:
    from kvstore import PostgresStore

    clock = FakeClock(time.time())
    table = f"kvtest_{uuid.uuid4().hex[:8]}"

    def build(**kw: Any) -> Any:
        return PostgresStore(dsn=POSTGRES_DSN, table=table, clock=clock, **kw)

    return StoreCase(kind="postgres", build=build, advance=clock.advance, durable=True,
                     spec={"kind": "postgres", "dsn": POSTGRES_DSN, "table": table})


SYNC_KINDS = ["memory", "memory-msgpack", "sqlite-json", "sqlite-msgpack", "file-json",
              "file-msgpack", "redis", "redis-cluster", "postgres", "redis-fallback",
              "redis-near", "redis-cluster-near"]
#: The async stores (kvstore.aio) run the same test bodies through kvstore.testing.facade.
AIO_KINDS = ["aio-memory", "aio-sqlite-json", "aio-file-msgpack", "aio-redis", "aio-redis-cluster",
             "aio-postgres", "aio-redis-near", "aio-redis-cluster-near"]
STORE_KINDS = SYNC_KINDS + AIO_KINDS


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not HAVE_REDIS_SERVER:
        pytest.skip("redis-server / redis-cli not on PATH: the Redis Cluster tests need them")
    from redis_servers import start_cluster

    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield cluster.url
    cluster.stop()


@pytest.fixture(scope="session")
def private_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A private redis-server for the near cache (its channel runs CLIENT TRACKING; its tests
    CLIENT KILL it): never the shared server."""
    if not HAVE_REDIS_SERVER:
        pytest.skip("redis-server / redis-cli not on PATH: the near cache tests need them")
    from redis_servers import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("near-redis")).start()
    yield server.url
    server.stop()


def _near_case(request: pytest.FixtureRequest, cluster: bool) -> StoreCase:
    """NearStore (kvstore.stores.near) over Redis or a Redis Cluster, both private servers."""
    url = request.getfixturevalue("redis_cluster_url" if cluster else "private_redis_url")
    spec = {"kind": "redis", "url": url, "key_prefix": f"kvtest:{uuid.uuid4().hex[:8]}:",
            "near": True, **({"cluster": True} if cluster else {})}
    return StoreCase(kind="redis-cluster-near" if cluster else "redis-near",
                     build=lambda **kw: open_spec(dict(spec, **kw)), advance=time.sleep,
                     durable=True, spec=spec)


def _make_case(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> StoreCase:
    if kind.startswith("aio-"):
        return _aio_case(_make_case(kind[4:], request, tmp_path))
    if kind.endswith("-near"):
        return _near_case(request, kind == "redis-cluster-near")
    if kind == "memory":
        return _memory_case(tmp_path, None)
    if kind == "memory-msgpack":
        return _memory_case(tmp_path, "msgpack")
    if kind.startswith("sqlite-"):
        return _sqlite_case(tmp_path, kind.split("-", 1)[1])
    if kind.startswith("file-"):
        return _file_case(tmp_path, kind.split("-", 1)[1])
    if kind == "redis":
        return _redis_case(tmp_path)
    if kind == "redis-fallback":
        return _redis_fallback_case(tmp_path)
    if kind == "redis-cluster":
        url = request.getfixturevalue("redis_cluster_url")
        prefix = f"kvtest:{uuid.uuid4().hex[:8]}:"
        return StoreCase(kind=kind, build=_redis_build(url, prefix, cluster=True),
                         advance=time.sleep, durable=True,
                         spec={"kind": "redis", "url": url, "key_prefix": prefix, "cluster": True})
    if kind == "postgres":
        if not POSTGRES_DSN:
            pytest.skip("KVSTORE_TEST_POSTGRES_DSN is not set: no PostgreSQL to test against")
        return _postgres_case(tmp_path)
    raise AssertionError(kind)  # pragma: no cover


def _aio_case(c: StoreCase) -> StoreCase:
    """The same store behind its async face (kvstore.aio), driven through the facade."""
    from kvstore.testing.facade import Blocking

    from kvstore.aio import async_store
    from kvstore.stores.redis.aio import AsyncRedisStore

    sync_build, fake = c.build, c.kind == "redis" and REDIS_URL is None

    def build(**kw: Any) -> Any:
        store = sync_build(**kw)
        if fake:
            import fakeredis

            return Blocking(AsyncRedisStore(store, client=fakeredis.FakeAsyncRedis(
                server=_FAKE_SERVER)))
        return Blocking(async_store(store))

    c.kind, c.build = "aio-" + c.kind, build
    if c.spec is not None:
        c.spec = dict(c.spec, aio=True)
    return c


@pytest.fixture(params=STORE_KINDS)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    kind = request.param
    c = _make_case(kind, request, tmp_path)
    yield c
    if "redis" in kind or "postgres" in kind:
        try:
            c.make().clear()
        except Exception:
            pass
        if "postgres" in kind:
            _drop_table(c)
    c.close_all()


def open_spec(spec: dict[str, Any]) -> Any:
    """Open, in another process, the store a :class:`StoreCase` describes by its ``spec``."""
    import kvstore

    options = {k: v for k, v in spec.items() if k not in ("kind", "aio", "near")}
    if spec["kind"] == "redis":
        options.setdefault("ttl_default", None)
    cls = {"sqlite": "SQLiteStore", "file": "FileStore", "redis": "RedisStore",
           "postgres": "PostgresStore"}[spec["kind"]]
    store = getattr(kvstore, cls)(**options)
    if spec.get("near"):
        from kvstore.stores.near import NearSettings, NearStore

        store = NearStore(store, NearSettings(), wait=10)
        assert store.tracking, "the near cache's invalidation channel did not come up"
    if spec.get("aio"):
        from kvstore.testing.facade import Blocking

        from kvstore.aio import async_store

        return Blocking(async_store(store))
    return store


def _drop_table(c: StoreCase) -> None:
    try:
        store = c.opened[0]
        store.drop_table()
    except Exception:
        pass


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder for the embedded default's files (``KVSTORE_DATA_DIR``)."""
    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"
