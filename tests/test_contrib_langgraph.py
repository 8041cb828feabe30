"""kvstore.contrib.langgraph.KVStoreSaver as a LangGraph user runs it: a real graph with an
interrupt and a resume (the same history as LangGraph's InMemorySaver), two processes sharing
one SQLite file, thread operations that fail midway leaving the thread whole, and no expiry
on Redis unless configured. LangGraph's own conformance suite: tests/peer/test_langgraph_suite.py.
"""

from __future__ import annotations

import asyncio
import operator
import os
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph.graph")

from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.types import Command, interrupt  # noqa: E402

from conftest import REDIS_URL  # noqa: E402

from kvstore import (FileStore, KVStoreError, MemoryStore, PersistenceManager,  # noqa: E402
                     RedisStore, SQLiteStore)
from kvstore.aio import AsyncPersistenceManager, async_store  # noqa: E402
from kvstore.contrib.langgraph import KVStoreSaver  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


class State(TypedDict):
    messages: Annotated[list[str], operator.add]


def _greet(state: State) -> dict[str, Any]:
    return {"messages": ["what is your name?"]}


def _ask(state: State) -> dict[str, Any]:
    name = interrupt({"question": state["messages"][-1]})
    return {"messages": [f"hello {name}"]}


def _finish(state: State) -> dict[str, Any]:
    return {"messages": [f"{len(state['messages'])} messages"]}


def build_graph(saver: Any) -> Any:
    builder = StateGraph(State)
    builder.add_node("greet", _greet)
    builder.add_node("ask", _ask)
    builder.add_node("finish", _finish)
    builder.add_edge(START, "greet")
    builder.add_edge("greet", "ask")
    builder.add_edge("ask", "finish")
    builder.add_edge("finish", END)
    return builder.compile(checkpointer=saver)


def _snapshot(state: Any) -> tuple[Any, ...]:
    """What a user sees of one step of the history (ids differ between runs: uuid6)."""
    return (state.values, state.next, state.metadata.get("step"), state.metadata.get("source"),
            [i.value for task in state.tasks for i in task.interrupts],
            state.parent_config is not None)


def run_sync(saver: Any, thread: str = "t1", run_id: str | None = None
             ) -> list[tuple[Any, ...]]:
    """Run the graph to its interrupt, resume it; its history. ``run_id``: in the config's
    metadata (LangGraph then stores it in every checkpoint's metadata, as its server does)."""
    graph = build_graph(saver)
    config: dict[str, Any] = {"configurable": {"thread_id": thread}}
    if run_id is not None:
        config["metadata"] = {"run_id": run_id}
    first = graph.invoke({"messages": ["hi"]}, config)
    assert "__interrupt__" in first
    graph.invoke(Command(resume="ann"), config)
    return [_snapshot(s) for s in graph.get_state_history(config)]


async def run_async(saver: Any, thread: str = "t1") -> list[tuple[Any, ...]]:
    graph = build_graph(saver)
    config = {"configurable": {"thread_id": thread}}
    await graph.ainvoke({"messages": ["hi"]}, config)
    await graph.ainvoke(Command(resume="ann"), config)
    return [_snapshot(s) async for s in graph.aget_state_history(config)]


@pytest.fixture(scope="module")
def expected() -> list[tuple[Any, ...]]:
    history = run_sync(InMemorySaver())
    assert history[0][0]["messages"][-1] == "3 messages" and len(history) == 5
    return history


_FAKE: list[Any] = []  # one fakeredis server when KVSTORE_TEST_REDIS_URL is not set


def _redis_store(**options: Any) -> Any:
    prefix = f"kvtest:lg:{uuid.uuid4().hex[:8]}:"
    if REDIS_URL:
        return RedisStore(url=REDIS_URL, key_prefix=prefix, **options)
    import fakeredis

    if not _FAKE:
        _FAKE.append(fakeredis.FakeServer())
    return RedisStore(client=fakeredis.FakeRedis(server=_FAKE[0]), key_prefix=prefix, **options)


def _face(store: Any) -> Any:
    """The kvstore.aio face of ``store`` (on fakeredis: an async fakeredis client of the same
    server, never the RedisStore's default URL)."""
    if not REDIS_URL and isinstance(store, RedisStore):
        import fakeredis

        from kvstore.stores.redis.aio import AsyncRedisStore

        return AsyncRedisStore(store, client=fakeredis.FakeAsyncRedis(server=_FAKE[0]))
    return async_store(store)


