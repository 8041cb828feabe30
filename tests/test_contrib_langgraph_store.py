"""kvstore.contrib.langgraph.KVStoreMemoryStore against LangGraph's own reference store.

The same operations run on ``InMemoryStore`` and on ``KVStoreMemoryStore`` side by side and must
give the same results, on memory, SQLite, files, Redis (fakeredis without
``KVSTORE_TEST_REDIS_URL``) and PostgreSQL (with ``KVSTORE_TEST_POSTGRES_DSN``), through
``batch`` on a synchronous store, ``abatch`` on a synchronous store (a worker thread) and
``abatch`` on an async store (``kvstore.aio``). TTLs (which InMemoryStore does not have) are
checked against kvstore's fake clocks (Redis: short real TTLs).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, TypedDict

import pytest

pytest.importorskip("langgraph.store.base")

from langgraph.store.base import (GetOp, InvalidNamespaceError, Item, ListNamespacesOp,  # noqa: E402
                                  PutOp, SearchItem, SearchOp)
from langgraph.store.memory import InMemoryStore  # noqa: E402

import conftest  # noqa: E402
from conftest import POSTGRES_DSN, REDIS_URL  # noqa: E402

from kvstore import ConfigError, PersistenceManager, SQLiteStore  # noqa: E402
from kvstore.aio import AsyncPersistenceManager, async_store  # noqa: E402
from kvstore.contrib.langgraph import KVStoreMemoryStore  # noqa: E402
from kvstore.testing import FakeClock  # noqa: E402

README = Path(__file__).resolve().parent.parent / "README.md"

SYNC_KINDS = ["memory", "memory-msgpack", "sqlite-json", "sqlite-msgpack", "file-json",
              "file-msgpack", "redis", "postgres"]
#: How a test drives the store: batch() on a sync store, abatch() on a sync store (in a worker
#: thread), abatch() on the store's async face (kvstore.aio).
MODES = ([(kind, "sync") for kind in SYNC_KINDS] + [(kind, "thread") for kind in SYNC_KINDS]
         + [(kind, "async") for kind in ("memory", "sqlite-json", "file-json", "redis",
                                          "postgres")])


@dataclass
class Backend:
    kind: str
    mode: str
    store: Any  # the synchronous kvstore store
    target: Any  # what KVStoreMemoryStore is built on: the store or its async face
    advance: Callable[[float], None]
    real_time: bool

    def memory(self, **kwargs: Any) -> KVStoreMemoryStore:
        return KVStoreMemoryStore(self.target, **kwargs)

    def run(self, body: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run ``body(do, *args)`` in one event loop; ``do(store, "put", ...)`` calls ``put``
        (sync mode) or awaits ``aput`` (the other modes) on either store."""
        async def do(store: Any, name: str, *a: Any, **kw: Any) -> Any:
            if self.mode == "sync":
                return getattr(store, name)(*a, **kw)
            return await getattr(store, "a" + name)(*a, **kw)

        async def main() -> Any:
            try:
                return await body(do, *args)
            finally:
                if self.target is not self.store:
                    await self.target.close()

        return asyncio.run(main())


def _build(kind: str, tmp_path: Path) -> tuple[Any, Callable[[float], None], bool]:
    if kind == "redis":
        store = conftest._redis_build(REDIS_URL, f"lgstore:{uuid.uuid4().hex[:8]}:")(
            ttl_default=3600)  # the RedisStore default: memories must not get it
        return store, time.sleep, True
    if kind == "postgres":
        if not POSTGRES_DSN:
            pytest.skip("KVSTORE_TEST_POSTGRES_DSN is not set: no PostgreSQL to test against")
        from kvstore import PostgresStore

        clock = FakeClock(time.time())
        store = PostgresStore(dsn=POSTGRES_DSN, table=f"lgstore_{uuid.uuid4().hex[:8]}",
                              clock=clock)
        return store, clock.advance, False
    factory = {"memory": lambda: conftest._memory_case(tmp_path, None),
               "memory-msgpack": lambda: conftest._memory_case(tmp_path, "msgpack")}.get(kind)
    if factory is None:
        family, fmt = kind.split("-", 1)
        factory = {"sqlite": conftest._sqlite_case, "file": conftest._file_case}[family]
        case = factory(tmp_path, fmt)
    else:
        case = factory()
    return case.make(), case.advance, False


