"""PostgresStore's transaction commits: before-images under row locks, commit markers, and a
commit journal that every machine sharing the database sees.

:class:`CommitMarks` (mixed into the store) reads the before-images of a transaction's writes
with their rows locked, and settles a commit whose ``COMMIT`` reply was lost from the marker
row the transaction inserted (``tx:<token>`` in ``<table>_meta``).

When every durable store a transaction writes is a server (PostgreSQL, Redis), a record in a
local folder is no use to another machine: a committer killed on machine A would stay
half-applied for machine B until A opened a manager again. Such a commit is recorded in the
PostgreSQL store's ``<table>_meta`` table instead (key ``journal:<token>``), inserted before any
store's writes become visible. The committer's liveness is a session-level advisory lock, held
on a connection of its own from before the insert until the commit is over: it dies with that
connection, whichever machine the process ran on. The PostgreSQL part of the commit deletes the
record in its own transaction (it commits after Redis), so "record gone" and "committed" are
one step. Any manager that opens, and every running one within ``journal.recover_interval``
(:meth:`TableJournal.recover`, called by the local journal's recovery), undoes a record whose
lock it can take, exactly as the local journal does.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from ..._commit import Before
from ...errors import StoreUnavailableError
from ...journal import RecordPart, pack_record, undo_record
from ...store import MISSING, PersistenceStore

__all__ = ["CommitMarks", "TableJournal", "marker_key", "record_key"]

_PREFIX = "journal:"
_LOCK = "SELECT pg_advisory_lock(hashtextextended(%s, 0))"
_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended(%s, 0))"


def record_key(token: str) -> str:
    """The row of a commit's record in the ``<table>_meta`` table."""
    return _PREFIX + token


class TableJournal:
    """Commit records of transactions over server stores, in ``store``'s meta table."""

    def __init__(self, store: Any) -> None:  # a PostgresStore (it imports this module)
        self.store = store
        self.meta = f'"{store.table}_meta"'
        self._table_seen = False  # the meta table exists (known once a query found it)

    def _lock_name(self, token: str) -> str:
        return f"kvstore-tx:{self.store.table}:{token}"

    def begin(self, token: str, parts: list[RecordPart]) -> Any:
        """Lock the commit's name for this session, then insert its record (committed)."""
        self.store.meta.ensure_table()
        session = self.store.connection()
        conn = session.__enter__()
        try:
            conn.execute(_LOCK, (self._lock_name(token),))
            conn.execute(f"INSERT INTO {self.meta} (key, value) VALUES (%s, %s)",
                         (record_key(token), pack_record(token, parts)))
        except BaseException as exc:
            session.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return token, session, conn

    def end(self, handle: Any) -> None:
        """The commit is over: its record is gone (deleted by the PostgreSQL part's COMMIT, or
        here when it was undone); the lock is released with it."""
        token, session, conn = handle
        try:
            conn.execute(f"DELETE FROM {self.meta} WHERE key = %s", (record_key(token),))
        except Exception:  # the record of an undone commit: recovery finds nothing to undo
            pass
        self.release(handle)

    def release(self, handle: Any) -> None:
        """Keep the record (in doubt); release the lock, so any manager can settle it."""
        token, session, conn = handle
        try:
            conn.execute(_UNLOCK, (self._lock_name(token),))
        except Exception:  # a broken connection: the pool drops it, and the lock with it
            pass
        session.__exit__(None, None, None)

    def recover(self, stores: Mapping[str, PersistenceStore],
                on_error: Callable[[BaseException], None] | None, left: list[Any],
                seen: set[str] | None = None) -> int:
        """Undo the records whose committer is gone (its lock is free); returns how many, and
        adds every record's token to ``seen``. One indexed query when there is none.
        Waits at most a second for a connection (a manager opening while PostgreSQL is down
        must not hang): StoreUnavailableError then, and the next pass or transaction tries
        again."""
        import psycopg

        pool = self.store.pool
        try:
            conn = pool.getconn(timeout=1.0)
        except self.store.pool_timeout_error as exc:
            raise StoreUnavailableError(f"PostgreSQL at {self.store.describe()} is "
                                        "unavailable: no connection within 1s") from exc
        try:
            if not self._table_seen:
                # Until the table exists (a committer creates it before its first record), ask
                # the catalogue: a running manager's passes must not log an error every time.
                row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (self.meta,)).fetchone()
                if row is None or not row[0]:
                    return 0
                self._table_seen = True
            keys = [k for (k,) in conn.execute(
                f"SELECT key FROM {self.meta} WHERE key >= %s AND key < %s",
                (_PREFIX, _PREFIX[:-1] + ";")).fetchall()]
        except psycopg.errors.UndefinedTable:  # dropped meanwhile
            self._table_seen = False
            return 0
        except psycopg.Error as exc:
            raise StoreUnavailableError(f"PostgreSQL: {exc}") from exc
        finally:
            pool.putconn(conn)
        undone = 0
        for key in keys:
            token = key[len(_PREFIX):]
            if seen is not None:
                seen.add(token)
            with self.store.connection() as conn:
                if not conn.execute(_TRY_LOCK, (self._lock_name(token),)).fetchone()[0]:
                    continue  # its committer is alive (on this machine or another)
                try:
                    # The row stays locked while it is undone: a committer that is still alive
                    # (only its journal connection died) waits, then finds it gone and aborts.
                    with conn.transaction():
                        row = conn.execute(f"SELECT value FROM {self.meta} WHERE key = %s "
                                           "FOR UPDATE", (key,)).fetchone()
                        if row is not None and undo_record(bytes(row[0]), stores, on_error):
                            conn.execute(f"DELETE FROM {self.meta} WHERE key = %s", (key,))
                            undone += 1
                            if token in left:
                                left.remove(token)
                finally:
                    conn.execute(_UNLOCK, (self._lock_name(token),))
        return undone


