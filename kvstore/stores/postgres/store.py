"""PostgresStore: the synchronous PostgreSQL driver (see :mod:`kvstore.stores.postgres`)."""

from __future__ import annotations

import copy
import re
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, cast

from ..._commit import Before
from ...errors import ConfigError, StoreUnavailableError
from ...serializers import SerializerSpec
from ...store import (KEEP, MISSING, TTL, Check, Op, PersistenceStore, check_max_entries, conflict,
                      prefix_upper_bound, same_blob)
from .commit import CommitMarks
from .statements import PAGE, Queries, Query

__all__ = ["PostgresStore", "mask_dsn"]


def mask_dsn(dsn: str) -> str:
    """``dsn`` with its password masked (for messages and ``repr``)."""
    from ...config import mask_secrets

    return mask_secrets(dsn)


class PostgresStore(CommitMarks, PersistenceStore):
    """Keys in a PostgreSQL table.

    Args:
        dsn: libpq connection string or URL (``postgresql://user@host:5432/db``).
        table: table name (a plain identifier); created with its indexes if missing.
        ttl_default: TTL for ``save`` without one (None: permanent).
        serializer: format name or :class:`~kvstore.Serializer` (default json).
        max_entries: keep at most this many keys, evicting the least recently stored (a write
            of a key's value counts as storing it; reads do not). None: no bound. The bound
            belongs to the table, enforced in every writer's statement (see ``_bound``).
        connect_timeout: seconds to wait for a connection before :class:`StoreUnavailableError`.
        pool_size: most connections kept open.
        clock: time source for expiry (seconds since the epoch); inject one in tests.

    Raises:
        ConfigError: psycopg is not installed (``pip install 'kvstore[postgres]'``) or a bad table.
        StoreUnavailableError: the server cannot be reached (on any call; the store recovers by
            itself when the server is back).
    """

    durable = True

    def __init__(self, dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres",
                 table: str = "kvstore", ttl_default: TTL = None,
                 serializer: SerializerSpec = "json", *, secret: bytes | str | None = None,
                 max_entries: int | None = None, connect_timeout: float = 5.0,
                 pool_size: int = 10, clock: Callable[[], float] = time.time) -> None:
        super().__init__(ttl_default=ttl_default, serializer=serializer, secret=secret)
        self.max_entries = check_max_entries(max_entries)
        try:
            import psycopg
            from psycopg_pool import ConnectionPool, PoolTimeout
        except ImportError as exc:
            raise ConfigError("PostgresStore needs psycopg 3 and psycopg_pool: "
                              "pip install 'kvstore[postgres]'") from exc
        # 58 characters at most: the lock table is <table>_meta, within PostgreSQL's 63.
        if not isinstance(table, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,57}", table):
            raise ConfigError(f"table: {table!r} is not a plain table name (letters, digits, _; "
                              "at most 58 characters)")
        self._psycopg = psycopg
        self.pool_timeout_error = PoolTimeout
        self.connection_errors = (psycopg.OperationalError, psycopg.InterfaceError)
        self.data_errors = (psycopg.errors.CharacterNotInRepertoire,
                             psycopg.errors.InvalidTextRepresentation,
                             psycopg.errors.UntranslatableCharacter, psycopg.DataError)
        self.dsn = dsn
        self.table = table
        self._clock = clock
        self.connect_timeout = connect_timeout
        self._ready = False
        self._ready_lock = threading.Lock()
        self.queries = Queries(table, clock)
        self.pool = ConnectionPool(
            dsn, min_size=1, max_size=pool_size, open=False, timeout=connect_timeout,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout)),
                    "application_name": f"kvstore:{table}"},
            name=f"kvstore-{table}")
        self.pool.open(wait=False)

    def describe(self) -> str:
        bound = "" if self.max_entries is None else f", max_entries={self.max_entries}"
        return f"dsn={mask_dsn(self.dsn)!r}, table={self.table!r}{bound}"

    def lock_id(self) -> str:
        return f"postgres:{mask_dsn(self.dsn)}:{self.table}"

    # -- connections and errors ----------------------------------------------------------------------

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A pooled connection (``with store.connection() as conn``); connection failures become
        StoreUnavailableError."""
        pool = self.pool
        try:
            conn: Any = pool.getconn()
        except self.pool_timeout_error as exc:
            raise StoreUnavailableError(
                f"PostgreSQL at {mask_dsn(self.dsn)} is unavailable: no connection within "
                f"{self.connect_timeout:g}s") from exc
        try:
            if not self._ready:
                self._create_table(conn)
            yield conn
        except self.connection_errors as exc:
            pool.putconn(conn)  # the pool discards a broken connection
            conn = None
            try:  # and drop the other dead ones now, so recovery needs no restart
                pool.check()
            except Exception:
                pass
            raise StoreUnavailableError(
                f"PostgreSQL at {mask_dsn(self.dsn)} is unavailable: {exc}".strip()) from exc
        finally:
            if conn is not None:
                pool.putconn(conn)

    def ensure_table(self) -> None:
        """Create the table (and its index) now if it does not exist yet."""
        with self.connection():
            pass

    def _create_table(self, conn: Any) -> None:
        with self._ready_lock:
            if self._ready:
                return
            with conn.transaction():
                # CREATE ... IF NOT EXISTS is not safe against a concurrent creator (both try
                # to insert the type row: UniqueViolation): processes starting together take
                # turns on a lock named after the table.
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                             ("kvstore-create:" + self.table,))
                conn.execute(self.queries.sql["create"])
                conn.execute(self.queries.sql["index"])
                self._bound(conn)
            self._ready = True

    def _bound(self, conn: Any) -> None:
        """Apply ``max_entries`` to the table (in the caller's transaction, under the create
        lock). As on SQLite, the bound belongs to the table and is kept by triggers, so every
        writer counts and evicts in its own statement: a store number per row from the
        sequence ``<table>_seq`` (stamped on insert and on a new value), the count and the cap in
        the one-row table ``<table>_cap``, eviction of the least recently stored rows at the end
        of each inserting statement. A store opened without ``max_entries`` removes the bound.
        DDL only when something changes: it locks the table against every reader."""
        t, name = f'"{self.table}"', self.table
        cap, seq = f'"{name}_cap"', f'"{name}_seq"'
        bound = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (cap,)).fetchone()[0]
        if self.max_entries is None:
            if bound:
                conn.execute(f"DROP TRIGGER IF EXISTS kvstore_stamp ON {t}; "
                             f"DROP TRIGGER IF EXISTS kvstore_added ON {t}; "
                             f"DROP TRIGGER IF EXISTS kvstore_removed ON {t}; DROP TABLE {cap}")
            return
        if not bound:
            conn.execute(
                f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS stored bigint; "
                f"CREATE SEQUENCE IF NOT EXISTS {seq} OWNED BY {t}.stored; "
                f'CREATE INDEX IF NOT EXISTS "{name}_ord" ON {t} (stored, key); '
                f"CREATE TABLE {cap} (one int PRIMARY KEY CHECK (one = 1), n bigint NOT NULL, "
                "cap bigint NOT NULL)")
            conn.execute(
                f'CREATE OR REPLACE FUNCTION "{name}_stm"() RETURNS trigger LANGUAGE plpgsql AS '
                f"$$ BEGIN NEW.stored := nextval('{seq}'); RETURN NEW; END $$; "
                f'CREATE OR REPLACE FUNCTION "{name}_add"() RETURNS trigger LANGUAGE plpgsql AS '
                f"$$ DECLARE over bigint; BEGIN "
                f"UPDATE {cap} SET n = n + (SELECT count(*) FROM added) RETURNING n - cap INTO over; "
                f"IF over > 0 THEN DELETE FROM {t} WHERE key IN "
                f"(SELECT key FROM {t} ORDER BY stored NULLS FIRST, key LIMIT over); END IF; "
                "RETURN NULL; END $$; "
                f'CREATE OR REPLACE FUNCTION "{name}_del"() RETURNS trigger LANGUAGE plpgsql AS '
                f"$$ BEGIN UPDATE {cap} SET n = n - (SELECT count(*) FROM gone); RETURN NULL; "
                "END $$; "
                f"CREATE TRIGGER kvstore_stamp BEFORE INSERT OR UPDATE OF value ON {t} "
                f'FOR EACH ROW EXECUTE FUNCTION "{name}_stm"(); '
                f"CREATE TRIGGER kvstore_added AFTER INSERT ON {t} REFERENCING NEW TABLE AS added "
                f'FOR EACH STATEMENT EXECUTE FUNCTION "{name}_add"(); '
                f"CREATE TRIGGER kvstore_removed AFTER DELETE ON {t} REFERENCING OLD TABLE AS gone "
                f'FOR EACH STATEMENT EXECUTE FUNCTION "{name}_del"()')
            conn.execute(f"INSERT INTO {cap} SELECT 1, count(*), %s FROM {t}", (self.max_entries,))
        else:
            conn.execute(f"UPDATE {cap} SET cap = %s", (self.max_entries,))
        over = conn.execute(f"SELECT n - cap FROM {cap}").fetchone()[0]
        if over > 0:  # a lower cap than before: down to it now
            conn.execute(f"DELETE FROM {t} WHERE key IN (SELECT key FROM {t} ORDER BY stored "
                         "NULLS FIRST, key LIMIT %s)", (over,))

    # -- byte-level operations ------------------------------------------------------------------------

    # Each operation is a Query of self.queries (statement, parameters, what to fetch, how to
    # read the result), run here on a pooled connection and by AsyncPostgresStore (.aio) on an
    # asyncio pool.

    def _run(self, q: Query) -> Any:
        with self.connection() as conn:
            try:
                cur = conn.execute(q.sql, q.params)
            except self.data_errors as exc:
                raise q.data_error(exc) if q.data_error else exc
            rows = cur.fetchone() if q.fetch == "one" else cur.fetchall() if q.fetch else None
        return q.result(rows)

    def raw_get(self, key: str) -> Any:
        return self._run(self.queries.get(key))

    def raw_get_many(self, keys: list[str]) -> dict[str, Any]:
        return self._run(self.queries.get_many(keys))

    def raw_set(self, key: str, blob: Any, ttl: float | None) -> None:
        self._run(self.queries.set(key, blob, ttl))
        purge = self.queries.purge()
        if purge is not None:
            self._run(purge)

    def raw_set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        self._run(self.queries.set_many(items, ttl))

    def raw_delete_many(self, keys: list[str]) -> int:
        return int(self._run(self.queries.delete_many(keys)))

    def raw_delete(self, key: str) -> bool:
        return self.raw_delete_many([key]) == 1

    def raw_exists(self, key: str) -> bool:
        return bool(self._run(self.queries.exists(key)))

    def raw_ttl(self, key: str) -> float | None:
        return self._run(self.queries.ttl(key))

    def raw_incr(self, key: str, amount: int, ttl: float | None) -> int:
        return int(self._run(self.queries.incr(key, amount, ttl)))

    def raw_keys(self, prefix: str, after: str = "") -> Iterator[str]:
        while True:
            page = self._run(self.queries.keys(prefix, after))
            yield from page
            if len(page) < PAGE:
                return
            after = page[-1]

    def raw_keys_after(self, prefix: str, start_after: str) -> Iterator[str]:
        return self.raw_keys(prefix, start_after)

    def raw_keys_desc(self, prefix: str, start_before: str | None,
                      limit: int | None = None) -> Iterator[str]:
        left = limit  # ORDER BY key DESC on the same index, a page (no more than is left) per query
        while left is None or left > 0:
            size = PAGE if left is None else min(left, PAGE)
            page = self._run(self.queries.keys_desc(prefix, start_before, size))
            yield from page
            if len(page) < size:
                return
            left, start_before = None if left is None else left - len(page), page[-1]

    def raw_clear(self, prefix: str) -> int:
        return int(self._run(self.queries.clear(prefix)))

    def raw_add(self, key: str, blob: Any, ttl: float | None) -> bool:
        return bool(self._run(self.queries.add(key, blob, ttl)))

    def raw_cas(self, key: str, expected: Any, new: Any, ttl: Any) -> bool:
        return bool(self._run(self.queries.cas(key, expected, new, ttl)))

    def raw_touch(self, key: str, ttl: float | None) -> bool:
        return bool(self._run(self.queries.touch(key, ttl)))

    @contextmanager
    def raw_commit(self, ops: list[Op], checks: list[Check],
                    before: Before | None = None) -> Iterator[None]:
        # A transaction's part (before given, the commit journaled) also inserts a marker row
        # named by its token: when COMMIT's reply is lost, that row says whether it committed.
        marked = before is not None and before.recorded
        if marked:
            cast("PostgresStore", self.meta).ensure_table()
        lost: BaseException | None = None
        with self.connection() as conn:
            committing = False
            try:
                with conn.transaction():
                    self._commit_writes(conn, ops, checks, before)
                    if before is not None and marked:
                        self._mark(conn, before)
                    yield
                    if before is not None and before.holds_record:  # committed together
                        self._take_record(conn, before)
                    committing = True
            except self.connection_errors as exc:
                if not (committing and marked):
                    raise
                lost = exc  # at COMMIT: maybe committed; settled below, off this connection
        if before is not None and lost is not None:
            self._settle_commit(before.token, lost)

    def _commit_writes(self, conn: Any, ops: list[Op], checks: list[Check],
                       before: Before | None) -> None:
        """The checks, the before-images and the writes of :meth:`raw_commit`, on ``conn``
        inside its transaction."""
        sql = self.queries.sql
        now = self._clock()
        if self.max_entries is not None and ops:
            # The count first, as every inserting statement takes it: never a row lock
            # held here while an evicting writer holding the count waits for that row.
            conn.execute(f'SELECT 1 FROM "{self.table}_cap" FOR UPDATE')
        keys = sorted({k for k, _ in checks} | {k for k, _, _ in ops})
        if len(keys) > 1 or checks:
            conn.execute(sql["lock_keys"], {"ns": self.table + ":", "keys": keys})
        absent: set[str] = set()
        if checks:
            found = {k: bytes(v) for k, v in conn.execute(
                sql["check"], {"keys": [k for k, _ in checks], "now": now}).fetchall()}
            for key, expected in checks:
                if not same_blob(found.get(key, MISSING), expected):
                    raise conflict(key)
                if expected is MISSING:
                    absent.add(key)
        final = {k: (b, t) for k, b, t in ops}  # the last op on a key wins
        if before is not None:
            before.images = self._locked_images(conn, list(final), now)
        deletes = [k for k, (b, _) in final.items() if b is MISSING]
        if deletes:
            conn.execute(sql["delete"], {"keys": deletes, "now": now})
        upserts: list[tuple[str, Any, float | None]] = []
        for key, (blob, ttl) in final.items():
            if blob is MISSING:
                continue
            exp = None if ttl is None or ttl is KEEP else now + ttl
            if ttl is KEEP:
                conn.execute(sql["set_keep"], {"key": key, "value": blob})
            elif key in absent:
                # Checked absent: no row to lock, so insert only if still absent (a
                # plain save may have created it since the check).
                row = conn.execute(sql["add"], {"key": key, "value": blob, "exp": exp,
                                                "now": now}).fetchone()
                if row is None:
                    raise conflict(key)
            else:
                upserts.append((key, blob, exp))
        if upserts:
            conn.execute(sql["set_many"], {"keys": [k for k, _, _ in upserts],
                                           "values": [b for _, b, _ in upserts],
                                           "exps": [e for _, _, e in upserts]})

    def raw_put_rows(self, rows: list[tuple[str, Any, float | None]]) -> None:
        # COPY into a session-local staging table, then one upsert: the fastest way into
        # PostgreSQL, in one transaction.
        now = self._clock()
        with self.connection() as conn, conn.transaction():
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS kvstore_staging (n int, key text, "
                         "value bytea, exp float8) ON COMMIT DELETE ROWS")
            with conn.cursor().copy("COPY kvstore_staging (n, key, value, exp) FROM STDIN") as copy:
                for n, (key, blob, ttl) in enumerate(rows):
                    copy.write_row((n, key, blob, None if ttl is None else now + ttl))
            # The last row of a key wins, as with one write after another.
            conn.execute(f'INSERT INTO "{self.table}" (key, value, expires_at) SELECT DISTINCT ON '
                         "(key) key, value, to_timestamp(exp) FROM kvstore_staging ORDER BY key, "
                         "n DESC ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "
                         "expires_at = EXCLUDED.expires_at")

    # -- logs ----------------------------------------------------------------------------------------

    def _log_exec(self, name: str, params: dict[str, Any], fetch: str | None,
                  locked: bool = False) -> Any:
        sql = self.queries.sql
        with self.connection() as conn:
            if not self.__dict__.get("_log_ready"):
                with conn.transaction():
                    conn.execute(sql["log_lock"], {"ns": "kvstore-create:", "name": self.table})
                    conn.execute(sql["log_create"])
                self._log_ready = True
            with conn.transaction():
                if locked:  # appends to one log take turns: the next number is theirs alone
                    conn.execute(sql["log_lock"], {"ns": f"kvstore-log:{self.table}:",
                                                   "name": params["name"]})
                cur = conn.execute(sql[name], params)
                return cur.fetchone() if fetch == "one" else cur.fetchall() if fetch else cur.rowcount

    def raw_log_append(self, name: str, blob: Any) -> int:
        return int(self._log_exec("log_append", {"name": name, "value": blob}, "one", True)[0])

    def raw_log_read(self, name: str, after: int, limit: int | None, desc: bool = False
                     ) -> list[tuple[int, Any]]:
        rows = self._log_exec("log_read_desc" if desc else "log_read",
                              {"name": name, "after": after, "limit": limit}, "all")
        return [(int(seq), bytes(value)) for seq, value in rows]

    def raw_log_read_desc(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        return self.raw_log_read(name, after, limit, True)

    def raw_log_len(self, name: str) -> int:
        return int(self._log_exec("log_len", {"name": name}, "one")[0])

    def raw_log_delete(self, name: str) -> bool:
        return int(self._log_exec("log_delete", {"name": name}, None)) > 0

    def raw_log_names(self, prefix: str) -> list[str]:
        rows = self._log_exec("log_names", {"lo": prefix, "hi": prefix_upper_bound(prefix)}, "all")
        return [n for (n,) in rows]

    def open_meta(self) -> "PostgresStore":
        # Same pool, its own table.
        meta = copy.copy(self)
        meta.__dict__.pop("_meta_store", None)
        meta.table = f"{self.table}_meta"
        meta.queries = Queries(meta.table, self._clock, self.queries.last_purge)
        meta._ready = False
        meta._ready_lock = threading.Lock()
        meta.serializer = None
        meta.max_entries = None  # locks are never evicted
        meta.close = lambda: None  # type: ignore[method-assign]  # the pool is this store's
        return meta

    def raw_snapshot(self, keys: list[str]) -> list[tuple[str, Any, float | None]]:
        now = self._clock()
        with self.connection() as conn:
            rows = conn.execute(self.queries.sql["snapshot"], {"keys": keys, "now": now}).fetchall()
        found = {k: (bytes(v), None if e is None else max(float(e) - now, 0.001)) for k, v, e in rows}
        return [(key, *found.get(key, (MISSING, None))) for key in keys]

    def drop_table(self) -> None:
        """Drop the table and everything in it, with its logs and locks (tests, migrations)."""
        with self.connection() as conn:
            conn.execute(self.queries.sql["drop"])
            for sibling in (f"{self.table}_log", f"{self.table}_meta", f"{self.table}_cap"):
                conn.execute(f'DROP TABLE IF EXISTS "{sibling}"')
            for function in ("stm", "add", "del"):
                conn.execute(f'DROP FUNCTION IF EXISTS "{self.table}_{function}"()')
        self._ready = False
        self._log_ready = False

    # -- restores: everything replaced in one transaction ---------------------------------------------

    def raw_replace_all(self, rows: Any, logs: Any) -> None:
        import datetime as dt

        if logs is not None:
            self.raw_log_len("")  # creates the log table on first use
        t, lt, now = f'"{self.table}"', f'"{self.table}_log"', self._clock()
        at = lambda ttl: None if ttl is None else dt.datetime.fromtimestamp(  # noqa: E731
            now + ttl, dt.timezone.utc)
        try:
            with self.connection() as conn, conn.transaction():
                # Writers wait for the new contents; readers see the old ones until COMMIT.
                conn.execute(f"LOCK TABLE {t}{', ' + lt if logs is not None else ''} IN EXCLUSIVE MODE")
                conn.execute(f"DELETE FROM {t}")
                with conn.cursor().copy(f"COPY {t} (key, value, expires_at) FROM STDIN") as copy:
                    for key, blob, ttl in rows:
                        copy.write_row((key, blob, at(ttl)))
                if logs is not None:
                    conn.execute(f"DELETE FROM {lt}")
                    with conn.cursor().copy(f"COPY {lt} (name, seq, value) FROM STDIN") as copy:
                        for name, blobs in logs:
                            for seq, blob in enumerate(blobs, 1):
                                copy.write_row((name, seq, blob))
        except self.data_errors as exc:
            from ...errors import InvalidKeyError

            raise InvalidKeyError(f"PostgreSQL table {self.table!r} cannot hold a key or log name "
                                  f"being restored ({exc}); nothing was changed") from exc

    def close(self) -> None:
        self.pool.close()