def _async_face(store: Any, kind: str) -> Any:
    if kind == "redis" and REDIS_URL is None:
        import fakeredis

        from kvstore.stores.redis.aio import AsyncRedisStore

        return AsyncRedisStore(store, client=fakeredis.FakeAsyncRedis(server=conftest._FAKE_SERVER))
    return async_store(store)


@pytest.fixture(params=MODES, ids=[f"{mode}-{kind}" for kind, mode in MODES])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    kind, mode = request.param
    store, advance, real_time = _build(kind, tmp_path)
    target = _async_face(store, kind) if mode == "async" else store
    yield Backend(kind, mode, store, target, advance, real_time)
    try:
        store.clear()
        if kind == "postgres":
            store.drop_table()
    finally:
        store.close()


def _values(i: int) -> dict[str, Any]:
    return {"n": i, "kind": "odd" if i % 2 else "even", "meta": {"lang": ("en", "fr", "de")[i % 3]},
            "tags": ["x", "y"] if i % 2 else ["x"]}


#: Inserted in (namespace, key) order, so InMemoryStore's insertion order is the sorted order
#: KVStoreMemoryStore lists in. Labels and keys a naive encoding would confuse: "/", "%", an
#: empty key, "-" (sorts before "/"), spaces, non-ASCII.
ITEMS = sorted([
    (("docs",), "intro"), (("docs", "a"), "k1"), (("docs", "a"), "k/2"), (("docs", "a"), ""),
    (("docs", "a", "deep"), "d"), (("docs", "a/b"), "%2F"), (("docs", "b"), "k1"),
    (("users", "ann"), "prefs"), (("users", "ann"), "k-"), (("users", "ann"), "k/"), (("users", "bob-1"), "prefs"), (("users", "bob"), "prefs"),
    (("users", "bob", "x"), "ümlaut key"), (("sp ace", "%"), "k"),
])
PUTS = [PutOp(ns, key, _values(i)) for i, (ns, key) in enumerate(ITEMS, 1)]

FILTERS = [{"kind": "odd"}, {"n": {"$gt": 3}}, {"n": {"$gte": 2, "$lt": 6}}, {"n": {"$ne": 4}},
           {"kind": {"$eq": "even"}}, {"meta": {"lang": "fr"}}, {"tags": ["x", "y"]},
           {"n": {"$lte": 5}, "kind": "odd"}, {"meta": {"lang": {"$ne": "en"}}}, {"missing": 1}]
