"""Faults during a cross-store commit: an undo never reverts another writer's acknowledged write.

A transaction over SQLite + files commits SQLite first (inner), then the files (outer). When the
outer store fails after the inner one committed, the inner one is put back from the values it
held under its write lock; when another process saved one of those keys meanwhile, its value
is kept. The same holds after a SIGKILL, when the next manager's recovery undoes the commit.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from conftest import POSTGRES_DSN, REDIS_URL
from kvstore import PersistenceManager, StoreUnavailableError, TransactionError
from kvstore.journal import Journal

KILLS = int(os.environ.get("KVSTORE_CRASH_KILLS", "50"))


def _config(folder: Path, inner: str = "sqlite", tag: str = "") -> dict[str, Any]:
    persistence: dict[str, Any] = {
        "sqlite": {"path": str(folder / "app.db")}, "file": {"base_path": str(folder / "files")},
        "categories": {"p": {"store": "database"}, "c": {"store": "file"}, "q": {"store": "cache"}}}
    if inner == "postgres":
        persistence["postgres"] = {"dsn": POSTGRES_DSN, "table": f"kvtest_{tag}"}
    if inner == "redis":
        persistence["redis"] = {"url": REDIS_URL, "key_prefix": f"kvtest:{tag}:", "ttl_default": None}
    return {"persistence": persistence}


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def inner(request, tmp_path):
    """The store that commits first (inside the file store), and the config naming it."""
    tag = uuid.uuid4().hex[:8]
    if request.param == "postgres" and not POSTGRES_DSN:
        pytest.skip("needs KVSTORE_TEST_POSTGRES_DSN")
    if request.param == "redis" and not REDIS_URL:
        pytest.skip("needs KVSTORE_TEST_REDIS_URL")
    config = _config(tmp_path, request.param, tag)
    yield ("q:k" if request.param == "redis" else "p:k"), config
    with PersistenceManager.from_config(config) as pm:
        if request.param == "postgres":
            pm.stores["database"].drop_table()
        if request.param == "redis":
            pm.stores["cache"].clear()


def test_an_undo_keeps_a_save_made_while_the_commit_was_starting(inner, monkeypatch):
    """B saves the inner store's key while A's transaction (that key and c:k) is starting;
    A's file store then fails to publish after the inner store committed. B's acknowledged
    value survives the undo."""
    key, config = inner
    with PersistenceManager.from_config(config) as a, PersistenceManager.from_config(config) as b:
        a.save(key, "before")
        saved: list[str] = []
        real_begin = Journal.begin

        def begin(self: Journal, *args: Any, **kwargs: Any) -> Any:
            # B's save runs now, from another thread (another connection); it may have to wait
            # for A's write lock, so A goes on after a moment either way.
            worker = threading.Thread(target=lambda: saved.append(str(b.save(key, "from B"))))
            worker.start()
            worker.join(0.5)
            begin.worker = worker  # type: ignore[attr-defined]
            return real_begin(self, *args, **kwargs)

        monkeypatch.setattr(Journal, "begin", begin)
        files = a.stores["file"]
        monkeypatch.setattr(files, "_publish", _fail_once(files._publish))
        with pytest.raises(TransactionError) as info:
            with a.transaction() as tx:
                tx.save(key, "from A")
                tx.save("c:k", "from A")
        begin.worker.join(10)  # type: ignore[attr-defined]
        assert saved == ["True"]
        assert b.load(key) == "from B", info.value
        assert b.load("c:k") is None
        assert info.value.outcome == "undone"  # type: ignore[attr-defined]


def _fail_once(publish: Any) -> Any:
    calls: list[int] = []

    def failing(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise StoreUnavailableError("injected: disk went away at publish")
        return publish(*args)

    return failing


# -- a SIGKILL loop: a committer and a plain writer of the same keys ------------------------------

def _committer(config: dict[str, Any], start: int) -> None:
    with PersistenceManager.from_config(config) as pm:
        n = start
        while True:
            n += 1
            with pm.transaction() as tx:
                tx.save("p:shared", {"tx": n})
                for i in range(3):
                    tx.save(f"c:{i}", {"tx": n, "pad": "x" * 4000})


def _saver(config: dict[str, Any], conn: Any) -> None:
    """Saves p:shared in a loop and reports each acknowledged value."""
    with PersistenceManager.from_config(config) as pm:
        n = 0
        while True:
            n += 1
            pm.save("p:shared", {"saver": n})
            conn.send(n)


@pytest.mark.slow
def test_sigkill_loop_never_reverts_another_writers_save(tmp_path):
    """>= 50 rounds: a committer and a saver share ``p:shared``; both are SIGKILLed at once.
    The next manager's recovery must leave p:shared at the saver's last acknowledged value (or
    a later one), or at a transaction's value whose files agree."""
    config = _config(tmp_path)
    ctx = mp.get_context("fork")
    rnd = random.Random(5)
    reverted, last = [], 0
    for run in range(KILLS):
        child = ctx.Process(target=_committer, args=(config, last))
        child.start()
        recv, send = ctx.Pipe(duplex=False)
        saver = ctx.Process(target=_saver, args=(config, send))
        saver.start()
        time.sleep(rnd.uniform(0.05, 0.25))
        os.kill(child.pid, signal.SIGKILL)  # both at once: the saver's last ack stays the last
        os.kill(saver.pid, signal.SIGKILL)
        child.join()
        saver.join()
        acked = 0
        while recv.poll(0):
            acked = recv.recv()
        with PersistenceManager.from_config(config) as pm:  # recovers the killed commit
            found = pm.load("p:shared") or {}
            files = {pm.load(f"c:{i}", {}).get("tx") for i in range(3)}
        if acked and found.get("saver", 0) < acked and "tx" not in found:
            reverted.append((run, acked, found))
        if "tx" in found and found["tx"] not in files:
            reverted.append((run, "torn", found, files))
        last = max([last, *(f or 0 for f in files)])
    assert not reverted, f"{len(reverted)} of {KILLS} rounds reverted or tore: {reverted[:3]}"
