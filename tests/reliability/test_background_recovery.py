"""A running manager repairs a dead committer's transaction in the background, without a
transaction of its own and without reopening.

Machine A commits over two stores and is SIGKILLed after the first store committed and before
the other one did (the worst moment: torn). Machine B, opened before the kill, only reads; its
background recovery (``journal.recover_interval``, short here) must undo A's half-applied
commit within the interval plus some slack, and B's reads must never see it torn after that.
Two setups: "two machines" (PostgreSQL + Redis, each manager with its own data folder: the
record is PostgreSQL's) and one machine (SQLite + files, two processes on one configuration:
the record is the local journal folder).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import POSTGRES_DSN, REDIS_URL
from kvstore import PersistenceManager
from kvstore.aio import AsyncPersistenceManager

ROUNDS = int(os.environ.get("KVSTORE_RECOVER_ROUNDS", "20"))
INTERVAL = 0.2  # journal.recover_interval of machine B
SLACK = 3.0  # B's reads see the repair within INTERVAL + SLACK seconds of the kill
KEYS = [f"{c}:{i}" for c in "pq" for i in range(3)]


def _context() -> Any:
    """A forkserver (B's threads are not copied into A; kvstore is imported once)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["kvstore", "kvstore.stores.postgres", "kvstore.stores.redis"])
    return ctx


def _halting(committing: Any, conn: Any) -> Any:
    """``store.raw_commit`` that, once that store committed, says so and waits to be killed:
    the stores that commit after it never do."""
    @contextmanager
    def halted(*args: Any, **kwargs: Any) -> Iterator[None]:
        with committing(*args, **kwargs):
            yield
        conn.send("one store committed")
        time.sleep(60)

    return halted


def _machine_a(folder: str, config: dict[str, Any], n: int, conn: Any) -> None:
    """Commits ``n`` to every key, then ``n + 1``, halting that second commit halfway."""
    os.environ["KVSTORE_DATA_DIR"] = folder  # its own local journal folder
    with PersistenceManager.from_config(config) as pm:
        with pm.transaction() as tx:
            for key in KEYS:
                tx.save(key, {"n": n})
        for store in {id(s): s for s in pm.stores.values()}.values():
            store.raw_commit = _halting(store.raw_commit, conn)  # type: ignore[method-assign]
        with pm.transaction() as tx:
            for key in KEYS:
                tx.save(key, {"n": n + 1})


def _kill_rounds(config: dict[str, Any], folder: Path, read: Any,
                 rounds: int = ROUNDS) -> tuple[list[Any], list[float]]:
    """``rounds`` kills of machine A halfway through a commit; after each, ``read()`` (machine B's
    values of KEYS) must show every key at A's previous value within INTERVAL + SLACK seconds,
    and stay so. Returns the failed rounds and the seconds each repair took."""
    ctx = _context()
    failed: list[Any] = []
    took: list[float] = []
    for run in range(rounds):
        n = 2 * run
        recv, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_machine_a, args=(str(folder), config, n, send))
        child.start()
        if not recv.poll(30):
            child.kill()
            raise AssertionError(f"round {run}: machine A never reached its commit")
        recv.recv()
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        killed = time.monotonic()
        want = {key: n for key in KEYS}
        values = read()
        while values != want and time.monotonic() - killed < INTERVAL + SLACK:
            time.sleep(0.01)
            values = read()
        took.append(time.monotonic() - killed)
        if values != want:
            failed.append((run, "not repaired", values))
            continue
        for _ in range(3):  # repaired for good: nothing puts the torn state back
            time.sleep(INTERVAL / 2)
            if (values := read()) != want:
                failed.append((run, "torn again", values))
                break
    return failed, took


def _server_config(interval: float) -> dict[str, Any]:
    """PostgreSQL + Redis, a table and a key prefix of the test's own (skips without them)."""
    if not (POSTGRES_DSN and REDIS_URL):
        pytest.skip("needs KVSTORE_TEST_POSTGRES_DSN and KVSTORE_TEST_REDIS_URL")
    tag = uuid.uuid4().hex[:8]
    return {"persistence": {
        "postgres": {"dsn": POSTGRES_DSN, "table": f"kvtest_{tag}"},
        "redis": {"url": REDIS_URL, "key_prefix": f"kvtest:{tag}:", "ttl_default": None},
        "journal": {"recover_interval": interval},
        "categories": {"p": {"store": "database"}, "q": {"store": "cache"}}}}


