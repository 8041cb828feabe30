"""LangGraph checkpoints: kvstore's KVStoreSaver side by side with LangGraph's SqliteSaver and
AsyncSqliteSaver (and on Redis and PostgreSQL, where LangGraph's own savers are not installed).

    python benchmarks/bench_langgraph.py [--quick] [--json PATH] [--url redis://...] [--dsn postgresql://...]

One thread of 1,000 checkpoints (each with its metadata and a parent; 2 pending writes each):
``put`` (a checkpoint), ``put_writes`` (2 writes), ``get_tuple`` by id, ``get_tuple`` of the
latest, and ``list`` of the whole thread (ops/s = listings/s). Then the latest checkpoint's
cost in a thread of 100 and of 10,000 checkpoints: it should not grow (kvstore reads the latest
with one descending ``LIMIT 1`` listing). Both SQLite sides use a fresh file in the same
folder; LangGraph's savers with their defaults, kvstore's ``SQLiteStore`` with its defaults
(WAL, JSON values). Targets on SQLite: put >= 1.0x SqliteSaver, get_tuple >= 0.5x.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable

from _harness import Report, measure, measure_pair, parser

from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from kvstore import SQLiteStore
from kvstore.aio import async_store
from kvstore.contrib.langgraph import KVStoreSaver

MESSAGES = [f"message {i}: the quick brown fox jumps over the lazy dog" for i in range(8)]


def checkpoints(n: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``n`` checkpoints (time-ordered uuid6 ids, as LangGraph makes them) and metadata."""
    out = []
    for step in range(n):
        cp = empty_checkpoint()
        cp["id"] = str(uuid6(clock_seq=step))
        cp["channel_values"] = {"messages": MESSAGES, "step": step}
        cp["channel_versions"] = {"messages": step + 1, "step": step + 1}
        out.append((cp, {"source": "loop", "step": step, "parents": {}}))
    return out


