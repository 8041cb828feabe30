"""kvstore.contrib.langchain as a LangChain user relies on it: the key-value stores and the chat
message history on every store (memory, SQLite, files, Redis, PostgreSQL), through the
synchronous methods and natively through the async ones, over stores and manager categories;
nothing expires unless asked; two processes adding to one conversation lose nothing.
(langchain-tests' own store suites run in tests/peer/test_langchain_suite.py.)"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.messages import (  # noqa: E402
    AIMessage, HumanMessage, SystemMessage, ToolMessage, message_to_dict)

from langchain_stores import KINDS, async_face, discard, open_store  # noqa: E402

from kvstore import (  # noqa: E402
    CorruptDataError, FileStore, InvalidKeyError, KVStoreError, MemoryStore, PersistenceManager, SerializationError,
    SQLiteStore)
from kvstore.contrib.langchain import (  # noqa: E402
    KVStore, KVStoreByteStore, KVStoreChatMessageHistory)
from kvstore.errors import InvalidArgumentError, InvalidTTLError  # noqa: E402
from kvstore.testing import FakeClock  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

CONVERSATION = [
    SystemMessage("You are terse."),
    HumanMessage("What is 2 + 2?", id="m1"),
    AIMessage("", tool_calls=[{"name": "add", "args": {"a": 2, "b": 2}, "id": "call-1"}]),
    ToolMessage("4", tool_call_id="call-1"),
    AIMessage("4. Ünïcode too: ✓", response_metadata={"model": "fake"}),
]


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    st = open_store(request.param, tmp_path)
    yield st
    discard(st)


def on_async_face(store: Any, fn: Any) -> Any:
    """``await fn(face)`` on ``store``'s async face, in a new event loop (then closed)."""
    async def main() -> Any:
        face = async_face(store)
        try:
            return await fn(face)
        finally:
            await face.close()

    return asyncio.run(main())


# -- key-value stores ------------------------------------------------------------------------------


def test_byte_store_sync_then_async_on_the_same_data(store):
    cache = KVStoreByteStore(store, category="emb")
    cache.mset([("doc-1", b"\x00\x01"), ("doc-2", b"two"), ("other", b"3")])
    assert cache.mget(["doc-1", "missing", "doc-2", "doc-1"]) == [b"\x00\x01", None, b"two",
                                                                b"\x00\x01"]
    assert sorted(cache.yield_keys(prefix="doc-")) == ["doc-1", "doc-2"]
    assert sorted(store.keys()) == ["emb:doc-1", "emb:doc-2", "emb:other"]

    async def more(face):
        acache = KVStoreByteStore(face, category="emb")
        got = await acache.amget(["doc-2", "missing"])
        await acache.amset([("doc-3", bytearray(b"three"))])
        await acache.amdelete(["doc-1", "never-there"])
        return got, sorted([k async for k in acache.ayield_keys()]), \
            [k async for k in acache.ayield_keys(prefix="doc-3")]

    assert on_async_face(store, more) == ([b"two", None], ["doc-2", "doc-3", "other"],
                                          ["doc-3"])
    assert cache.mget(["doc-1", "doc-3"]) == [None, b"three"]
    assert type(cache.mget(["doc-3"])[0]) is bytes


def test_value_store_keeps_what_the_serializer_encodes(store):
    values = KVStore(store)
    doc = {"text": "Ünïcode ✓", "vector": [0.25, -1.5], "meta": {"page": 3, "tags": ["a"]}}
    values.mset([("a", doc), ("b", [1, "two", None]), ("c", "plain")])
    assert values.mget(["a", "b", "c", "d"]) == [doc, [1, "two", None], "plain", None]
    assert on_async_face(store, lambda face: KVStore(face).amget(["a", "c"])) == [doc, "plain"]
    assert sorted(values.yield_keys()) == ["a", "b", "c"]


def test_nothing_expires_unless_asked(store):
    """RedisStore's ttl_default is 3600 s: the adapter's values still never expire."""
    KVStoreByteStore(store).mset([("forever", b"1")])
    on_async_face(store, lambda face: KVStoreByteStore(face).amset([("forever-async", b"2")]))
    assert store.ttl("forever") is None and store.ttl("forever-async") is None
    KVStoreByteStore(store, ttl="1h").mset([("hour", b"1")])
    assert 3500 < store.ttl("hour") <= 3600