def marker_key(token: str) -> str:
    """The marker row of a transaction's commit, in the ``<table>_meta`` table."""
    return f"tx:{token}"


class CommitMarks:
    """Mixed into :class:`~kvstore.stores.postgres.PostgresStore`: what its ``raw_commit``
    needs for transactions, and what the journals ask it."""

    # Provided by PostgresStore.
    table: str
    dsn: str
    meta: PersistenceStore

    def connection(self) -> Any:
        raise NotImplementedError

    def _where(self) -> str:
        from ...config import mask_secrets

        return f"PostgreSQL at {mask_secrets(self.dsn)}"

    def _mark(self, conn: Any, before: Before) -> None:
        """Insert the commit's marker row, in the transaction on ``conn``."""
        conn.execute(f'INSERT INTO "{self.table}_meta" (key, value) VALUES (%(key)s, \'\')',
                     {"key": marker_key(before.token)})
        before.marked = True

    def _take_record(self, conn: Any, before: Before) -> None:
        """Delete the commit's shared journal record in its own transaction (so "committed"
        and "record gone" are one step); refuse when a recovery took it meanwhile (this
        committer's journal connection died, so the commit is being undone)."""
        if conn.execute(f'DELETE FROM "{self.table}_meta" WHERE key = %(key)s RETURNING 1',
                        {"key": record_key(before.token)}).fetchone() is None:
            raise StoreUnavailableError(f"{self._where()}: this commit's journal record was "
                                        "recovered meanwhile; nothing was written")

    def _settle_commit(self, token: str, lost: BaseException) -> None:
        """After COMMIT's reply was lost: returns when the transaction committed, raises
        StoreUnavailableError when it did not (``in_doubt = True`` when that cannot be told)."""
        try:
            applied = self._committed(token)
        except StoreUnavailableError as exc:
            doubt = StoreUnavailableError(
                f"{self._where()}: the reply to COMMIT was lost ({lost}) and it "
                f"could not be asked whether the transaction committed ({exc})")
            doubt.in_doubt = True  # type: ignore[attr-defined]
            raise doubt from lost
        if not applied:
            raise StoreUnavailableError(f"{self._where()}: the connection was "
                                        f"lost at COMMIT ({lost}); nothing was written") from lost

    def _committed(self, token: str) -> bool:
        """Whether the transaction that inserted the marker of ``token`` committed. Inserting
        the same key waits until that transaction is over (a unique index), then either
        conflicts (it committed) or succeeds (it did not, and never will): that insert is
        rolled back."""
        import psycopg

        with self.connection() as conn:
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '10s'")
                row = conn.execute(f'INSERT INTO "{self.table}_meta" (key, value) VALUES '
                                   "(%(key)s, '') ON CONFLICT (key) DO NOTHING RETURNING 1",
                                   {"key": marker_key(token)}).fetchone()
                raise psycopg.Rollback()  # a tombstone is not needed: that transaction is over
        return row is None

    def raw_outcome(self, token: str, keys: list[str]) -> list[tuple[str, Any, float | None]] | None:
        # The images are in the journal's record: [] says "it committed".
        return [] if self._committed(token) else None

    shares_data = True

    def shared_journal(self) -> Any:
        journal = self.__dict__.get("_table_journal")
        if journal is None:
            journal = self.__dict__["_table_journal"] = TableJournal(self)
        return journal

    def raw_forget(self, token: str) -> None:
        try:
            with self.connection() as conn:
                conn.execute(f'DELETE FROM "{self.table}_meta" WHERE key = %(key)s',
                             {"key": marker_key(token)})
        except StoreUnavailableError:  # a row left behind is harmless; the next one is new
            pass

    def _locked_images(self, conn: Any, keys: list[str], now: float
                       ) -> list[tuple[str, Any, float | None]]:
        """What ``keys`` hold, read with their rows locked until this transaction ends, so no
        plain save can land between this read and the commit. A key without a row gets an
        expired placeholder row (this transaction's own, overwritten or deleted by its writes):
        a save racing to create it waits for the commit, and one that created it first is
        locked and read on the next round."""
        t = f'"{self.table}"'
        found: dict[str, tuple[Any, float | None]] = {}
        pending = sorted(keys)
        while pending:
            for key, value, exp in conn.execute(
                    f"SELECT key, value, EXTRACT(EPOCH FROM expires_at)::float8 FROM {t} "
                    "WHERE key = ANY(%(keys)s) ORDER BY key FOR UPDATE", {"keys": pending}):
                live = exp is None or exp > now
                found[key] = (bytes(value), None if exp is None else max(exp - now, 0.001)) \
                    if live else (MISSING, None)
            pending = [k for k in pending if k not in found]
            if pending:
                for (key,) in conn.execute(
                        f"INSERT INTO {t} (key, value, expires_at) SELECT k, ''::bytea, "
                        "to_timestamp(0) FROM unnest(%(keys)s::text[]) AS u(k) "
                        "ON CONFLICT (key) DO NOTHING RETURNING key", {"keys": pending}):
                    found[key] = (MISSING, None)
                pending = [k for k in pending if k not in found]
        return [(key, *found[key]) for key in keys]