class Driver:
    """A saver's calls, run directly (sync) or on one event loop (async)."""

    def __init__(self, saver: Any, loop: asyncio.AbstractEventLoop | None) -> None:
        self.saver, self.loop = saver, loop

    def run(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.loop is None:
            return getattr(self.saver, name)(*args, **kwargs)
        return self.loop.run_until_complete(getattr(self.saver, "a" + name)(*args, **kwargs))

    def listed(self, config: dict[str, Any]) -> int:
        if self.loop is None:
            return sum(1 for _ in self.saver.list(config))

        async def count() -> int:
            return len([t async for t in self.saver.alist(config)])

        return self.loop.run_until_complete(count())

    def fill(self, thread: str, data: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
        config: dict[str, Any] = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        if self.loop is None:
            for cp, md in data:
                config = self.saver.put(config, cp, md, {})
        else:
            async def put_all() -> None:
                nonlocal config
                for cp, md in data:
                    config = await self.saver.aput(config, cp, md, {})

            self.loop.run_until_complete(put_all())
        return [cp["id"] for cp, _ in data]


def bench_pair(report: Report, group: str, sides: list[tuple[str, Driver, bool]],
               data: list[tuple[dict[str, Any], dict[str, Any]]], reads: int) -> None:
    """The five operations on each side (``sides``: label, driver, ours)."""
    n = len(data)
    threads = {label: f"bench-{uuid.uuid4().hex[:8]}" for label, _, _ in sides}
    ops: dict[str, dict[str, Callable[[], None]]] = {}
    for label, drv, _ in sides:
        thread = threads[label]

        def put(drv: Driver = drv) -> None:
            drv.fill(f"put-{uuid.uuid4().hex[:8]}", data)

        ids = drv.fill(thread, data)
        wanted = [random.choice(ids) for _ in range(reads)]

        def put_writes(drv: Driver = drv, thread: str = thread, ids: list[str] = ids) -> None:
            task = uuid.uuid4().hex
            for cid in ids:
                drv.run("put_writes", {"configurable": {"thread_id": thread, "checkpoint_ns": "",
                                                        "checkpoint_id": cid}},
                        [("messages", MESSAGES[:2]), ("step", 1)], task)

        def by_id(drv: Driver = drv, thread: str = thread, wanted: list[str] = wanted) -> None:
            for cid in wanted:
                drv.run("get_tuple", {"configurable": {"thread_id": thread, "checkpoint_ns": "",
                                                       "checkpoint_id": cid}})

        def latest(drv: Driver = drv, thread: str = thread) -> None:
            for _ in range(reads):
                drv.run("get_tuple", {"configurable": {"thread_id": thread, "checkpoint_ns": ""}})

        def listing(drv: Driver = drv, thread: str = thread) -> None:
            for _ in range(3):
                assert drv.listed({"configurable": {"thread_id": thread}}) == n

        ops[label] = {"put": put, "put_writes": put_writes, "get_tuple id": by_id,
                      "get_tuple latest": latest, f"list {n:,}": listing}
    counts = {"put": n, "put_writes": n, "get_tuple id": reads, "get_tuple latest": reads,
              f"list {n:,}": 3}
    for op, count in counts.items():
        repeats = 1 if op == "put_writes" else 2  # writes accumulate: measure the first ones
        if len(sides) == 2:
            (la, _, oa), (lb, _, ob) = sides
            if repeats == 1:
                a, b = measure(ops[la][op], count, 1), measure(ops[lb][op], count, 1)
            else:
                a, b = measure_pair(ops[la][op], ops[lb][op], count, rounds=2)
            report.add(group, op, la, a, oa)
            report.add(group, op, lb, b, ob)
        else:
            label, _, ours = sides[0]
            report.add(group, op, label, measure(ops[label][op], count, repeats), ours)


def bench_latest_growth(report: Report, group: str, sides: list[tuple[str, Driver, bool]],
                        sizes: tuple[int, ...], reads: int) -> None:
    """get_tuple of the latest in threads of each size."""
    for size in sizes:
        data = checkpoints(size)
        for label, drv, ours in sides:
            thread = f"grow-{uuid.uuid4().hex[:8]}"
            drv.fill(thread, data)

            def latest(drv: Driver = drv, thread: str = thread) -> None:
                for _ in range(reads):
                    drv.run("get_tuple", {"configurable": {"thread_id": thread,
                                                           "checkpoint_ns": ""}})

            report.add(group, f"latest @{size:,}", label, measure(latest, reads, 2), ours)


def bench_sqlite(folder: Path, n: int, reads: int, sizes: tuple[int, ...], report: Report) -> None:
    data = checkpoints(n)
    store = SQLiteStore(path=folder / "kvstore.db")
    peer = SqliteSaver(sqlite3.connect(folder / "langgraph.db", check_same_thread=False))
    peer.setup()
    sync = [("KVStoreSaver", Driver(KVStoreSaver(store), None), True),
            ("SqliteSaver", Driver(peer, None), False)]
    bench_pair(report, "sqlite", sync, data, reads)
    bench_latest_growth(report, "sqlite", sync, sizes, reads)
    for op in ("put", "get_tuple id", "get_tuple latest"):
        report.target("sqlite", op, "SqliteSaver", 1.0 if op == "put" else 0.5)

    loop = asyncio.new_event_loop()
    import aiosqlite

    async def open_peer() -> tuple[Any, AsyncSqliteSaver]:
        conn = await aiosqlite.connect(folder / "langgraph-async.db")
        saver = AsyncSqliteSaver(conn)  # takes the running loop
        await saver.setup()
        return conn, saver

    conn, apeer = loop.run_until_complete(open_peer())
    astore = SQLiteStore(path=folder / "kvstore-async.db")
    face = async_store(astore)
    sides = [("KVStoreSaver (aio)", Driver(KVStoreSaver(face), loop), True),
             ("AsyncSqliteSaver", Driver(apeer, loop), False)]
    bench_pair(report, "aio-sql", sides, data, reads)
    for op in ("put", "get_tuple id", "get_tuple latest"):
        report.target("aio-sql", op, "AsyncSqliteSaver", 1.0 if op == "put" else 0.5)
    loop.run_until_complete(conn.close())
    loop.run_until_complete(face.close())
    loop.close()
    store.close()
    astore.close()


def bench_server(group: str, store: Any, n: int, reads: int, report: Report) -> None:
    """Redis / PostgreSQL: the synchronous saver, and the async one on the store's driver."""
    data = checkpoints(n)
    bench_pair(report, group, [("KVStoreSaver", Driver(KVStoreSaver(store), None), True)],
               data, reads)
    loop = asyncio.new_event_loop()
    face = async_store(store)
    bench_pair(report, "aio-" + group[:3],
               [("KVStoreSaver (aio)", Driver(KVStoreSaver(face), loop), True)], data, reads)
    loop.run_until_complete(face.close())
    loop.close()


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--url", default=os.environ.get("KVSTORE_TEST_REDIS_URL",
                                                   "redis://127.0.0.1:6379/15"))
    p.add_argument("--dsn", default=os.environ.get("KVSTORE_TEST_POSTGRES_DSN",
                                                   "postgresql://postgres@127.0.0.1:5432/test"))
    p.add_argument("--table", default="kvbench_langgraph", help="PostgreSQL table (dropped after)")
    args = p.parse_args()
    n, reads, sizes = (200, 500, (100, 1_000)) if args.quick else (1_000, 2_000, (100, 10_000))
    report = Report("langgraph")
    with tempfile.TemporaryDirectory(prefix="kvbench-") as tmp:
        bench_sqlite(Path(tmp), n, reads, sizes, report)
    try:
        from kvstore import RedisStore

        redis = RedisStore(url=args.url, key_prefix=f"kvbench:lg:{uuid.uuid4().hex[:8]}:")
        try:
            bench_server("redis", redis, n, reads, report)
        finally:
            redis.clear()
            redis.close()
    except Exception as exc:  # noqa: BLE001
        print(f"Redis skipped: {exc}")
    try:
        from kvstore import PostgresStore

        pg = PostgresStore(dsn=args.dsn, table=args.table)
        try:
            bench_server("postgres", pg, n, reads, report)
        finally:
            pg.drop_table()
            pg.close()
    except Exception as exc:  # noqa: BLE001
        print(f"PostgreSQL skipped: {exc}")
    report.print()
    report.save(args.json)


if __name__ == "__main__":
    main()