def _values(pm: PersistenceManager) -> dict[str, Any]:
    return {key: (pm.load(key) or {}).get("n") for key in KEYS}


def _report(name: str, failed: list[Any], took: list[float], rounds: int = ROUNDS) -> None:
    print(f"\n{name}: {rounds} kills, {len(failed)} failed; repaired after "
          f"{min(took):.2f}-{max(took):.2f} s (interval {INTERVAL} s)")
    assert not failed, f"{len(failed)} of {rounds} rounds: {failed[:3]}"


@pytest.mark.slow
def test_a_running_manager_on_another_machine_repairs_a_killed_commit(tmp_path, monkeypatch):
    """Two machines on PostgreSQL + Redis: B is open before A is killed halfway through a
    commit (Redis applied, PostgreSQL not), and only reads; B sees the commit undone within
    the interval plus slack, without a transaction or reopening."""
    config = _server_config(INTERVAL)
    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path / "machine-b"))
    with PersistenceManager.from_config(config) as b:
        try:
            failed, took = _kill_rounds(config, tmp_path / "machine-a", lambda: _values(b))
        finally:
            b.stores["cache"].clear()
            b.stores["database"].drop_table()
    _report("two machines", failed, took)


def _local_config(folder: Path, interval: float = INTERVAL) -> dict[str, Any]:
    return {"persistence": {
        "sqlite": {"path": str(folder / "app.db")}, "file": {"base_path": str(folder / "files")},
        "journal": {"recover_interval": interval},
        "categories": {"p": {"store": "database"}, "q": {"store": "file"}}}}


@pytest.mark.slow
def test_a_running_manager_repairs_a_commit_killed_in_another_process(tmp_path):
    """One machine, SQLite + files, one configuration: the surviving manager (open before the
    kill, only reading) undoes the killed process's half-applied commit in the background."""
    config = _local_config(tmp_path)
    with PersistenceManager.from_config(config) as b:
        failed, took = _kill_rounds(config, tmp_path / "data", lambda: _values(b))
    _report("local journal", failed, took)


def test_the_asyncio_manager_repairs_in_the_background_too(tmp_path):
    """The same, with machine B an AsyncPersistenceManager (its Lifecycle runs the pass)."""
    import asyncio

    config = _local_config(tmp_path)

    async def values(b: AsyncPersistenceManager) -> dict[str, Any]:
        return {key: ((await b.load(key)) or {}).get("n") for key in KEYS}

    async def main() -> tuple[list[Any], list[float]]:
        async with AsyncPersistenceManager.from_config(config) as b:
            loop = asyncio.get_running_loop()
            # The kill loop blocks: run it in a thread; each read goes back to the event loop.
            return await loop.run_in_executor(None, _kill_rounds, config, tmp_path / "data",
                                              lambda: asyncio.run_coroutine_threadsafe(
                                                  values(b), loop).result(), 3)

    failed, took = asyncio.run(main())
    _report("asyncio manager", failed, took, 3)


# -- a live committer is never undone, by another manager or by its own ---------------------------

@pytest.mark.parametrize("setup", ["local", "servers"])
def test_a_commit_in_flight_is_never_undone_by_a_background_pass(setup, tmp_path, monkeypatch):
    """A commit held halfway for a second (one store committed, the other not) while its own
    manager and another one run a recovery pass every 50 ms: it completes, every key at the
    new value; no pass took it for a dead committer's."""
    import threading

    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path / "data"))
    if setup == "servers":
        config = _server_config(0.05)
    else:
        config = _local_config(tmp_path, 0.05)
    errors: list[BaseException] = []
    with PersistenceManager.from_config(config) as a, PersistenceManager.from_config(config) as b:
        try:
            for pm in (a, b):
                pm.on("error", lambda event: errors.append(event.error))
                _values(pm)  # (a first PostgreSQL read sets its table up: not while A commits)
            halfway, go_on = threading.Event(), threading.Event()

            def held(committing: Any) -> Any:
                @contextmanager
                def wrapped(*args: Any, **kwargs: Any) -> Iterator[None]:
                    with committing(*args, **kwargs):
                        yield
                    if not halfway.is_set():
                        halfway.set()
                        go_on.wait(10)

                return wrapped

            for store in {id(s): s for s in a.stores.values()}.values():
                store.raw_commit = held(store.raw_commit)  # type: ignore[method-assign]

            def commit() -> None:
                with a.transaction() as tx:
                    for key in KEYS:
                        tx.save(key, {"n": 1})

            worker = threading.Thread(target=commit)
            worker.start()
            assert halfway.wait(10)
            time.sleep(1.0)  # ~20 passes of each manager
            torn = _values(b)
            go_on.set()
            worker.join(10)
            assert len(set(torn.values())) == 2  # it was halfway: one store committed
            assert _values(b) == {key: 1 for key in KEYS}
            assert _values(a) == {key: 1 for key in KEYS}
            assert not errors
        finally:
            if setup == "servers":
                b.stores["cache"].clear()
                b.stores["database"].drop_table()


