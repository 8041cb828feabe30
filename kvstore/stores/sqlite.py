"""SQLiteStore: one table in a WAL-mode SQLite file, safe across threads and processes.

Schema (``table`` defaults to ``kvstore``)::

    kvstore(key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL) WITHOUT ROWID
    index on expires_at WHERE expires_at IS NOT NULL
    kvstore_meta: the same shape, for locks (see ``PersistenceStore.lock``)

``WITHOUT ROWID`` stores rows in the primary-key b-tree itself, which halves the work of a
write. Each thread gets its own connection, closed when the thread ends (see
:mod:`~kvstore.stores.sqlite_conn`) and reopened after ``fork``. Single statements run in
autocommit; anything that reads then writes (``incr``, ``clear``, batches, transactions) runs
under ``BEGIN IMMEDIATE``, which takes the write lock up front, so a reader never has to upgrade
to a writer and ``busy_timeout`` can always wait instead of failing with "database is locked".
Set-if-absent and compare-and-swap are one statement each (an upsert whose update applies only
to an expired row; an ``UPDATE ... WHERE value = ?``), atomic under SQLite's write lock.

Durability (``synchronous``): ``NORMAL`` (default) with WAL survives a crash of the process;
``FULL`` also survives a power loss or OS crash, at the cost of an fsync per commit.

A file this process cannot write (a read-only mount, a read-only or immutable file or folder)
opens read-only: reads work, writes raise :class:`~kvstore.StoreUnavailableError` naming the file.
"""

from __future__ import annotations

import copy
import os
import re
import sqlite3
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from .._fs import make_private_dirs
from .._commit import Before
from ..errors import ConfigError, CorruptDataError, StoreUnavailableError
from ..serializers import SerializerSpec
from ..store import (KEEP, MISSING, TTL, Check, Op, PersistenceStore, check_max_entries, conflict,
                     prefix_upper_bound, same_blob)
from .sqlite_conn import Connections, connect, is_read_only

__all__ = ["SQLiteStore"]

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_PURGE_EVERY = 1.0      # seconds between purges of expired rows (per store object)
_PURGE_BATCH = 256      # rows per purge: small, so no write waits long on it
_PAGE = 1000            # keys() fetches this many keys per query
_MAX_PARAMS = 500       # keys per `IN (...)` query

_LIVE = "(expires_at IS NULL OR expires_at > ?)"


