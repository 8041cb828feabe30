"""A commit journal that every machine sharing a PostgreSQL database sees.

When every durable store a transaction writes is a server (PostgreSQL, Redis), a record in a
local folder is no use to another machine: a committer killed on machine A would stay
half-applied for machine B until A opened a manager again. Such a commit is recorded in the
PostgreSQL store's ``<table>_meta`` table instead (key ``journal:<token>``), inserted before any
store's writes become visible. The committer's liveness is a session-level advisory lock, held
on a connection of its own from before the insert until the commit is over: it dies with that
connection, whichever machine the process ran on. The PostgreSQL part of the commit deletes the
record in its own transaction (it commits after Redis), so "record gone" and "committed" are
one step. Any manager that opens (:meth:`TableJournal.recover`, called by the local journal's
recovery) undoes a record whose lock it can take, exactly as the local journal does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..journal import RecordPart, pack_record, undo_record
from ..store import PersistenceStore

if TYPE_CHECKING:
    from .postgres import PostgresStore

__all__ = ["TableJournal", "record_key"]

_PREFIX = "journal:"
_LOCK = "SELECT pg_advisory_lock(hashtextextended(%s, 0))"
_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended(%s, 0))"


def record_key(token: str) -> str:
    """The row of a commit's record in the ``<table>_meta`` table."""
    return _PREFIX + token


class TableJournal:
    """Commit records of transactions over server stores, in ``store``'s meta table."""

    def __init__(self, store: "PostgresStore") -> None:
        self.store = store
        self._meta = f'"{store.table}_meta"'

    def _lock_name(self, token: str) -> str:
        return f"kvstore-tx:{self.store.table}:{token}"

    def begin(self, token: str, parts: list[RecordPart]) -> Any:
        """Lock the commit's name for this session, then insert its record (committed)."""
        self.store._meta.ensure_table()  # type: ignore[attr-defined]
        session = self.store._conn()
        conn = session.__enter__()
        try:
            conn.execute(_LOCK, (self._lock_name(token),))
            conn.execute(f"INSERT INTO {self._meta} (key, value) VALUES (%s, %s)",
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
            conn.execute(f"DELETE FROM {self._meta} WHERE key = %s", (record_key(token),))
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
                on_error: Callable[[BaseException], None] | None, left: list[Any]) -> int:
        """Undo the records whose committer is gone (its lock is free); returns how many."""
        self.store._meta.ensure_table()  # type: ignore[attr-defined]
        with self.store._conn() as conn:
            keys = [k for (k,) in conn.execute(
                f"SELECT key FROM {self._meta} WHERE key >= %s AND key < %s",
                (_PREFIX, _PREFIX[:-1] + ";")).fetchall()]
        undone = 0
        for key in keys:
            token = key[len(_PREFIX):]
            with self.store._conn() as conn:
                if not conn.execute(_TRY_LOCK, (self._lock_name(token),)).fetchone()[0]:
                    continue  # its committer is alive (on this machine or another)
                try:
                    # The row stays locked while it is undone: a committer that is still alive
                    # (only its journal connection died) waits, then finds it gone and aborts.
                    with conn.transaction():
                        row = conn.execute(f"SELECT value FROM {self._meta} WHERE key = %s "
                                           "FOR UPDATE", (key,)).fetchone()
                        if row is not None and undo_record(bytes(row[0]), stores, on_error):
                            conn.execute(f"DELETE FROM {self._meta} WHERE key = %s", (key,))
                            undone += 1
                            if token in left:
                                left.remove(token)
                finally:
                    conn.execute(_UNLOCK, (self._lock_name(token),))
        return undone