def test_values_expire_after_the_ttl_asked():
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    cache = KVStoreByteStore(store, category="emb", ttl=60)
    cache.mset([("a", b"1")])
    clock.advance(59)
    assert cache.mget(["a"]) == [b"1"]
    clock.advance(2)
    assert cache.mget(["a"]) == [None] and list(cache.yield_keys()) == []


def test_categories_keep_their_keys_apart_and_prefixes_are_literal(tmp_path):
    store = SQLiteStore(path=tmp_path / "s.db")
    a, b = KVStoreByteStore(store, category="a"), KVStoreByteStore(store, category="b")
    a.mset([("k%1", b"a1"), ("k_2", b"a2"), ("kx", b"a3")])
    b.mset([("k%1", b"b1")])
    assert a.mget(["k%1"]) == [b"a1"] and b.mget(["k%1", "kx"]) == [b"b1", None]
    assert sorted(a.yield_keys(prefix="k%")) == ["k%1"]
    assert sorted(a.yield_keys(prefix="k_")) == ["k_2"]
    b.mdelete(["k%1"])
    assert a.mget(["k%1"]) == [b"a1"]
    store.close()


def test_a_batch_with_a_bad_value_writes_nothing(tmp_path):
    store = SQLiteStore(path=tmp_path / "s.db")
    with pytest.raises(InvalidArgumentError, match="'bad'.*bytes, got str"):
        KVStoreByteStore(store).mset([("good", b"1"), ("bad", "not bytes")])
    with pytest.raises(SerializationError, match="'obj'"):
        KVStore(store).mset([("good", 1), ("obj", object())])
    with pytest.raises(InvalidKeyError):
        KVStoreByteStore(store).mset([("good", b"1"), ("", b"2")])
    assert list(store.keys()) == []
    store.close()


def test_wrong_arguments_are_refused_naming_them(tmp_path):
    store = MemoryStore()
    with pytest.raises(InvalidArgumentError, match="store must be a kvstore store"):
        KVStoreByteStore({"not": "a store"})
    with pytest.raises(InvalidArgumentError, match="category"):
        KVStoreByteStore(store, category="a:b")
    with pytest.raises(InvalidTTLError):
        KVStoreByteStore(store, ttl=0)
    with pytest.raises(InvalidKeyError):
        KVStoreByteStore(store).mget([42])
    with PersistenceManager.from_config(_config(tmp_path)) as pm:
        with pytest.raises(InvalidArgumentError, match="category="):
            KVStoreByteStore(pm)
    with pytest.raises(InvalidKeyError, match="session_id"):
        KVStoreChatMessageHistory("", store)
    assert all(issubclass(e, KVStoreError) for e in (InvalidArgumentError, InvalidKeyError))


def _config(tmp_path: Path) -> dict[str, Any]:
    return {"persistence": {
        "sqlite": {"path": str(tmp_path / "m.db")}, "file": {"base_path": str(tmp_path / "files")},
        "categories": {"emb": {"store": "file"}, "short": {"store": "database", "ttl": "1h"},
                       "chat": {"store": "file"}, "kept": {"store": "cache"}}}}


def test_manager_categories_route_and_set_the_ttl(tmp_path):
    with PersistenceManager.from_config(_config(tmp_path)) as pm:
        KVStoreByteStore(pm, category="emb").mset([("d1", b"1")])
        KVStoreByteStore(pm, category="short").mset([("d2", b"2")])
        assert list(pm.stores["file"].keys()) == ["emb:d1"]
        assert 3500 < pm.ttl("short:d2") <= 3600  # the category's configured ttl
        assert pm.load("emb:d1") == b"1"

        async def main():
            from kvstore.aio import AsyncPersistenceManager

            async with AsyncPersistenceManager.from_config(_config(tmp_path)) as apm:
                cache = KVStoreByteStore(apm, category="emb")
                await cache.amset([("d3", b"3")])
                return await cache.amget(["d1", "d3"]), cache.mget(["d3"])

        assert asyncio.run(main()) == ([b"1", b"3"], [b"3"])