class _Queries:
    """The statements for one table (a checked identifier), built once per store."""

    def __init__(self, table: str) -> None:
        t = f'"{table}"'
        self.schema = (
            f"CREATE TABLE IF NOT EXISTS {t} (key TEXT PRIMARY KEY, value BLOB NOT NULL, "
            "expires_at REAL) WITHOUT ROWID",
            f'CREATE INDEX IF NOT EXISTS "{table}_expires" ON {t}(expires_at) '
            "WHERE expires_at IS NOT NULL",
        )
        self.get = f"SELECT value, expires_at FROM {t} WHERE key = ?"
        self.set = f"INSERT OR REPLACE INTO {t} (key, value, expires_at) VALUES (?, ?, ?)"
        self.delete = f"DELETE FROM {t} WHERE key = ? RETURNING expires_at"
        self.delete_any = f"DELETE FROM {t} WHERE key = ?"
        self.expiry = f"SELECT expires_at FROM {t} WHERE key = ?"
        self.purge = (f"DELETE FROM {t} WHERE key IN (SELECT key FROM {t} "
                      f"WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT {_PURGE_BATCH})")
        # Insert, or replace only a row that has expired: (key, value, expires_at, now).
        self.add = (f"INSERT INTO {t} AS cur (key, value, expires_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                    "expires_at = excluded.expires_at "
                    "WHERE cur.expires_at IS NOT NULL AND cur.expires_at <= ?")
        # Compare-and-swap on a live row: (..., key, expected, now).
        self.cas = f"UPDATE {t} SET value = ?, expires_at = ? WHERE key = ? AND value = ? AND {_LIVE}"
        self.cas_keep = f"UPDATE {t} SET value = ? WHERE key = ? AND value = ? AND {_LIVE}"
        self.cas_delete = f"DELETE FROM {t} WHERE key = ? AND value = ? AND {_LIVE}"
        self.touch = f"UPDATE {t} SET expires_at = ? WHERE key = ? AND {_LIVE}"
        self.set_keep = f"UPDATE {t} SET value = ? WHERE key = ?"  # the expiry stays
        self.table = t
        # The size bound (``max_entries``): a store number per row, a one-row table with the
        # count, the last number and the cap, kept by triggers, so every write path of every
        # process stamps, counts and evicts in the statement that writes (see _bound).
        bt = f'"{table}_cap"'
        self.bound_names = (f"{table}_cap", f"{table}_bound_insert", f"{table}_bound_update",
                            f"{table}_bound_delete")
        self.bound_schema = (
            f"CREATE TABLE IF NOT EXISTS {bt} (one INTEGER PRIMARY KEY CHECK (one = 1), "
            "n INTEGER NOT NULL, seq INTEGER NOT NULL, cap INTEGER NOT NULL)",
            f'CREATE INDEX IF NOT EXISTS "{table}_stored" ON {t}(stored)',
            f'CREATE TRIGGER IF NOT EXISTS "{table}_bound_insert" AFTER INSERT ON {t} BEGIN '
            f"UPDATE {bt} SET n = n + 1, seq = seq + 1; "
            f"UPDATE {t} SET stored = (SELECT seq FROM {bt}) WHERE key = NEW.key; "
            f"DELETE FROM {t} WHERE key IN (SELECT key FROM {t} ORDER BY stored "
            f"LIMIT max((SELECT n - cap FROM {bt}), 0)); END",
            f'CREATE TRIGGER IF NOT EXISTS "{table}_bound_update" AFTER UPDATE OF value ON {t} '
            f"BEGIN UPDATE {bt} SET seq = seq + 1; "
            f"UPDATE {t} SET stored = (SELECT seq FROM {bt}) WHERE key = NEW.key; END",
            f'CREATE TRIGGER IF NOT EXISTS "{table}_bound_delete" AFTER DELETE ON {t} BEGIN '
            f"UPDATE {bt} SET n = n - 1; END",
        )
        # Recount on (re)binding; evict down to the cap at once.
        self.bound_set = (f"INSERT OR REPLACE INTO {bt} (one, n, seq, cap) SELECT 1, count(*), "
                          f"coalesce(max(stored), 0), ? FROM {t}")
        self.bound_evict = (f"DELETE FROM {t} WHERE key IN (SELECT key FROM {t} ORDER BY stored "
                            f"LIMIT max((SELECT n - cap FROM {bt}), 0))")
        # Logs: one row per record, numbered per name (the primary key keeps them in order).
        lt = f'"{table}_log"'
        self.log_schema = (f"CREATE TABLE IF NOT EXISTS {lt} (name TEXT NOT NULL, seq INTEGER "
                           "NOT NULL, value BLOB NOT NULL, PRIMARY KEY (name, seq)) WITHOUT ROWID")
        self.log_append = (f"INSERT INTO {lt} (name, seq, value) SELECT ?1, coalesce(max(seq), 0) "
                           f"+ 1, ?2 FROM {lt} WHERE name = ?1 RETURNING seq")
        self.log_read = f"SELECT seq, value FROM {lt} WHERE name = ? AND seq > ? ORDER BY seq LIMIT ?"
        self.log_len = f"SELECT coalesce(max(seq), 0) FROM {lt} WHERE name = ?"
        self.log_delete = f"DELETE FROM {lt} WHERE name = ?"
        self.log_names = (f"SELECT DISTINCT name FROM {lt} WHERE name >= ? AND (? IS NULL OR name < ?) "
                          "ORDER BY name")


_OPEN_STORES: "weakref.WeakSet[SQLiteStore]" = weakref.WeakSet()
_INHERITED: list[sqlite3.Connection] = []  # a fork child's copies of its parent's connections


def _after_fork_in_child() -> None:
    # A SQLite connection must never be used across fork, not even to close it: the child
    # starts with no connections and keeps the parent's copies referenced, never touched.
    for store in list(_OPEN_STORES):
        _INHERITED.extend(store._connections.forget())
        store._local = threading.local()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _default_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("kvstore", appauthor=False)) / "kvstore.db"


