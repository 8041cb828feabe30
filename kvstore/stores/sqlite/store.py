"""SQLiteStore: one table in a WAL-mode SQLite file (see :mod:`kvstore.stores.sqlite`)."""

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

from ..._commit import Before
from ...errors import ConfigError
from ...serializers import SerializerSpec
from ...store import (KEEP, MISSING, TTL, Check, Op, PersistenceStore, check_max_entries, conflict,
                      prefix_upper_bound, same_blob)
from .connections import Connections, connect, prepare_file, translate
from .statements import LIVE, MAX_PARAMS, PAGE, PURGE_EVERY, Statements, key_range

__all__ = ["SQLiteStore"]

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

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
            belongs to the table, enforced in every writer's statement (see :meth:`~.statements.Statements.apply_bound`).
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
        self._q = Statements(table)
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
        self.read_only = prepare_file(self.path)
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
                self._q.apply_bound(conn, self.max_entries)

    def describe(self) -> str:
        table = "" if self.table == "kvstore" else f", table={self.table!r}"
        bound = "" if self.max_entries is None else f", max_entries={self.max_entries}"
        return f"path={str(self.path)!r}{table}{bound}"

    def lock_id(self) -> str:
        return f"sqlite:{self.path}"

    # -- connections -------------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        try:
            return self._local.conn
        except AttributeError:
            pass
        # First use in this thread (or in a child after fork, which gets a fresh `_local`).
        conn = connect(self.path, self.busy_timeout, self.synchronous, self.read_only)
        if self.read_only:
            self._q.shadow_missing_tables(conn)
        return self._connections.adopt(self._local, conn)

    def _translate(self, exc: sqlite3.Error) -> Exception:
        return translate(exc, self.path, self.busy_timeout)

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
            for i in range(0, len(keys), MAX_PARAMS):
                chunk = keys[i:i + MAX_PARAMS]
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
            if now - self._last_purge >= PURGE_EVERY:
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

    def raw_keys(self, prefix: str, after: str | None = None, desc: bool = False,
                 limit: int | None = None) -> Iterator[str]:
        # Paged by key, one short query per page: a million keys stream with flat memory and
        # no read transaction held open while the caller works. ``desc``: the same index read
        # backwards (ORDER BY key DESC), ``after`` then the key the pages start before.
        left = limit  # at most this many (None: all); no page longer than what is left
        while left is None or left > 0:
            page = PAGE if left is None else min(left, PAGE)
            now = self._clock()
            where, params = key_range(prefix, after, desc)
            with self._errors():
                rows = self._conn().execute(
                    f"SELECT key, expires_at FROM {self._q.table} WHERE {where} "
                    f"ORDER BY key{' DESC' if desc else ''} LIMIT {page}", params).fetchall()
            for key, exp in rows:
                if (exp is None or exp > now) and key.startswith(prefix):
                    left = None if left is None else left - 1
                    yield key
            if len(rows) < page:
                return
            after = rows[-1][0]

    def raw_rows(self, prefix: str, after: str | None, limit: int) -> list[tuple[str, Any, float | None]]:
        now = self._clock()
        where, params = key_range(prefix, after)
        with self._errors():
            rows = self._conn().execute(
                f"SELECT key, value, expires_at FROM {self._q.table} WHERE {where} "
                f"ORDER BY key LIMIT {int(limit)}", params).fetchall()
        # The last row is returned even when expired, so the caller's next page starts after it.
        return [(k, v if e is None or e > now else MISSING, None if e is None else e - now)
                for k, v, e in rows]

    def raw_keys_after(self, prefix: str, start_after: str) -> Iterator[str]:
        return self.raw_keys(prefix, start_after)

    def raw_keys_desc(self, prefix: str, start_before: str | None,
                      limit: int | None = None) -> Iterator[str]:
        return self.raw_keys(prefix, start_before, True, limit)

    def raw_clear(self, prefix: str) -> int:
        where, params = key_range(prefix)
        with self._errors():
            conn = self._conn()
            with self._write(conn):
                now = self._clock()
                live = conn.execute(f"SELECT count(*) FROM {self._q.table} WHERE {where} AND "
                                    f"{LIVE}", [*params, now]).fetchone()[0]
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

    def raw_log_read(self, name: str, after: int, limit: int | None, desc: bool = False
                     ) -> list[tuple[int, Any]]:
        with self._errors():
            return [(int(seq), bytes(value)) for seq, value in self._log_conn().execute(
                self._q.log_read_desc if desc else self._q.log_read,
                (name, after, -1 if limit is None else limit))]

    def raw_log_read_desc(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        return self.raw_log_read(name, after, limit, True)

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
        meta._q = Statements(meta.table)
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

    def replace_from_file(self, part: str | os.PathLike[str], table: str, logs: bool) -> None:
        """``raw_replace_all`` from table ``table`` (and its logs) of the SQLite file ``part``, in
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
                                 f'expires_at FROM kvstore_part."{table}" WHERE {LIVE}',
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
