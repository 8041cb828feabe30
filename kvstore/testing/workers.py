"""Threads and processes the suite's concurrency tests start (see ``StoreHooks.store_opener``)."""

from __future__ import annotations

import multiprocessing as mp
import threading
import traceback
from typing import Any, Callable

__all__ = ["PROCESSES", "in_threads", "in_processes"]

#: How many processes the multi-process tests run against one store.
PROCESSES = 4


def in_threads(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run ``fn(i)`` in ``n`` threads started together; return results; re-raise a failure."""
    results: list[Any] = [None] * n
    errors: list[str] = []
    start = threading.Barrier(n)

    def main(i: int) -> None:
        start.wait()
        try:
            results[i] = fn(i)
        except BaseException:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=main, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[0]
    return results


def in_processes(opener: Callable[[], Any], target: Callable[..., Any], *args: Any) -> list[Any]:
    """``target(store, proc, *args)`` in :data:`PROCESSES` spawned processes, each on its own
    store from ``opener()``; their results, or the first child's traceback as a failure."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(opener, target, p, queue) + args)
             for p in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    errors = [r[1] for r in results if r[0] == "error"]
    assert not errors, errors[0]
    return [r[1] for r in results]


def _child(opener: Callable[[], Any], target: Callable[..., Any], proc: int, queue: Any,
           *args: Any) -> None:
    try:
        store = opener()
        try:
            queue.put(("ok", target(store, proc, *args)))
        finally:
            store.close()
    except BaseException:
        queue.put(("error", traceback.format_exc()))
