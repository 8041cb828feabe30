"""Crash safety: a child process writing in a loop is SIGKILLed at random moments.

After every kill the store opens, every acknowledged write loads with its exact value, no value
is ever half-written, and new writes work. The child acknowledges a write (through a pipe) only
after ``save`` / the transaction returned.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path
from typing import Any, Callable

import pytest

KILLS = int(os.environ.get("KVSTORE_CRASH_KILLS", "50"))
CTX = mp.get_context("fork")


def value_for(run: int, i: int) -> dict[str, Any]:
    # Sizes vary from a few bytes to ~64 KB so kills land inside large writes too.
    rnd = random.Random(run * 1_000_003 + i)
    return {"run": run, "i": i, "pad": "x" * rnd.choice([1, 100, 4000, 65000])}


def _open(kind: str, folder: Path) -> Any:
    if kind == "sqlite":
        from kvstore import SQLiteStore

        return SQLiteStore(path=folder / "crash.db")
    if kind == "file":
        from kvstore import FileStore

        return FileStore(base_path=folder / "files")
    from kvstore import PersistenceManager

    return PersistenceManager.from_config({"persistence": {
        "sqlite": {"path": str(folder / "pm.db")}, "file": {"base_path": str(folder / "pmfiles")},
        "categories": {"db": {"store": "database"}, "fs": {"store": "file"}}}})


def _writer(kind: str, folder: Path, run: int, conn: Any) -> None:
    store = _open(kind, folder)
    i = 0
    while True:
        value = value_for(run, i)
        if kind == "manager":
            with store.transaction() as tx:
                tx.save(f"db:r{run}:{i}", value)
                tx.save(f"fs:r{run}:{i}", value)
                tx.save("db:last", value)
        else:
            store.save(f"r{run}:{i}", value)
            store.save("last", value)  # overwritten again and again
        conn.send(i)
        i += 1


def _check(kind: str, folder: Path, run: int, acked: int) -> int:
    store = _open(kind, folder)
    checked = 0
    try:
        for i in range(acked + 1):
            expected = value_for(run, i)
            if kind == "manager":
                assert store.load(f"db:r{run}:{i}") == expected
                assert store.load(f"fs:r{run}:{i}") == expected
                checked += 2
            else:
                assert store.load(f"r{run}:{i}") == expected, (kind, run, i)
                checked += 1
        last = store.load("db:last" if kind == "manager" else "last")
        if acked >= 0:
            # The newest value is the last acknowledged one or the one in flight, whole.
            assert last in (value_for(run, acked), value_for(run, acked + 1))
        # Every stored value reads back whole (none half-written).
        stores = store.stores.values() if kind == "manager" else [store]
        for s in stores:
            for key in s.keys():
                s.load(key)
        probe = "db:probe" if kind == "manager" else "probe"
        store.save(probe, {"run": run})
        assert store.load(probe) == {"run": run}
    finally:
        store.close()
    return checked


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "file", "manager"])
def test_sigkill_loses_no_acknowledged_write(kind, tmp_path, monkeypatch, record_property):
    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path / "data"))
    rnd = random.Random(7)
    total_checked = 0
    acked_total = 0
    for run in range(KILLS):
        parent, child = CTX.Pipe(duplex=False)
        proc = CTX.Process(target=_writer, args=(kind, tmp_path, run, child), daemon=True)
        proc.start()
        child.close()
        deadline = time.monotonic() + rnd.uniform(0.02, 0.25)
        acked = -1
        while time.monotonic() < deadline:
            if parent.poll(0.005):
                try:
                    acked = parent.recv()
                except EOFError:
                    break
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        while parent.poll():  # acknowledgements sent before the kill count too
            try:
                acked = parent.recv()
            except EOFError:
                break
        parent.close()
        assert proc.exitcode == -signal.SIGKILL, f"writer died by itself: {proc.exitcode}"
        total_checked += _check(kind, tmp_path, run, acked)
        acked_total += acked + 1
    record_property("kills", KILLS)
    record_property("writes_checked", total_checked)
    print(f"\n{kind}: {KILLS} kills survived, {acked_total} acknowledged writes, "
          f"{total_checked} values checked, 0 lost")
    assert acked_total > KILLS  # the writer really wrote between kills
