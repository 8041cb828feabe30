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
from typing import Any

import pytest

from kvstore import PersistenceManager

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


# -- a cross-store commit killed mid-way is all or nothing ------------------------------------


def _crash_config(tmp_path: Path, prefix: str | None) -> dict:
    persistence: dict = {"sqlite": {"path": str(tmp_path / "app.db")},
                         "file": {"base_path": str(tmp_path / "files")},
                         "categories": {"p": {"store": "database"}, "c": {"store": "file"},
                                        "q": {"store": "cache"}}}
    if prefix is not None:
        from conftest import REDIS_URL

        persistence["redis"] = {"url": REDIS_URL, "key_prefix": prefix, "ttl_default": None}
    return {"persistence": persistence}


def _crash_keys(prefix: str | None) -> list[str]:
    return [f"p:{i}" for i in range(3)] + [f"c:{i}" for i in range(3)] + \
        ([f"q:{i}" for i in range(3)] if prefix else [])


def _committer(config: dict, keys: list[str], start: int) -> None:
    with PersistenceManager.from_config(config) as pm:
        n = start
        while True:
            n += 1
            with pm.transaction() as tx:
                for key in keys:
                    tx.save(key, {"n": n, "pad": "x" * 2000})


def _kill_committers(config: dict, keys: list[str], seed: int) -> tuple[list, int]:
    """SIGKILL a committing process KILLS times; after each, open a manager (which
    recovers) and record the keys' values when they disagree. Returns (torn, last value)."""
    import multiprocessing as mp
    import random
    import signal

    ctx = mp.get_context("fork")
    torn: list = []
    last, rnd = 0, random.Random(seed)
    for run in range(KILLS):
        child = ctx.Process(target=_committer, args=(config, keys, last))
        child.start()
        time.sleep(rnd.uniform(0.05, 0.3))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        with PersistenceManager.from_config(config) as pm:  # recovers, like any next user
            values = {key: (pm.load(key) or {}).get("n") for key in keys}
        if len(set(values.values())) != 1:
            torn.append((run, values))
        last = max(v or 0 for v in values.values())
    return torn, last


@pytest.mark.slow
def test_sigkill_during_cross_store_commits_never_tears(data_dir, tmp_path):
    """>= 50 SIGKILLs of a process committing transactions over SQLite + files (+ Redis): after
    each, the next manager to open sees every key of the last transaction at one value."""
    import uuid

    from conftest import REDIS_URL

    prefix = f"kvtest:{uuid.uuid4().hex[:8]}:" if REDIS_URL else None
    config = _crash_config(tmp_path, prefix)
    torn, last = _kill_committers(config, _crash_keys(prefix), 7)
    if prefix:
        with PersistenceManager.from_config(config) as pm:
            pm.stores["cache"].clear()
    assert not torn, f"{len(torn)} torn outcomes of {KILLS}: {torn[:3]}"
    assert last > KILLS  # the children did commit transactions


@pytest.mark.slow
def test_sigkill_during_multi_key_file_commits_never_tears(data_dir, tmp_path):
    """The file store renames one file per key: its own multi-key commits go through the
    journal too."""
    torn, _ = _kill_committers(_crash_config(tmp_path, None), [f"c:{i}" for i in range(40)], 11)
    assert not torn, f"{len(torn)} torn outcomes of {KILLS}: {torn[:3]}"