STORES = {
    "memory": lambda tmp: MemoryStore(),
    "sqlite": lambda tmp: SQLiteStore(path=tmp / "cp.db"),
    "file": lambda tmp: FileStore(base_path=tmp / "files"),
    "redis": lambda tmp: _redis_store(),
}


@pytest.mark.parametrize("kind", list(STORES))
def test_a_graph_interrupted_and_resumed_has_inmemorysavers_history(kind, tmp_path, expected):
    store = STORES[kind](tmp_path)
    try:
        assert run_sync(KVStoreSaver(store)) == expected
        # the same store through the async front (its kvstore.aio face), a second thread
        assert asyncio.run(run_async(KVStoreSaver(_face(store)), "t2")) == expected
        # and the sync saver reads what the async one wrote
        assert [_snapshot(s) for s in build_graph(KVStoreSaver(store)).get_state_history(
            {"configurable": {"thread_id": "t2"}})] == expected
    finally:
        store.clear()
        store.close()


def test_a_manager_category_on_both_fronts(tmp_path, expected):
    config = {"persistence": {"sqlite": {"path": str(tmp_path / "pm.db")},
                              "categories": {"checkpoint": {"store": "database"}}}}
    with PersistenceManager.from_config(config) as pm:
        saver = KVStoreSaver(pm, category="checkpoint")
        assert run_sync(saver) == expected
        assert all(key.startswith("checkpoint:") for key in pm.keys())
        assert next(iter(pm.keys("checkpoint:")), None) is not None

    async def main() -> list[tuple[Any, ...]]:
        async with AsyncPersistenceManager.from_config(config) as apm:
            saver = KVStoreSaver(apm, category="checkpoint")
            history = await run_async(saver, "t2")
            # the async manager's saver, through its sync methods: t1 written by the other
            graph = build_graph(saver)
            old = [_snapshot(s) for s in graph.get_state_history(
                {"configurable": {"thread_id": "t1"}})]
            return [history, old]

    assert asyncio.run(main()) == [expected, expected]


def test_bad_targets_and_options_are_refused(tmp_path):
    store = MemoryStore()
    with pytest.raises(KVStoreError):
        KVStoreSaver({"not": "a store"})
    with pytest.raises(ValueError):
        KVStoreSaver(store, category="checkpoint")  # a category is for a manager
    with pytest.raises(ValueError):
        KVStoreSaver(store, ttl=0)
    with pytest.raises(ValueError):
        KVStoreSaver(store).prune(["t1"], strategy="keep_some")


# -- two processes, one SQLite file ------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from langgraph.types import Command
    from kvstore import SQLiteStore
    from kvstore.contrib.langgraph import KVStoreSaver
    from test_contrib_langgraph import build_graph

    step, path, threads = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    with SQLiteStore(path=path) as store:
        graph = build_graph(KVStoreSaver(store))
        for thread in threads:
            config = {{"configurable": {{"thread_id": thread}}}}
            if step == "start":
                graph.invoke({{"messages": ["hi"]}}, config)
            else:
                graph.invoke(Command(resume="ann"), config)
""")


def _child(step: str, path: Path, threads: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", _CHILD.format(tests=str(ROOT / "tests")),
                             step, str(path), ",".join(threads)], env=env,
                            stderr=subprocess.PIPE, text=True)


def _wait(*procs: subprocess.Popen) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err


def test_two_processes_share_one_sqlite_file(tmp_path, expected):
    """Process A starts 20 threads up to their interrupt while process B starts 20 others:
    no ``database is locked``; then each process resumes the other's threads."""
    path = tmp_path / "shared.db"
    a, b = [f"a{i}" for i in range(20)], [f"b{i}" for i in range(20)]
    _wait(_child("start", path, a), _child("start", path, b))
    _wait(_child("resume", path, b), _child("resume", path, a))
    with SQLiteStore(path=path) as store:
        graph = build_graph(KVStoreSaver(store))
        for thread in a + b:
            history = graph.get_state_history({"configurable": {"thread_id": thread}})
            assert [_snapshot(s) for s in history] == expected, thread


# -- thread operations are all or nothing ------------------------------------------------------


def _thread_keys(saver: KVStoreSaver, store: Any, thread: str) -> dict[str, Any]:
    return {k: store.load(k) for p in (saver.layout.thread(thread),
                                      saver.layout.thread_writes(thread))
            for k in store.keys(p)}