READS = [
    GetOp(("docs", "a"), "k1"), GetOp(("docs", "a"), ""), GetOp(("docs", "a"), "nope"),
    GetOp(("nope",), "k1"), GetOp(("docs", "a/b"), "%2F"), GetOp(("docs",), "a"),
    SearchOp(()), SearchOp((), limit=100), SearchOp(("docs",), limit=100), SearchOp(("docs", "a")),
    SearchOp(("docs", "a"), limit=2, offset=1), SearchOp(("users",), offset=10), SearchOp(("users", "ann")),
    SearchOp(("docs",), limit=0), SearchOp(("nope",)), SearchOp(("doc",)),
    SearchOp((), offset=-3, limit=20), SearchOp(("docs",), query="python", limit=3),
    *[SearchOp((), filter=f, limit=100) for f in FILTERS],
    SearchOp((), filter={"kind": "even"}, limit=2, offset=1),
    SearchOp(("users",), filter={"n": {"$gt": 0}}, limit=1, offset=2),
]
#: Before READS: InMemoryStore lists a namespace once anything asked for it, even a GetOp that
#: found nothing (KVStoreMemoryStore lists only namespaces that hold items).
LISTS = [
    ListNamespacesOp(), ListNamespacesOp(limit=3, offset=2),
    *[ListNamespacesOp(match_conditions=tuple(c), max_depth=d) for c, d in [
        ([("prefix", ("docs",))], None), ([("prefix", ("*", "a"))], None),
        ([("prefix", ("users", "*"))], None), ([("suffix", ("x",))], None),
        ([("suffix", ("*",))], None), ([("prefix", ("docs",)), ("suffix", ("deep",))], None),
        ([], 1), ([("prefix", ("docs",))], 2), ([("prefix", ("docs", "a"))], None),
        ([("prefix", ("nope",))], None), ([("prefix", ("*", "*", "*"))], None),
        ([("suffix", ("a", "*"))], 2)]],
]
#: Reads see the batch's data as it was before it; the last put of a key wins.
MIXED = [PutOp(("docs", "a"), "k1", {"n": 100}), GetOp(("docs", "a"), "k1"),
         PutOp(("docs", "b"), "k1", None), SearchOp(("docs", "b")),
         PutOp(("new",), "x", {"n": 1}), PutOp(("new",), "x", {"n": 2}),
         GetOp(("new",), "x")]
AFTER = [GetOp(("docs", "a"), "k1"), SearchOp(("docs", "b")), GetOp(("new",), "x"),
         SearchOp(("docs", "a"), filter={"n": 100}), SearchOp(("new",))]


def _norm(result: Any) -> Any:
    """A result without its timestamps (InMemoryStore resets created_at on every put)."""
    if isinstance(result, SearchItem):
        return ("search", result.namespace, result.key, result.value, result.score)
    if isinstance(result, Item):
        return ("item", result.namespace, result.key, result.value)
    if isinstance(result, list):
        return [_norm(r) for r in result]
    return result


def _conditions(op: Any) -> Any:
    from langgraph.store.base import MatchCondition

    if isinstance(op, ListNamespacesOp) and op.match_conditions:
        return op._replace(match_conditions=tuple(MatchCondition(t, p)
                                                  for t, p in op.match_conditions))
    return op


def test_batches_give_what_inmemorystore_gives(backend: Backend) -> None:
    async def body(do: Any) -> None:
        ours, ref = backend.memory(), InMemoryStore()
        for step in (PUTS, LISTS, READS, MIXED, AFTER):
            ops = [_conditions(op) for op in step]
            mine, theirs = await do(ours, "batch", ops), await do(ref, "batch", ops)
            assert len(mine) == len(ops)
            for op, a, b in zip(ops, mine, theirs):
                assert _norm(a) == _norm(b), op

    backend.run(body)


def test_the_store_methods_give_what_inmemorystore_gives(backend: Backend) -> None:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("put", (("users", "ann"), "notes"), {"value": {"text": "likes tea"}, "index": False}),
        ("put", (("users", "ann"), "prefs"), {"value": {"theme": "dark", "size": 3}}),
        ("put", (("users", "bob"), "prefs"), {"value": {"theme": "light"}, "index": ["theme"]}),
        ("get", (("users", "ann"), "prefs"), {}),
        ("get", (("users", "ann"), "missing"), {}),
        ("search", (("users",),), {}),
        ("search", (("users",),), {"filter": {"theme": "dark"}}),
        ("search", (("users",),), {"query": "what does ann like", "limit": 1}),
        ("search", (("users",),), {"limit": 1, "offset": 1}),
        ("list_namespaces", (), {}),
        ("list_namespaces", (), {"prefix": ("users",), "max_depth": 1}),
        ("list_namespaces", (), {"suffix": ("bob",)}),
        ("put", (("users", "ann"), "prefs"), {"value": {"theme": "blue"}}),
        ("get", (("users", "ann"), "prefs"), {}),
        ("delete", (("users", "ann"), "notes"), {}),
        ("get", (("users", "ann"), "notes"), {}),
        ("search", (("users", "ann"),), {}),
    ]

    async def body(do: Any) -> None:
        ours, ref = backend.memory(), InMemoryStore()
        for name, args, kwargs in calls:
            assert _norm(await do(ours, name, *args, **kwargs)) == \
                _norm(await do(ref, name, *args, **kwargs)), (name, args, kwargs)
        for store in (ours, ref):  # refused alike, before anything is written
            with pytest.raises(InvalidNamespaceError):
                await do(store, "put", ("a.b",), "k", {"v": 1})
            with pytest.raises(InvalidNamespaceError):
                await do(store, "put", ("langgraph", "x"), "k", {"v": 1})
            with pytest.raises(ValueError):
                await do(store, "search", ("users",), filter={"size": {"$near": 3}})
            assert await do(store, "list_namespaces", prefix=("a",)) == []

    backend.run(body)


