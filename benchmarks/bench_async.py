"""The asyncio front: event-loop stalls while Redis is frozen, and load throughput from 64 tasks.

    python benchmarks/bench_async.py [--quick] [--json PATH] [--url redis://127.0.0.1:6379/15]

- Stall: a private redis-server is frozen (SIGSTOP) for 3 s while 64 tasks load from it and a
  10 ms ticker runs; the ticker's worst extra delay is reported (target < 100 ms). The sync
  manager, for comparison, blocks its thread for the whole socket timeout.
- Redis ``load`` from 64 concurrent tasks: AsyncRedisStore vs the synchronous RedisStore in one
  thread (target >= 3x) and vs raw ``redis.asyncio`` doing the same GET + msgpack decode
  (target within 1.15x).
- SQLite ``load`` from 64 tasks (thread pool) vs the synchronous store in one thread.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _harness import VALUE, Report, parser, server_setting  # noqa: E402

TASKS = 64


async def _gather_ops(n: int, op: Any) -> float:
    """ops/s of ``n`` calls of ``op(i)`` spread over TASKS tasks (best of 3)."""
    best = float("inf")
    per = n // TASKS
    for _ in range(3):
        async def worker(t: int) -> None:
            for i in range(per):
                await op(t * per + i)

        start = time.perf_counter()
        await asyncio.gather(*[worker(t) for t in range(TASKS)])
        best = min(best, time.perf_counter() - start)
    return per * TASKS / best


def _sync_ops(n: int, op: Any) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(n):
            op(i)
        best = min(best, time.perf_counter() - start)
    return n / best


def bench_redis(url: str, n: int, report: Report) -> None:
    import msgpack
    import redis.asyncio

    from kvstore import RedisStore
    from kvstore.stores.redis.aio import AsyncRedisStore

    prefix = f"kvbench:{uuid.uuid4().hex[:6]}:"
    sync = RedisStore(url=url, key_prefix=prefix, ttl_default=None)
    keys = [f"k{i % 1000}" for i in range(n)]
    sync.save_many({k: VALUE for k in set(keys)})
    report.add("redis", "load x64 tasks", "RedisStore, 1 thread",
               _sync_ops(n, lambda i: sync.load(keys[i])), False)

    async def run() -> None:
        store = AsyncRedisStore(sync)
        raw = redis.asyncio.Redis.from_url(url)
        names = [prefix + "raw:" + k for k in keys]
        await raw.mset({name: msgpack.packb(VALUE) for name in set(names)})

        async def ours(i: int) -> Any:
            return await store.load(keys[i])

        async def peer(i: int) -> Any:
            blob = await raw.get(names[i])
            return None if blob is None else msgpack.unpackb(blob)

        await ours(0)
        await peer(0)
        report.add("redis", "load x64 tasks", "AsyncRedisStore", await _gather_ops(n, ours), True)
        report.add("redis", "load x64 tasks", "raw redis.asyncio", await _gather_ops(n, peer), False)
        await store.close()
        await raw.aclose()

    asyncio.run(run())
    sync.clear()
    sync.close()


def bench_sqlite(folder: Path, n: int, report: Report) -> None:
    from kvstore import SQLiteStore
    from kvstore.aio import ThreadStore

    sync = SQLiteStore(path=folder / "a.db")
    keys = [f"k{i % 1000}" for i in range(n)]
    sync.save_many({k: VALUE for k in set(keys)})
    report.add("sqlite", "load x64 tasks", "SQLiteStore, 1 thread",
               _sync_ops(n, lambda i: sync.load(keys[i])), False)

    async def run() -> None:
        store = ThreadStore(sync)

        async def ours(i: int) -> Any:
            return await store.load(keys[i])

        report.add("sqlite", "load x64 tasks", "ThreadStore(SQLiteStore)",
                   await _gather_ops(n, ours), True)

    asyncio.run(run())
    sync.close()


def bench_stall(folder: Path) -> tuple[float, float] | None:
    """Worst ticker delay (s) and how long the Redis calls took to fail, Redis frozen 3 s."""
    if shutil.which("redis-server") is None:
        print("redis-server not found: stall benchmark skipped")
        return None
    from redis_servers import RedisServer, Ticker

    from kvstore.aio import AsyncPersistenceManager

    server = RedisServer(folder / "redis").start()
    assert server.proc is not None
    os.environ["KVSTORE_DATA_DIR"] = str(folder / "data")
    config = {"persistence": {"redis": {"url": server.url, "socket_timeout": 2.0},
                              "categories": {"q": {"store": "cache"}}}}

    async def run() -> tuple[float, float]:
        async with AsyncPersistenceManager.from_config(config) as pm:
            await pm.save("q:1", 1)
            async with Ticker() as ticker:
                await asyncio.sleep(0.2)
                os.kill(server.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
                start = time.perf_counter()
                await asyncio.gather(*[pm.load("q:1") for _ in range(TASKS)],
                                     return_exceptions=True)
                failed_after = time.perf_counter() - start
                await asyncio.sleep(max(0.0, 3.0 - failed_after))
                os.kill(server.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
            worst = ticker.worst
            return worst, failed_after

    try:
        return asyncio.run(run())
    finally:
        server.stop()


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--url", default=server_setting("KVSTORE_TEST_REDIS_URL",
                                                   "redis://127.0.0.1:6379/15"))
    args = p.parse_args()
    n = 6_400 if args.quick else 32_000
    report = Report("async front (ratio = peer ops/s / kvstore ops/s)")
    with tempfile.TemporaryDirectory(prefix="kvbench-") as tmp:
        stall = bench_stall(Path(tmp))
        bench_redis(args.url, n, report)
        bench_sqlite(Path(tmp), n, report)
    report.print()
    if stall is not None:
        worst, failed = stall
        print(f"\nRedis frozen 3 s, {TASKS} loads in flight: worst 10 ms-ticker delay "
              f"{worst * 1000:.1f} ms (target < 100 ms); the loads failed after {failed:.2f} s "
              "(socket_timeout 2 s)")
        report.add("stall", "worst ticker delay ms", "AsyncPersistenceManager", worst * 1000, True)
    rows = {(r.group, r.impl): r.ops_per_s for r in report.rows}
    sync_r = rows[("redis", "RedisStore, 1 thread")]
    ours_r = rows[("redis", "AsyncRedisStore")]
    raw_r = rows[("redis", "raw redis.asyncio")]
    print(f"Redis: async {ours_r / sync_r:.2f}x the synchronous store (target >= 3); "
          f"raw redis.asyncio is {raw_r / ours_r:.2f}x kvstore (target <= 1.15)")
    print(f"SQLite: async {rows[('sqlite', 'ThreadStore(SQLiteStore)')] / rows[('sqlite', 'SQLiteStore, 1 thread')]:.2f}x "
          "the synchronous store")
    report.save(args.json)


if __name__ == "__main__":
    main()