class SQLiteStore(PersistenceStore):
    """Keys in a SQLite file.

    Args:
        path: the database file (default: ``kvstore.db`` in the platform's user data folder).
            Created with mode 0600, its folder with 0700.
        ttl_default: TTL for ``save`` without one (None: permanent).
        serializer: format name or :class:`~kvstore.Serializer` (default json).
        max_entries: keep at most this many keys, evicting the least recently stored (a write
            of a key's value counts as storing it; reads do not). None: no bound. The bound
            belongs to the table, enforced in every writer's statement (see ``_bound``).
        synchronous: ``"NORMAL"`` survives a process crash; ``"FULL"`` also a power loss.
        busy_timeout: seconds a writer waits for another process's write lock before
            :class:`StoreUnavailableError`.
        clock: time source for expiry (seconds since the epoch); inject one in tests.

    >>> with SQLiteStore(path="/tmp/kv-doc.db") as db:   # doctest: +SKIP
    ...     db.save("user:1", {"name": "Ann"}, ttl="7d")
    """

    durable = True

    def __init__(self, path: str | os.PathLike[str] | None = None, ttl_default: TTL = None,
                 serializer: SerializerSpec = "json", *, secret: bytes | str | None = None,
                 table: str = "kvstore", max_entries: int | None = None,
                 synchronous: str = "NORMAL", busy_timeout: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(ttl_default=ttl_default, serializer=serializer, secret=secret)
        self.max_entries = check_max_entries(max_entries)
        sync = synchronous.upper() if isinstance(synchronous, str) else synchronous
        if sync not in _SYNCHRONOUS:
            raise ConfigError(f"synchronous: {synchronous!r} is not one of {', '.join(_SYNCHRONOUS)}")
        if not isinstance(table, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,57}", table):
            raise ConfigError(f"table: {table!r} is not a plain table name")
        self.table = table
        self._q = _Queries(table)
        self.path = Path(os.path.expanduser(os.fspath(path))) if path is not None else _default_path()
        self.synchronous = sync
        self.busy_timeout = float(busy_timeout)
        self._clock = clock
        self._local = threading.local()
        self._connections = Connections()
        self._last_purge = 0.0
        self._closed = False
        _OPEN_STORES.add(self)
        #: True when the file cannot be written here: reads work, writes raise.
        self.read_only = self._prepare_file()
        self._log_ready = self.read_only  # nothing to create (see _shadow_missing_tables)
        self._create_table()

    def _create_table(self) -> None:
        if self.read_only:
            return
        with self._errors():
            conn = self._conn()
            with self._write(conn):
                for statement in self._q.schema:
                    conn.execute(statement)
                self._bound(conn)

    def _bound(self, conn: sqlite3.Connection) -> None:
        """Apply ``max_entries`` to the table (in the caller's write transaction).

        The bound belongs to the table: the last store to open it sets it, and one opened
        without ``max_entries`` removes it (nothing is evicted that this store was not told to
        evict). Rows stored before a bound existed are the first to go.
        """
        q = self._q
        bound, *triggers = q.bound_names
        exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                              (bound,)).fetchone() is not None
        if self.max_entries is None:
            if exists:
                for trigger in triggers:
                    conn.execute(f'DROP TRIGGER IF EXISTS "{trigger}"')
                conn.execute(f'DROP TABLE "{bound}"')
            return
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({q.table})")]
        if "stored" not in columns:  # a table from before bounds: migrate it in place
            conn.execute(f"ALTER TABLE {q.table} ADD COLUMN stored INTEGER")
        for statement in q.bound_schema:
            conn.execute(statement)
        if exists:
            conn.execute(f'UPDATE "{bound}" SET cap = ?', (self.max_entries,))
        else:
            conn.execute(q.bound_set, (self.max_entries,))
        conn.execute(q.bound_evict)

    def describe(self) -> str:
        table = "" if self.table == "kvstore" else f", table={self.table!r}"
        bound = "" if self.max_entries is None else f", max_entries={self.max_entries}"
        return f"path={str(self.path)!r}{table}{bound}"

    def lock_id(self) -> str:
        return f"sqlite:{self.path}"

    # -- connections -------------------------------------------------------------------------------

    def _prepare_file(self) -> bool:
        """Create the file if missing; True when it exists but cannot be written here."""
        try:
            if self.path.exists():
                return is_read_only(self.path)
            make_private_dirs(self.path.parent)
            # Created here, owner-only, before SQLite would create it with the umask's mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise StoreUnavailableError(f"SQLite file {self.path}: {exc.strerror or exc}") from exc
        return False

    def _conn(self) -> sqlite3.Connection:
        try:
            return self._local.conn
        except AttributeError:
            pass
        # First use in this thread (or in a child after fork, which gets a fresh `_local`).
        conn = connect(self.path, self.busy_timeout, self.synchronous, self.read_only)
        if self.read_only:
            self._shadow_missing_tables(conn)
        return self._connections.adopt(self._local, conn)

    def _shadow_missing_tables(self, conn: sqlite3.Connection) -> None:
        # A read-only file without this store's tables (or its newer log table) reads as empty:
        # empty TEMP tables of the same names stand in, then query_only refuses every write.
        meta = f"{self.table}_meta"
        creates = {self.table: self._q.schema[0], meta: _Queries(meta).schema[0],
                   f"{self.table}_log": self._q.log_schema}
        for table, statement in creates.items():
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                            (table,)).fetchone() is None:
                conn.execute(statement.replace("CREATE TABLE", "CREATE TEMP TABLE", 1))
        conn.execute("PRAGMA query_only = ON")

    def _translate(self, exc: sqlite3.Error) -> Exception:
        """kvstore's error for a sqlite3 one: locked -> unavailable, damaged -> corrupt."""
        text = str(exc)
        if isinstance(exc, sqlite3.OperationalError):
            if "locked" in text or "busy" in text:
                return StoreUnavailableError(
                    f"SQLite file {self.path} stayed locked by another writer for "
                    f"{self.busy_timeout:g}s: {text}")
            if "readonly" in text:
                return StoreUnavailableError(f"SQLite file {self.path} is read-only here "
                                             f"(reads work, writes are refused): {text}")
            return StoreUnavailableError(f"SQLite file {self.path}: {text}")
        if isinstance(exc, sqlite3.DatabaseError):
            return CorruptDataError(f"SQLite file {self.path} is damaged: {exc}")
        return StoreUnavailableError(f"SQLite file {self.path}: {text}")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    @contextmanager
    def _write(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """One write transaction, like diskcache's ``transact()``: all of it or none of it."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _purge(self, conn: sqlite3.Connection, now: float) -> None:
        # Never a full scan on every call: a small batch through the index, at most once a second.
        self._last_purge = now
        conn.execute(self._q.purge, (now,))

    # -- byte-level operations -----------------------------------------------------------------------

    # The hot paths catch errors inline: a generator-based context manager costs about as much
    # as the primary-key lookup itself.
    def raw_get(self, key: str) -> Any:
        try:
            row = self._conn().execute(self._q.get, (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        if row is None or (row[1] is not None and row[1] <= self._clock()):
            return MISSING
        return row[0]

    def _live_rows(self, keys: list[str], now: float) -> list[tuple[str, Any, float | None]]:
        """``(key, value, expires_at)`` of the live keys among ``keys``, 500 per query."""
        rows: list[tuple[str, Any, float | None]] = []
        with self._errors():
            conn = self._conn()
            for i in range(0, len(keys), _MAX_PARAMS):
                chunk = keys[i:i + _MAX_PARAMS]
                marks = ",".join("?" * len(chunk))
                rows.extend(row for row in conn.execute(
                    f"SELECT key, value, expires_at FROM {self._q.table} WHERE key IN ({marks})",
                    chunk) if row[2] is None or row[2] > now)
        return rows

    def raw_get_many(self, keys: list[str]) -> dict[str, Any]:
        return {key: value for key, value, _ in self._live_rows(keys, self._clock())}

    def raw_set(self, key: str, blob: Any, ttl: float | None) -> None:
        now = self._clock()
        try:
            conn = self._conn()
            conn.execute(self._q.set, (key, blob, None if ttl is None else now + ttl))
            if now - self._last_purge >= _PURGE_EVERY:
                self._purge(conn, now)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    def raw_set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        exp = None if ttl is None else self._clock() + ttl
        with self._errors():
            conn = self._conn()
            with self._write(conn):
                conn.executemany(self._q.set, [(key, blob, exp) for key, blob in items])

    def raw_put_rows(self, rows: list[tuple[str, Any, float | None]]) -> None:
        now = self._clock()
        with self._errors():
            conn = self._conn()
            with self._write(conn):
                conn.executemany(self._q.set, [(k, b, None if t is None else now + t)
                                               for k, b, t in rows])

    def raw_delete(self, key: str) -> bool:
        with self._errors():
            row = self._conn().execute(self._q.delete, (key,)).fetchone()
        return row is not None and (row[0] is None or row[0] > self._clock())

    def raw_delete_many(self, keys: list[str]) -> int:
        now = self._clock()
        live = 0
        with self._errors():
            conn = self._conn()
            with self._write(conn):
                for key in keys:
                    row = conn.execute(self._q.delete, (key,)).fetchone()
                    live += row is not None and (row[0] is None or row[0] > now)
        return live

    def raw_exists(self, key: str) -> bool:
        try:
            row = self._conn().execute(self._q.expiry, (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        return row is not None and (row[0] is None or row[0] > self._clock())

    def raw_ttl(self, key: str) -> float | None:
        try:
            row = self._conn().execute(self._q.expiry, (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        now = self._clock()
        if row is None or row[0] is None or row[0] <= now:
            return None
        return float(row[0] - now)

    def raw_incr(self, key: str, amount: int, ttl: float | None) -> int:
        # Read, add, write under BEGIN IMMEDIATE: the write lock is held across the whole
        # read-modify-write, so increments from other threads and processes are never lost.
        q = self._q
        with self._errors():
            conn = self._conn()
            with self._write(conn):
                now = self._clock()
                row = conn.execute(q.get, (key,)).fetchone()
                live = row is not None and (row[1] is None or row[1] > now)
                new, blob, exp = self._next_count(key, row[0] if live else MISSING,
                                                  row[1] if live else None, now, amount, ttl)
                conn.execute(q.set, (key, blob, exp))
        return new

    def raw_add(self, key: str, blob: Any, ttl: float | None) -> bool:
        now = self._clock()
        with self._errors():
            cur = self._conn().execute(self._q.add, (key, blob, None if ttl is None else now + ttl,
                                                     now))
        return cur.rowcount == 1

    def raw_cas(self, key: str, expected: Any, new: Any, ttl: Any) -> bool:
        now = self._clock()
        q = self._q
        with self._errors():
            conn = self._conn()
            if new is MISSING:
                cur = conn.execute(q.cas_delete, (key, expected, now))
            elif ttl is KEEP:
                cur = conn.execute(q.cas_keep, (new, key, expected, now))
            else:
                cur = conn.execute(q.cas, (new, None if ttl is None else now + ttl, key,
                                           expected, now))
        return cur.rowcount == 1

    def raw_touch(self, key: str, ttl: float | None) -> bool:
        now = self._clock()
        with self._errors():
            cur = self._conn().execute(self._q.touch, (None if ttl is None else now + ttl, key, now))
        return cur.rowcount == 1

    def _range(self, prefix: str, after: str | None = None) -> tuple[str, list[Any]]:
        """The WHERE clause of keys with ``prefix`` (and sorting after ``after``) as ONE index
        range: two lower bounds (``key >= p AND key > a``) make SQLite seek to the first and
        scan to the second, so paging a big table would cost O(n) per page."""
        hi = prefix_upper_bound(prefix)
        low, lo = ("key > ?", after) if after is not None and after >= prefix else ("key >= ?", prefix)
        if hi is None:
            return low, [lo]
        return f"{low} AND key < ?", [lo, hi]

    def raw_keys(self, prefix: str, after: str | None = None) -> Iterator[str]:
        # Paged by key, one short query per page: a million keys stream with flat memory and
        # no read transaction held open while the caller works.
        while True:
            now = self._clock()
            where, params = self._range(prefix, after)
            with self._errors():
                rows = self._conn().execute(
                    f"SELECT key, expires_at FROM {self._q.table} WHERE {where} "
                    f"ORDER BY key LIMIT {_PAGE}", params).fetchall()
            for key, exp in rows:
                if (exp is None or exp > now) and key.startswith(prefix):
                    yield key
            if len(rows) < _PAGE:
                return
            after = rows[-1][0]

    def raw_rows(self, prefix: str, after: str | None, limit: int) -> list[tuple[str, Any, float | None]]:
        now = self._clock()
        where, params = self._range(prefix, after)
        with self._errors():
            rows = self._conn().execute(
                f"SELECT key, value, expires_at FROM {self._q.table} WHERE {where} "
                f"ORDER BY key LIMIT {int(limit)}", params).fetchall()
        # The last row is returned even when expired, so the caller's next page starts after it.
        return [(k, v if e is None or e > now else MISSING, None if e is None else e - now)
                for k, v, e in rows]

    def raw_keys_after(self, prefix: str, start_after: str) -> Iterator[str]:
        return self.raw_keys(prefix, start_after)

    def raw_clear(self, prefix: str) -> int:
        where, params = self._range(prefix)
        with self._errors():
            conn = self._conn()
            with self._write(conn):
                now = self._clock()
                live = conn.execute(f"SELECT count(*) FROM {self._q.table} WHERE {where} AND "
                                    f"{_LIVE}", [*params, now]).fetchone()[0]
                conn.execute(f"DELETE FROM {self._q.table} WHERE {where}", params)
        return int(live)

    @contextmanager
    def raw_commit(self, ops: list[Op], checks: list[Check],
                    before: Before | None = None) -> Iterator[None]:
        # One BEGIN IMMEDIATE transaction: the checks, the before-images, the writes and the
        # caller's block run under SQLite's write lock; COMMIT at the end, ROLLBACK on any
        # exception.
        q = self._q
        with self._errors():
            conn = self._conn()
            with self._write(conn):
                now = self._clock()
                if checks:
                    found = {key: value for key, value, _ in
                             self._live_rows(list(dict.fromkeys(k for k, _ in checks)), now)}
                    for key, expected in checks:
                        if not same_blob(found.get(key, MISSING), expected):
                            raise conflict(key)
                if before is not None:  # under the lock: no other writer can come in between
                    before.images = self.raw_snapshot(list(dict.fromkeys(k for k, _, _ in ops)))
                for key, blob, ttl in ops:
                    if blob is MISSING:
                        conn.execute(q.delete_any, (key,))
                    elif ttl is KEEP:
                        conn.execute(q.set_keep, (blob, key))
                    else:
                        conn.execute(q.set, (key, blob, None if ttl is None else now + ttl))
                yield

    # -- logs ----------------------------------------------------------------------------------------

    def _log_conn(self) -> sqlite3.Connection:
        conn = self._conn()
        if not self.__dict__.get("_log_ready"):
            with self._write(conn):
                conn.execute(self._q.log_schema)
            self._log_ready = True
        return conn

    def raw_log_append(self, name: str, blob: Any) -> int:
        # One statement under BEGIN IMMEDIATE: the next number and the insert, atomically.
        with self._errors():
            conn = self._log_conn()
            with self._write(conn):
                return int(conn.execute(self._q.log_append, (name, blob)).fetchone()[0])

    def raw_log_read(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        with self._errors():
            return [(int(seq), bytes(value)) for seq, value in self._log_conn().execute(
                self._q.log_read, (name, after, -1 if limit is None else limit))]

    def raw_log_len(self, name: str) -> int:
        with self._errors():
            return int(self._log_conn().execute(self._q.log_len, (name,)).fetchone()[0])

    def raw_log_delete(self, name: str) -> bool:
        with self._errors():
            conn = self._log_conn()
            with self._write(conn):
                return conn.execute(self._q.log_delete, (name,)).rowcount > 0

    def raw_log_names(self, prefix: str) -> list[str]:
        hi = prefix_upper_bound(prefix)
        with self._errors():
            return [n for (n,) in self._log_conn().execute(self._q.log_names, (prefix, hi, hi))]

    def open_meta(self) -> "SQLiteStore":
        # Same file and connections (the sibling calls this store's _conn), its own table.
        meta = copy.copy(self)
        meta.__dict__.pop("_meta_store", None)
        meta.table = f"{self.table}_meta"
        meta._q = _Queries(meta.table)
        meta.serializer = None
        meta.max_entries = None  # locks are never evicted
        meta._conn = self._conn  # type: ignore[method-assign]
        meta._connections = Connections()  # closing the sibling closes nothing of the parent's
        meta._create_table()
        return meta

    def raw_snapshot(self, keys: list[str]) -> list[tuple[str, Any, float | None]]:
        now = self._clock()
        found = {key: (value, None if exp is None else exp - now)
                 for key, value, exp in self._live_rows(keys, now)}
        return [(key, *found.get(key, (MISSING, None))) for key in keys]

    # -- backups ---------------------------------------------------------------------------------------

    def backup_to(self, dest: str | os.PathLike[str]) -> Path:
        """A consistent copy of the database at ``dest``, through SQLite's online backup API
        (never a copy of a file being written)."""
        target = Path(dest)
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        with self._errors():
            out = sqlite3.connect(target)
            try:
                self._conn().backup(out)
                out.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            finally:
                out.close()
        return target

    def restore_from(self, src: str | os.PathLike[str]) -> None:
        """Replace the whole database with the SQLite file ``src`` (online backup API, so other
        connections see either the old or the new contents)."""
        with self._errors():
            source = sqlite3.connect(f"file:{os.fspath(src)}?mode=ro", uri=True)
            try:
                source.backup(self._conn())
            finally:
                source.close()

    # -- restores: everything replaced in one transaction ---------------------------------------------

    def raw_replace_all(self, rows: Any, logs: Any) -> None:
        q = self._q
        with self._errors():
            conn = self._log_conn() if logs is not None else self._conn()
            with self._write(conn):
                now = self._clock()
                conn.execute(f"DELETE FROM {q.table}")
                conn.executemany(q.set, ((k, b, None if t is None else now + t) for k, b, t in rows))
                if logs is not None:
                    lt = f'"{self.table}_log"'
                    conn.execute(f"DELETE FROM {lt}")
                    conn.executemany(f"INSERT INTO {lt} (name, seq, value) VALUES (?, ?, ?)",
                                     ((name, seq, blob) for name, blobs in logs
                                      for seq, blob in enumerate(blobs, 1)))

    def _replace_from_file(self, part: str | os.PathLike[str], table: str, logs: bool) -> None:
        """``_replace_all`` from table ``table`` (and its logs) of the SQLite file ``part``, in
        one transaction, no row passing through Python (restoring a SQLite backup part)."""
        q = self._q
        with self._errors():
            conn = self._log_conn() if logs else self._conn()
            conn.execute("ATTACH DATABASE ? AS kvstore_part", (os.fspath(part),))
            try:
                found = {n for (n,) in conn.execute("SELECT name FROM kvstore_part.sqlite_master")}
                with self._write(conn):
                    conn.execute(f"DELETE FROM {q.table}")
                    conn.execute(f"INSERT INTO {q.table} (key, value, expires_at) SELECT key, value, "
                                 f'expires_at FROM kvstore_part."{table}" WHERE {_LIVE}',
                                 (self._clock(),))
                    if logs:
                        lt = f'"{self.table}_log"'
                        conn.execute(f"DELETE FROM {lt}")
                        if f"{table}_log" in found:
                            conn.execute(f"INSERT INTO {lt} (name, seq, value) SELECT name, seq, "
                                         f'value FROM kvstore_part."{table}_log"')
            finally:
                conn.execute("DETACH DATABASE kvstore_part")

    def close(self) -> None:
        """Close every thread's connection. The store reopens connections if used again."""
        self._local = threading.local()
        self._connections.close_all()