def test_items_keep_created_at_and_readable_keys(backend: Backend) -> None:
    async def body(do: Any) -> None:
        ours = backend.memory()
        await do(ours, "put", ("users", "ann"), "prefs", {"theme": "dark"})
        first = await do(ours, "get", ("users", "ann"), "prefs")
        assert first.created_at == first.updated_at and first.created_at.tzinfo is not None
        await do(ours, "put", ("users", "ann"), "prefs", {"theme": "light"})
        second = await do(ours, "get", ("users", "ann"), "prefs")
        assert second.value == {"theme": "light"}
        assert second.created_at == first.created_at and second.updated_at > first.updated_at
        [found] = await do(ours, "search", ("users",))
        assert (found.created_at, found.updated_at) == (second.created_at, second.updated_at)
        # one kvstore key per item, named after its namespace; no expiry (not ttl_default's)
        await do(ours, "put", ("a/b", "%"), "", {"v": 1})
        assert sorted(backend.store.keys()) == ["memory:a%2Fb/%25/%", "memory:users/ann/prefs"]
        assert backend.store.ttl("memory:users/ann/prefs") is None
        # a namespace whose last item is deleted is no longer listed (InMemoryStore keeps it)
        await do(ours, "delete", ("a/b", "%"), "")
        assert await do(ours, "list_namespaces") == [("users", "ann")]

    backend.run(body)


def test_ttl_expires_and_reads_refresh_it(backend: Backend) -> None:
    unit = 1.0 if backend.real_time else 60.0  # seconds of one TTL
    minutes = unit / 60

    async def body(do: Any) -> None:
        ours = backend.memory()
        assert ours.supports_ttl
        await do(ours, "put", ("t",), "read", {"v": 1}, ttl=minutes)
        await do(ours, "put", ("t",), "unread", {"v": 2}, ttl=minutes)
        await do(ours, "put", ("t",), "peeked", {"v": 3}, ttl=minutes)
        await do(ours, "put", ("t",), "forever", {"v": 4})
        await do(ours, "put", ("u",), "searched", {"v": 5}, ttl=minutes)
        backend.advance(unit * 0.6)
        assert (await do(ours, "get", ("t",), "read")).value == {"v": 1}  # refreshed
        assert (await do(ours, "get", ("t",), "peeked", refresh_ttl=False)).value == {"v": 3}
        assert [i.key for i in await do(ours, "search", ("u",))] == ["searched"]  # refreshed
        backend.advance(unit * 0.6)  # 1.2 units after the put, 0.6 after the reads
        assert await do(ours, "get", ("t",), "unread") is None
        assert await do(ours, "get", ("t",), "peeked") is None
        assert [i.key for i in await do(ours, "search", ("t",), refresh_ttl=False)] == [
            "forever", "read"]
        assert (await do(ours, "get", ("u",), "searched", refresh_ttl=False)).value == {"v": 5}
        backend.advance(unit * 0.6)
        assert [i.key for i in await do(ours, "search", ("t",))] == ["forever"]
        assert await do(ours, "list_namespaces") == [("t",)]
        # a put without a TTL makes an expiring item permanent again
        await do(ours, "put", ("t",), "again", {"v": 6}, ttl=minutes)
        await do(ours, "put", ("t",), "again", {"v": 7})
        backend.advance(unit * 1.2)
        assert (await do(ours, "get", ("t",), "again")).value == {"v": 7}

    backend.run(body)