COMMITS = int(os.environ.get("KVSTORE_RECOVER_COMMITS", "200"))


@pytest.mark.parametrize("setup", ["local", "servers"])
def test_passes_every_few_milliseconds_never_touch_live_commits(setup, tmp_path, monkeypatch):
    """COMMITS transactions in a row while the committing manager and another one each run a
    recovery pass every 5 ms: after each commit every key reads the new value (a pass that
    took a live commit for a dead one would have put some back)."""
    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path / "data"))
    config = _server_config(0.005) if setup == "servers" else _local_config(tmp_path, 0.005)
    errors: list[BaseException] = []
    wrong: list[Any] = []
    with PersistenceManager.from_config(config) as a, PersistenceManager.from_config(config) as b:
        try:
            for pm in (a, b):
                pm.on("error", lambda event: errors.append(event.error))
            for n in range(COMMITS):
                with a.transaction() as tx:
                    for key in KEYS:
                        tx.save(key, {"n": n})
                if (values := _values(b)) != {key: n for key in KEYS}:
                    wrong.append((n, values))
        finally:
            if setup == "servers":
                b.stores["cache"].clear()
                b.stores["database"].drop_table()
    assert not wrong, f"{len(wrong)} of {COMMITS} commits were touched: {wrong[:3]}"
    assert not errors


# -- a server that is down is not asked every interval -------------------------------------------

def test_failing_passes_back_off_and_a_good_one_resets_the_wait():
    """Each pass that reports an error (a store down) doubles the wait before the next, up to
    RECOVER_BACKOFF; the first pass that reports nothing goes back to the interval."""
    from kvstore.lifecycle import RECOVER_BACKOFF, _Recovery

    class Core:
        stores: dict[str, Any] = {}
        events: list[BaseException] = []

        def emit_error(self, op: str, store: str, exc: BaseException) -> None:
            self.events.append(exc)

    class Journal:
        down = True

        def recover(self, stores: Any, on_error: Any) -> int:
            if self.down:
                on_error(ConnectionError("PostgreSQL is down"))
            return 0

    core, journal = Core(), Journal()
    recovery = _Recovery(core, journal, 2.0)  # type: ignore[arg-type]
    waits = []
    for _ in range(6):
        recovery.run()
        waits.append(recovery.wait())
    assert waits == [4.0, 8.0, 16.0, RECOVER_BACKOFF, RECOVER_BACKOFF, RECOVER_BACKOFF]
    assert len(core.events) == 6
    journal.down = False
    recovery.run()
    assert recovery.wait() == 2.0


def test_journal_recover_interval_setting(tmp_path):
    """``journal.recover_interval`` takes a duration, or ``never`` (no background pass)."""
    from kvstore import ConfigError
    from kvstore.config import parse_config

    assert parse_config({}).journal.recover_interval == 2.0
    assert parse_config({"journal": {"recover_interval": "500ms"}}).journal.recover_interval == 0.5
    assert parse_config({"journal": {"recover_interval": "never"}}).journal.recover_interval is None
    with pytest.raises(ConfigError, match="journal.recover_interval"):
        parse_config({"journal": {"recover_interval": -1}})
    config = {"persistence": {"sqlite": {"path": str(tmp_path / "app.db")},
                              "journal": {"recover_interval": "never"}}}
    with PersistenceManager.from_config(config) as pm:
        assert not [t for t in pm._life._threads if t.name == "kvstore-recover"]
