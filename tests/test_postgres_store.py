"""PostgresStore against a real server (KVSTORE_TEST_POSTGRES_DSN); skipped without one."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import socket
import time
import uuid

import pytest

from conftest import POSTGRES_DSN

pytestmark = pytest.mark.skipif(not POSTGRES_DSN,
                                reason="KVSTORE_TEST_POSTGRES_DSN is not set: no PostgreSQL")


@pytest.fixture
def table():
    name = f"kvtest_{uuid.uuid4().hex[:8]}"
    yield name
    from kvstore import PostgresStore

    with PostgresStore(dsn=POSTGRES_DSN, table=name) as s:
        s.drop_table()


def _incr_worker(dsn: str, table: str, n: int) -> None:
    from kvstore import PostgresStore

    with PostgresStore(dsn=dsn, table=table, pool_size=2) as store:
        for _ in range(n):
            store.incr("race")


def test_incr_is_exact_across_four_processes(table):
    from kvstore import PostgresStore

    with PostgresStore(dsn=POSTGRES_DSN, table=table) as store:
        store.save("warmup", 1)  # creates the table before the race
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_incr_worker, args=(POSTGRES_DSN, table, 200)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with PostgresStore(dsn=POSTGRES_DSN, table=table) as store:
        assert store.load("race") == 800


def test_prefix_uses_the_primary_key_index(table):
    from kvstore import PostgresStore

    with PostgresStore(dsn=POSTGRES_DSN, table=table) as store:
        store.save_many({f"user:{i}": i for i in range(2000)})
        with store.connection() as conn:
            conn.execute("SET enable_seqscan = off")
            plan = conn.execute(
                f"EXPLAIN SELECT key FROM {table} WHERE key >= 'user:1' AND key < 'user:2'"
            ).fetchall()
            conn.execute("RESET enable_seqscan")
        assert "Index" in " ".join(r[0] for r in plan)
        assert len(list(store.keys("user:1"))) == 1111


def test_expired_rows_are_purged_in_batches(table):
    from kvstore import PostgresStore

    now = [time.time()]
    with PostgresStore(dsn=POSTGRES_DSN, table=table, clock=lambda: now[0]) as store:
        store.save_many({f"old:{i}": i for i in range(300)}, ttl=1)
        now[0] += 10
        store.save("trigger", 1)
        with store.connection() as conn:
            left = conn.execute(f"SELECT count(*) FROM {table} WHERE key LIKE 'old:%%'").fetchone()[0]
        assert left == 300 - 256
        now[0] += 2
        store.save("trigger", 2)
        with store.connection() as conn:
            assert conn.execute(f"SELECT count(*) FROM {table} WHERE key LIKE 'old:%%'").fetchone()[0] == 0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_gives_store_unavailable_quickly():
    from kvstore import PostgresStore, StoreUnavailableError

    dsn = f"postgresql://postgres:topsecret@127.0.0.1:{_closed_port()}/test"
    store = PostgresStore(dsn=dsn, connect_timeout=1.0)
    try:
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError) as err:
            store.load("x")
        assert time.monotonic() - start < 5
        assert "topsecret" not in str(err.value) and "topsecret" not in repr(store)
    finally:
        store.close()


def test_recovers_after_connections_are_cut(table):
    """Kill the server side of every pooled connection: one call may fail, then it recovers."""
    from kvstore import PostgresStore, StoreUnavailableError

    with PostgresStore(dsn=POSTGRES_DSN, table=table, connect_timeout=2) as store:
        store.save("k", "v")
        import psycopg

        with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
            killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE application_name = %s", (f"kvstore:{table}",)).fetchone()[0]
        assert killed >= 1
        results = []
        for _ in range(5):
            try:
                results.append(store.load("k"))
            except StoreUnavailableError:
                results.append("unavailable")
        assert results[-1] == "v"


def test_manager_database_tier_uses_postgres(table, tmp_path, monkeypatch):
    from kvstore import PersistenceManager, PostgresStore, TransactionError

    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path))
    config = {"persistence": {"postgres": {"dsn": POSTGRES_DSN, "table": table},
                              "categories": {"prefs": {"store": "database"},
                                             "config": {"store": "file"}}}}
    with PersistenceManager.from_config(config) as pm:
        assert isinstance(pm.stores["database"], PostgresStore)
        pm.save("prefs:a", "before")
        with pm.transaction() as tx:
            tx.save("prefs:a", "after")
            tx.save("prefs:b", "new")
            tx.save("config:c", "file")
        assert pm.load("prefs:a") == "after" and pm.load("prefs:b") == "new"

        real = pm.stores["file"].raw_commit

        @contextlib.contextmanager
        def broken(ops, checks, *rest):
            with real(ops, checks, *rest):
                yield  # PostgreSQL, nested inside, has committed by now
                raise OSError("disk full")

        pm.stores["file"].raw_commit = broken
        with pytest.raises(TransactionError):
            with pm.transaction() as tx:
                tx.save("prefs:a", "lost")
                tx.delete("prefs:b")
                tx.save("config:c", "lost")
        assert pm.load("prefs:a") == "after"
        assert pm.load("prefs:b") == "new"
        assert pm.load("config:c") == "file"