def test_ttl_config_default_and_refresh_on_read(backend: Backend) -> None:
    unit = 1.0 if backend.real_time else 60.0
    config = {"default_ttl": unit / 60, "refresh_on_read": False}

    async def body(do: Any) -> None:
        ours = backend.memory(ttl=config)
        assert ours.ttl_config == config
        await do(ours, "put", ("c",), "default", {"v": 1})
        await do(ours, "put", ("c",), "never", {"v": 2}, ttl=None)
        await do(ours, "put", ("c",), "asked", {"v": 3})
        backend.advance(unit * 0.6)
        assert (await do(ours, "get", ("c",), "default")).value == {"v": 1}  # not refreshed
        assert (await do(ours, "get", ("c",), "asked", refresh_ttl=True)).value == {"v": 3}
        backend.advance(unit * 0.6)
        assert [i.key for i in await do(ours, "search", ("c",))] == ["asked", "never"]

    backend.run(body)


def test_bad_settings_and_ttls_are_refused(backend: Backend) -> None:
    with pytest.raises(ConfigError, match="index"):
        backend.memory(index={"dims": 3, "embed": lambda texts: [[0.0] * 3 for _ in texts]})
    with pytest.raises(ConfigError, match="sweep_interval"):
        backend.memory(ttl={"sweep_interval": 5})
    with pytest.raises(ConfigError, match="default_ttl"):
        backend.memory(ttl={"default_ttl": 0})
    with pytest.raises(ConfigError, match="category"):
        backend.memory(category="a:b")

    async def body(do: Any) -> None:
        ours = backend.memory()
        for bad in (0, -1, "5m"):
            with pytest.raises(ValueError, match="ttl"):
                await do(ours, "batch", [PutOp(("x",), "ok", {"v": 1}),
                                         PutOp(("x",), "bad", {"v": 1}, ttl=bad)])
        with pytest.raises(InvalidNamespaceError):  # batch() checks what put() would
            await do(ours, "batch", [GetOp(("a.b",), "k")])
        assert await do(ours, "search", ("x",)) == []  # nothing of a refused batch written

    backend.run(body)


def test_two_store_objects_on_one_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    with SQLiteStore(path=path) as first_store, SQLiteStore(path=path) as second_store:
        first, second = KVStoreMemoryStore(first_store), KVStoreMemoryStore(second_store)
        first.put(("users", "ann"), "prefs", {"theme": "dark"})
        got = second.get(("users", "ann"), "prefs")
        assert got.value == {"theme": "dark"}
        second.put(("users", "ann"), "prefs", {"theme": "light"})
        again = first.get(("users", "ann"), "prefs")
        assert again.value == {"theme": "light"} and again.created_at == got.created_at
        assert second.list_namespaces() == [("users", "ann")]
        first.delete(("users", "ann"), "prefs")
        assert second.search(("users",)) == []


def test_a_manager_category(data_dir: Path) -> None:
    config = {"persistence": {"categories": {"memory": {"store": "database", "ttl": "2h"},
                                             "plain": {"store": "file"}}}}
    with PersistenceManager.from_config(config) as pm:
        memory = KVStoreMemoryStore(pm, category="memory")
        assert memory.ttl_config == {"default_ttl": 120.0}  # the category's TTL, in minutes
        memory.put(("users", "ann"), "prefs", {"theme": "dark"})
        assert list(pm.keys("memory:")) == ["memory:users/ann/prefs"]
        assert pm.route("memory:users/ann/prefs").store == "database"
        assert 7100 < pm.ttl("memory:users/ann/prefs") <= 7200
        plain = KVStoreMemoryStore(pm, category="plain")
        assert plain.ttl_config is None
        plain.put(("users",), "k", {"v": 1})
        assert pm.ttl("plain:users/k") is None and list(pm.stores["file"].keys()) == [
            "plain:users/k"]

    async def main() -> None:
        async with AsyncPersistenceManager.from_config(config) as apm:
            memory = KVStoreMemoryStore(apm, category="memory")
            assert (await memory.aget(("users", "ann"), "prefs")).value == {"theme": "dark"}
            await memory.aput(("users", "bob"), "prefs", {"theme": "light"})
            assert memory.get(("users", "bob"), "prefs").value == {"theme": "light"}
            assert await memory.alist_namespaces() == [("users", "ann"), ("users", "bob")]

    asyncio.run(main())