def _fail_on(path: Path, event: str, when: str) -> None:
    """A trigger that aborts the SQL statement touching the given key: a failure in the
    middle of the store's commit, after the statements before it ran."""
    with sqlite3.connect(path) as conn:
        (table,) = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                "AND sql LIKE '%expires_at%'").fetchone()
        conn.execute(f"CREATE TRIGGER kvtest_fail {event} ON {table} WHEN {when} "
                     f"BEGIN SELECT RAISE(ABORT, 'injected failure'); END")


@pytest.mark.parametrize("op", ["delete_thread", "prune", "delete_for_runs", "copy_thread"])
def test_a_thread_operation_failing_midway_leaves_the_thread_whole(op, tmp_path):
    path = tmp_path / "cp.db"
    store = SQLiteStore(path=path)
    saver = KVStoreSaver(store)
    run_sync(saver, "t1", run_id="run-1")
    run_sync(saver, "t2", run_id="run-2")
    before = _thread_keys(saver, store, "t1")
    assert len(before) > 8
    doomed = sorted(before)
    run_id = saver.get_tuple({"configurable": {"thread_id": "t1"}}).metadata["run_id"]
    assert run_id == "run-1"
    if op == "copy_thread":  # fail on the 5th key written to the copy
        target = saver.layout.moved(doomed[4], "t1", "t3")
        _fail_on(path, "BEFORE INSERT", f"new.key = '{target}'")
    else:  # fail on deleting the last key the operation would delete
        _fail_on(path, "BEFORE DELETE", f"old.key = '{doomed[-1]}'")
    call = {"delete_thread": lambda: saver.delete_thread("t1"),
            "prune": lambda: saver.prune(["t2", "t1"], strategy="delete"),
            "delete_for_runs": lambda: saver.delete_for_runs([run_id]),
            "copy_thread": lambda: saver.copy_thread("t1", "t3")}[op]
    with pytest.raises(KVStoreError, match="injected failure"):
        call()
    assert _thread_keys(saver, store, "t1") == before
    assert _thread_keys(saver, store, "t3") == {}
    assert len(list(saver.list({"configurable": {"thread_id": "t2"}}))) == 5
    with pytest.raises(KVStoreError, match="injected failure"):  # the async front: the same
        asyncio.run(getattr(saver, "a" + op)(*{
            "delete_thread": ["t1"], "prune": [["t2", "t1"]], "delete_for_runs": [[run_id]],
            "copy_thread": ["t1", "t3"]}[op]))
    assert _thread_keys(saver, store, "t1") == before
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER kvtest_fail")
    call()  # and without the failure it does all of it
    if op == "copy_thread":
        assert len(_thread_keys(saver, store, "t3")) == len(before)
    else:
        assert _thread_keys(saver, store, "t1") == {}
    store.close()


# -- expiry ------------------------------------------------------------------------------------


def test_no_expiry_on_redis_unless_configured(tmp_path):
    """RedisStore's default ttl_default (3600s) never applies to checkpoints; ``ttl=`` does."""
    store = _redis_store()
    assert store.ttl_default == 3600
    try:
        saver = KVStoreSaver(store)
        run_sync(saver, "forever")
        keys = list(store.keys())
        assert len(keys) > 8
        assert all(store.ttl(k) is None for k in keys)
        saver.copy_thread("forever", "copy")
        assert all(store.ttl(k) is None for k in store.keys())
        store.clear()
        run_sync(KVStoreSaver(store, ttl="2h"), "dated")
        ttls = [store.ttl(k) for k in store.keys()]
        assert ttls and all(3600 < t <= 7200 for t in ttls)

        async def on_async() -> list[Any]:
            face = _face(store)
            await run_async(KVStoreSaver(face), "async")
            found = [await face.ttl(k) async for k in face.keys(KVStoreSaver(face).layout.thread("async"))]
            await face.close()
            return found

        found = asyncio.run(on_async())
        assert found and all(t is None for t in found)
    finally:
        store.clear()
        store.close()


