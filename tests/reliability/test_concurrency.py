"""Concurrency: 4 processes x 8 threads of mixed save/load/incr/delete on one store.

incr totals must be exact, and nothing may be raised but kvstore's documented errors — in
particular never sqlite3's "database is locked".
"""

from __future__ import annotations

import multiprocessing as mp
import random
import threading
import traceback
from pathlib import Path
from typing import Any

import pytest

PROCESSES, THREADS, ROUNDS = 4, 8, 60


def _open(kind: str, folder: Path) -> Any:
    if kind == "sqlite":
        from kvstore import SQLiteStore

        return SQLiteStore(path=folder / "c.db")
    from kvstore import FileStore

    return FileStore(base_path=folder / "files")


def _worker(kind: str, folder: Path, proc: int, queue: Any) -> None:
    store = _open(kind, folder)
    errors: list[str] = []
    incrs = [0]
    lock = threading.Lock()

    def thread_main(t: int) -> None:
        rnd = random.Random(proc * 100 + t)
        mine = f"p{proc}t{t}"
        done = 0
        try:
            for i in range(ROUNDS):
                op = rnd.random()
                if op < 0.35:
                    store.incr("shared-counter")
                    done += 1
                elif op < 0.6:
                    store.save(f"{mine}:{i % 5}", {"i": i, "who": mine})
                elif op < 0.8:
                    value = store.load(f"{mine}:{rnd.randrange(5)}")
                    assert value is None or value["who"] == mine
                    store.load_many([f"p{rnd.randrange(PROCESSES)}t{rnd.randrange(THREADS)}:0"])
                elif op < 0.9:
                    store.delete(f"{mine}:{rnd.randrange(5)}")
                else:
                    store.save_many({f"{mine}:batch{j}": j for j in range(5)})
                    list(store.keys(mine))
        except Exception:
            errors.append(traceback.format_exc())
        with lock:
            incrs[0] += done

    threads = [threading.Thread(target=thread_main, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    store.close()
    queue.put((incrs[0], errors))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "file"])
def test_processes_and_threads_mixed_ops(kind, tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(kind, tmp_path, p, queue)) for p in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    errors = [e for _, errs in results for e in errs]
    assert not errors, errors[0]
    expected = sum(n for n, _ in results)
    assert expected > 0
    store = _open(kind, tmp_path)
    assert store.load("shared-counter") == expected
    assert not any("locked" in e for e in errors)
    store.close()