def test_a_manager_cache_tier_on_redis_keeps_values_forever(tmp_path):
    redis = open_store("redis", tmp_path)  # ttl_default 3600, as a Redis section's default
    stores = {"memory": MemoryStore(), "cache": redis, "file": FileStore(base_path=tmp_path / "f"),
              "database": SQLiteStore(path=tmp_path / "d.db")}
    pm = PersistenceManager(PersistenceManager.from_config(_config(tmp_path)).config, stores=stores)
    KVStoreByteStore(pm, category="kept").mset([("k", b"v")])
    assert redis.load("kept:k") == b"v" and redis.ttl("kept:k") is None
    discard(redis)
    pm.close()


def test_async_methods_never_run_store_io_on_the_event_loop(tmp_path):
    store = SQLiteStore(path=tmp_path / "s.db")
    threads: list[str] = []
    for name in ("raw_get_many", "raw_set_many", "raw_log_append", "raw_log_read"):
        original = getattr(store, name)

        def spy(*args: Any, _original: Any = original) -> Any:
            threads.append(threading.current_thread().name)
            return _original(*args)

        setattr(store, name, spy)

    async def main(face):
        cache = KVStoreByteStore(face)
        await cache.amset([("a", b"1")])
        history = KVStoreChatMessageHistory("t1", face)
        await history.aadd_messages([HumanMessage("hi")])
        return await cache.amget(["a"]), await history.aget_messages(), \
            threading.current_thread().name

    got, messages, loop_thread = on_async_face(store, main)
    assert got == [b"1"] and messages == [HumanMessage("hi")]
    assert len(threads) == 4 and loop_thread not in threads
    store.close()


def test_async_methods_on_a_synchronous_store_run_in_langchains_executor(tmp_path):
    store = SQLiteStore(path=tmp_path / "s.db")
    cache, history = KVStoreByteStore(store), KVStoreChatMessageHistory("t1", store)

    async def main():
        await cache.amset([("a", b"1")])
        await history.aadd_messages([HumanMessage("hi")])
        return (await cache.amget(["a"]), [k async for k in cache.ayield_keys()],
                await history.aget_messages(), await history.alast_messages(1))

    assert asyncio.run(main()) == ([b"1"], ["a"], [HumanMessage("hi")], [HumanMessage("hi")])
    store.close()


# -- chat message history --------------------------------------------------------------------------


def test_chat_history_sync_then_async_on_the_same_log(store):
    history = KVStoreChatMessageHistory("thread-1", store)
    assert history.messages == []
    history.add_messages(CONVERSATION[:3])
    history.add_message(CONVERSATION[3])
    assert history.messages == CONVERSATION[:4]
    assert KVStoreChatMessageHistory("thread-2", store).messages == []  # one log per session

    async def more(face):
        ahistory = KVStoreChatMessageHistory("thread-1", face)
        await ahistory.aadd_messages(CONVERSATION[4:])
        everything = await ahistory.aget_messages()
        last = await ahistory.alast_messages(2)
        await ahistory.aclear()
        return everything, last, await ahistory.aget_messages()

    everything, last, after_clear = on_async_face(store, more)
    assert everything == CONVERSATION and last == CONVERSATION[3:]
    assert after_clear == [] and history.messages == []