def test_the_latest_checkpoint_is_two_reads_however_long_the_thread(tmp_path):
    """get_tuple of the latest reads the namespace's latest id, then the checkpoint and its
    writes (one load_many): no listing. Without that id it lists one key backwards (kvstore's
    latest-first reads); list(before=, limit=) pages from a key."""
    store = SQLiteStore(path=tmp_path / "cp.db")
    saver = KVStoreSaver(store)
    config = {"configurable": {"thread_id": "long", "checkpoint_ns": ""}}
    ids = []
    for i in range(60):
        checkpoint = {"v": 4, "id": f"{i:08d}", "ts": "", "channel_values": {"n": i},
                      "channel_versions": {}, "versions_seen": {}}
        config = saver.put(config, checkpoint, {"step": i, "run_id": f"run-{i % 2}"}, {})
        ids.append(checkpoint["id"])
    calls: list[str] = []
    for name in ("raw_get", "raw_get_many", "raw_keys", "raw_keys_desc", "raw_keys_after"):
        real = getattr(store, name)
        setattr(store, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    latest = {"configurable": {"thread_id": "long"}}
    found = saver.get_tuple(latest)
    assert found.checkpoint["id"] == ids[-1] and found.checkpoint["channel_values"] == {"n": 59}
    assert found.parent_config["configurable"]["checkpoint_id"] == ids[-2]
    assert calls == ["raw_get", "raw_get_many"]
    calls.clear()
    store.delete(saver.layout.latest("long", ""))  # e.g. data written by another tool
    assert saver.get_tuple(latest).checkpoint["id"] == ids[-1]
    assert calls[0] == "raw_get" and calls[1] == "raw_keys_desc" and calls[-1] == "raw_get_many"
    page = list(saver.list(latest, before={"configurable": {"checkpoint_id": ids[30]}}, limit=3))
    assert [t.checkpoint["id"] for t in page] == ids[27:30][::-1]
    # Deleting the latest points the thread at the greatest id left, in the same atomic step.
    saver.delete_for_runs(["run-1"])  # the odd steps, the latest among them
    assert saver.get_tuple(latest).checkpoint["id"] == ids[-2]
    assert store.load(saver.layout.latest("long", "")) == ids[-2]
    saver.prune(["long"], strategy="keep_latest")
    assert [t.checkpoint["id"] for t in saver.list(latest)] == [ids[-2]]
    assert saver.get_tuple(latest).checkpoint["id"] == ids[-2]
    saver.copy_thread("long", "copy")
    assert saver.get_tuple({"configurable": {"thread_id": "copy"}}).checkpoint["id"] == ids[-2]
    saver.prune(["long", "copy"], strategy="delete")
    assert saver.get_tuple(latest) is None and list(store.keys()) == []
    store.close()


def test_the_readme_example_runs(tmp_path, monkeypatch):
    """README's LangGraph block (tests/test_readme.py runs it too, where LangGraph is
    installed) leaves its thread in agent.db, where another process finds it."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## LangGraph\n", 1)[1].split("```python\n", 1)[1].split("```\n", 1)[0]
    monkeypatch.chdir(tmp_path)
    names: dict[str, Any] = {}
    exec(compile(block, "README.md#langgraph", "exec", dont_inherit=True), names)
    assert names["graph"].get_state(names["thread"]).values == {"messages": ["hi", "hello ann"]}
    again = textwrap.dedent("""
        import sys
        from kvstore import SQLiteStore
        from kvstore.contrib.langgraph import KVStoreSaver
        saver = KVStoreSaver(SQLiteStore(path="agent.db"))
        print(saver.get_tuple({"configurable": {"thread_id": "t1"}}).checkpoint["channel_values"])
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", again], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "'messages': ['hi', 'hello ann']" in done.stdout


@pytest.mark.cluster
def test_on_a_redis_cluster_every_key_of_a_thread_is_in_one_slot(redis_cluster_url, expected):
    """The thread's segment is a hash tag: a thread's checkpoints, writes and latest id share
    one slot, so its operations are one atomic step on a cluster too."""
    store = RedisStore(url=redis_cluster_url, cluster=True, key_prefix=f"lg{uuid.uuid4().hex[:6]}:")
    try:
        saver = KVStoreSaver(store)
        assert run_sync(saver, "t1", run_id="r1") == expected
        keys = list(_thread_keys(saver, store, "t1")) + [saver.layout.latest("t1", "")]
        from redis.cluster import key_slot

        assert len({key_slot((store.key_prefix + k).encode()) for k in keys}) == 1
        saver.copy_thread("t1", "t2")
        saver.prune(["t2"])
        assert len(list(saver.list({"configurable": {"thread_id": "t2"}}))) == 1
        saver.delete_for_runs(["r1"])
        assert saver.get_tuple({"configurable": {"thread_id": "t1"}}) is None
    finally:
        store.clear()
        store.close()
