"""Redis stalls while more callers than ``max_connections`` are waiting: every caller gets an
answer or StoreUnavailableError in bounded time, the pool gets all its connections back, and
no timed-out command is ever sent twice (an INCR counts at most once)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

from kvstore import RedisStore, StoreUnavailableError
from kvstore.stores.redis.aio import AsyncRedisStore

from redis_servers import HAVE_REDIS_SERVER, RedisServer

pytestmark = pytest.mark.skipif(not HAVE_REDIS_SERVER, reason="redis-server not on PATH")

ROUNDS = 50
CALLERS = 12          # per round, against 4 connections
STALL = 0.15          # seconds the server is SIGSTOPped, longer than the socket timeout


def _stall(server: RedisServer, start: threading.Event) -> None:
    start.wait()
    time.sleep(0.01)
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(STALL)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


def test_stalls_with_more_callers_than_connections(tmp_path):
    server = RedisServer(tmp_path / "r").start()
    store = RedisStore(url=server.url, key_prefix="stall:", ttl_default=None, max_connections=4,
                       pool_timeout=3, socket_timeout=0.1, connect_timeout=0.5)
    ok = failed = 0
    slowest = 0.0
    counts = threading.Lock()

    def call() -> None:
        nonlocal ok, failed, slowest
        began = time.monotonic()
        try:
            store.incr("n")
            good = True
        except StoreUnavailableError:
            good = False
        with counts:
            ok += good
            failed += not good
            slowest = max(slowest, time.monotonic() - began)

    async def async_round(astore: AsyncRedisStore, start: threading.Event) -> None:
        async def one() -> None:
            nonlocal ok, failed, slowest
            began = time.monotonic()
            try:
                await astore.incr("n")
                ok += 1
            except StoreUnavailableError:
                failed += 1
            slowest = max(slowest, time.monotonic() - began)

        start.set()
        await asyncio.gather(*(one() for _ in range(CALLERS)))

    try:
        for i in range(ROUNDS):
            start = threading.Event()
            staller = threading.Thread(target=_stall, args=(server, start))
            staller.start()
            if i % 2 == 0:
                callers = [threading.Thread(target=call) for _ in range(CALLERS)]
                start.set()
                for t in callers:
                    t.start()
                for t in callers:
                    t.join()
            else:
                async def main() -> None:
                    astore = AsyncRedisStore(store)
                    await async_round(astore, start)
                    await astore.close()

                asyncio.run(main())
            staller.join()
        # After every stall, the pool still has all its connections: a burst succeeds.
        burst = [threading.Thread(target=call) for _ in range(40)]
        before_ok = ok
        for t in burst:
            t.start()
        for t in burst:
            t.join()
        assert ok - before_ok == 40
        total = store.load("n")
        # Never re-sent: an acknowledged INCR counted once, a failed one at most once.
        assert ok <= total <= ok + failed, (ok, failed, total)
        assert failed > 0                  # the stalls did bite
        assert slowest < 3                 # every caller answered within the pool wait
        print(f"{ROUNDS} stalls: {ok} acknowledged, {failed} refused, counter {total}, "
              f"slowest call {slowest:.2f}s")
    finally:
        store.close()
        server.stop()