def test_each_message_is_one_log_record(tmp_path):
    store = FileStore(base_path=tmp_path)
    history = KVStoreChatMessageHistory("t1", store)
    history.add_messages(CONVERSATION)
    assert store.log("chat:t1").read() == [(i, message_to_dict(m))
                                           for i, m in enumerate(CONVERSATION, 1)]
    assert history.last_messages(1) == CONVERSATION[-1:]
    assert history.last_messages(100) == CONVERSATION
    lines = (tmp_path / "chat:t1.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(CONVERSATION) and '"What is 2 + 2?"' in lines[1]  # readable JSON
    with pytest.raises(InvalidArgumentError):
        history.last_messages(0)
    with pytest.raises(InvalidArgumentError, match="BaseMessage, got str"):
        history.add_messages([HumanMessage("kept?"), "not a message"])
    assert len(history.messages) == len(CONVERSATION)  # nothing of that call was added
    store.log("chat:t1").append({"role": "user", "text": "another program's record"})
    with pytest.raises(CorruptDataError, match=r"'chat:t1' record 6: not a LangChain message"):
        history.messages
    with pytest.raises(CorruptDataError, match="record 6"):
        history.last_messages(1)
    store.close()


def test_chat_history_over_manager_categories(tmp_path):
    with PersistenceManager.from_config(_config(tmp_path)) as pm:
        KVStoreChatMessageHistory("t1", pm).add_messages(CONVERSATION[:2])
        assert list(pm.logs("chat:")) == ["chat:t1"]
        assert list(pm.stores["file"].logs()) == ["chat:t1"]  # where "chat" routes

    async def main():
        from kvstore.aio import AsyncPersistenceManager

        async with AsyncPersistenceManager.from_config(_config(tmp_path)) as apm:
            history = KVStoreChatMessageHistory("t1", apm)
            await history.aadd_messages(CONVERSATION[2:])
            return await history.aget_messages()

    assert asyncio.run(main()) == CONVERSATION


def _add_messages(store: Any, proc: int, count: int) -> int:
    history = KVStoreChatMessageHistory("shared", store)
    for i in range(count):
        history.add_messages([HumanMessage(f"p{proc} m{i}")])
    return count


def test_processes_adding_to_one_sqlite_conversation_lose_nothing(tmp_path):
    from kvstore.testing.workers import PROCESSES, in_processes

    count = 150
    opener = functools.partial(SQLiteStore, path=tmp_path / "chat.db")
    in_processes(opener, _add_messages, count)
    store = opener()
    texts = [m.content for m in KVStoreChatMessageHistory("shared", store).messages]
    assert len(texts) == PROCESSES * count
    for proc in range(PROCESSES):  # each process's messages all there, in its order
        assert [t for t in texts if t.startswith(f"p{proc} ")] == [
            f"p{proc} m{i}" for i in range(count)]
    store.close()


@pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")
def test_runnable_with_message_history_keeps_the_conversation_across_processes(tmp_path):
    """LangChain's own RunnableWithMessageHistory over a SQLite-backed history, the store
    reopened between turns as a new process would."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.runnables.history import RunnableWithMessageHistory

    model = FakeListChatModel(responses=["Hello Ann.", "Your name is Ann."])
    for turn, text in enumerate(["I am Ann.", "What is my name?"]):
        store = SQLiteStore(path=tmp_path / "chat.db")
        chain = RunnableWithMessageHistory(
            model, lambda session_id: KVStoreChatMessageHistory(session_id, store))
        reply = chain.invoke(text, config={"configurable": {"session_id": "ann"}})
        assert reply.content == ["Hello Ann.", "Your name is Ann."][turn]
        store.close()
    store = SQLiteStore(path=tmp_path / "chat.db")
    assert [(type(m).__name__, m.content) for m in KVStoreChatMessageHistory("ann", store).messages] \
        == [("HumanMessage", "I am Ann."), ("AIMessage", "Hello Ann."),
            ("HumanMessage", "What is my name?"), ("AIMessage", "Your name is Ann.")]
    store.close()


def test_the_readme_example_runs(tmp_path):
    """README "LangChain"'s block runs as a user would run it, with its shown values (the
    README test runs it too, but only where LangChain is installed: ``needs langchain_core``)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## LangChain\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "README has no LangChain example"
    for block in blocks:  # each `expr  # -> shown` line checked there, "..." for any text
        code = re.sub(r"^(\S[^#\n]*?)\s*# -> (.+?)\s*$", lambda m: (
            f"_v = ({m.group(1)}); assert re.fullmatch({_shown(m.group(2))!r}, repr(_v)), repr(_v)"),
            block, flags=re.M)
        env = dict(os.environ, PYTHONPATH=str(ROOT), KVSTORE_DATA_DIR=str(tmp_path / "data"))
        r = subprocess.run([sys.executable, "-c", "import re\n" + code], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr


def _shown(text: str) -> str:
    return ".*".join(re.escape(part) for part in text.split("..."))