def _readme_section() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## LangGraph long-term memory\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's block is skipped by tests/test_readme.py (it needs langgraph): it runs here,
    exactly as written."""
    monkeypatch.chdir(tmp_path)
    code = _readme_section()
    assert "KVStoreMemoryStore" in code
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md (LangGraph long-term memory)", "exec"), {"__name__": "readme"})
    shown = [line.split("# ", 1)[1].strip() for line in code.splitlines()
             if line.strip().startswith("print(")]  # each print's comment is what it prints
    assert out.getvalue().splitlines() == shown and len(shown) == 3
    with SQLiteStore(path=tmp_path / "agent.db") as db:
        assert sorted(db.keys()) == ["memory:users/ann/draft", "memory:users/ann/prefs"]
        assert 14 * 60 < db.ttl("memory:users/ann/draft") <= 15 * 60


def test_large_namespaces_page_like_inmemorystore(backend: Backend) -> None:
    """More items than one round trip loads (a filtered search reads 200 at a time)."""
    puts = [PutOp(("big",) + (("sub",) if i >= 400 else ()), f"k{i:04d}", _values(i))
            for i in range(450)]
    reads = [SearchOp(("big",), filter={"kind": "odd"}, limit=30, offset=190),
             SearchOp(("big",), filter={"n": {"$gte": 195}}, limit=10, offset=0),
             SearchOp(("big",), filter={"tags": ["x"]}, limit=500),
             SearchOp(("big",), limit=20, offset=395), SearchOp(("big", "sub"), limit=5, offset=48),
             SearchOp(("big",), filter={"meta": {"lang": "de"}}, limit=3, offset=-5),
             ListNamespacesOp(max_depth=1), ListNamespacesOp(match_conditions=(
                 _match("suffix", ("sub",)),))]

    async def body(do: Any) -> None:
        ours, ref = backend.memory(), InMemoryStore()
        for step in (puts, reads):
            mine, theirs = await do(ours, "batch", step), await do(ref, "batch", step)
            for op, a, b in zip(step, mine, theirs):
                assert _norm(a) == _norm(b), op

    backend.run(body)


def _match(match_type: str, path: tuple[str, ...]) -> Any:
    from langgraph.store.base import MatchCondition

    return MatchCondition(match_type, path)


class _State(TypedDict):
    user: str
    text: str
    recalled: list[str]


def _remember(state: _State, runtime: Any) -> dict[str, Any]:
    ns = ("users", state["user"], "memories")
    runtime.store.put(ns, f"m{len(runtime.store.search(ns, limit=100)):03d}", {"text": state["text"]})
    return {"recalled": [m.value["text"] for m in runtime.store.search(ns, limit=100)]}


async def _aremember(state: _State, runtime: Any) -> dict[str, Any]:
    ns = ("users", state["user"], "memories")
    found = await runtime.store.asearch(ns, limit=100)
    await runtime.store.aput(ns, f"m{len(found):03d}", {"text": state["text"]})
    return {"recalled": [m.value["text"] for m in await runtime.store.asearch(ns, limit=100)]}


def _graph(node: Any, store: Any) -> Any:
    from langgraph.graph import END, START, StateGraph
    from langgraph.runtime import Runtime

    node.__annotations__["runtime"] = Runtime  # LangGraph injects the runtime by annotation
    builder = StateGraph(_State)
    builder.add_node("remember", node)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", END)
    return builder.compile(store=store)


def test_a_graph_remembers_across_runs_and_processes(tmp_path: Path) -> None:
    """A graph's nodes use the store LangGraph hands them (``runtime.store``): a later run, an
    async run over the async face and another process all see what earlier runs stored."""
    path = tmp_path / "agent.db"
    with SQLiteStore(path=path) as db:
        graph = _graph(_remember, KVStoreMemoryStore(db))
        graph.invoke({"user": "ann", "text": "likes tea", "recalled": []})
        out = graph.invoke({"user": "ann", "text": "lives in Oslo", "recalled": []})
        assert out["recalled"] == ["likes tea", "lives in Oslo"]

        async def main() -> dict[str, Any]:
            face = async_store(db)
            try:
                return await _graph(_aremember, KVStoreMemoryStore(face)).ainvoke(
                    {"user": "ann", "text": "has a cat", "recalled": []})
            finally:
                await face.close()

        assert asyncio.run(main())["recalled"] == ["likes tea", "lives in Oslo", "has a cat"]
    code = ("import sys; from kvstore import SQLiteStore; "
            "from kvstore.contrib.langgraph import KVStoreMemoryStore; "
            "m = KVStoreMemoryStore(SQLiteStore(path=sys.argv[1])); "
            "print([i.value['text'] for i in m.search(('users', 'ann'))])")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(
                              Path(__file__).resolve().parent.parent)})
    assert done.stdout.strip() == "['likes tea', 'lives in Oslo', 'has a cat']", done.stderr


def test_concurrent_puts_of_one_item_keep_its_created_at(tmp_path: Path) -> None:
    """Writers on two store objects race on one item (compare-and-swap retries): none fails,
    and the item keeps the created_at of its first put."""
    path = tmp_path / "race.db"
    with SQLiteStore(path=path) as a, SQLiteStore(path=path) as b:
        stores = [KVStoreMemoryStore(a), KVStoreMemoryStore(b)]
        stores[0].put(("race",), "item", {"n": -1})
        created = stores[0].get(("race",), "item").created_at
        start = threading.Barrier(4)

        def writer(i: int) -> None:
            start.wait()
            for n in range(50):
                stores[i % 2].put(("race",), "item", {"n": n, "writer": i})

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        final = stores[1].get(("race",), "item")
        assert final.created_at == created and final.value["n"] == 49


def test_other_data_under_the_category_is_reported_not_misread(tmp_path: Path) -> None:
    from kvstore import CorruptDataError

    with SQLiteStore(path=tmp_path / "shared.db") as db:
        db.save("memory:users/ann/prefs", ["not", "an", "item"])
        memory = KVStoreMemoryStore(db)
        for call in (lambda: memory.get(("users", "ann"), "prefs"),
                     lambda: memory.search(("users",)),
                     lambda: memory.put(("users", "ann"), "prefs", {"theme": "dark"})):
            with pytest.raises(CorruptDataError, match="memory:users/ann/prefs.*category 'memory'"):
                call()
        assert db.load("memory:users/ann/prefs") == ["not", "an", "item"]
        assert KVStoreMemoryStore(db, category="agent").search(()) == []


def test_a_value_the_store_cannot_encode_writes_nothing_of_its_batch(backend: Backend) -> None:
    if backend.kind == "memory":
        pytest.skip("a MemoryStore without serializer keeps any object")
    from kvstore import SerializationError

    async def body(do: Any) -> None:
        ours = backend.memory()
        await do(ours, "put", ("x",), "old", {"v": 1})
        with pytest.raises(SerializationError, match="memory:x/bad"):
            await do(ours, "batch", [PutOp(("x",), "new", {"v": 2}), PutOp(("x",), "old", None),
                                     PutOp(("x",), "bad", {"v": object()})])
        assert [i.key for i in await do(ours, "search", ("x",))] == ["old"]

    backend.run(body)
