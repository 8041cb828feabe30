"""SQLiteStore: one table in a WAL-mode SQLite file, safe across threads and processes.

Schema (``table`` defaults to ``kvstore``)::

    kvstore(key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL) WITHOUT ROWID
    index on expires_at WHERE expires_at IS NOT NULL
    kvstore_meta: the same shape, for locks (see ``PersistenceStore.lock``)

``WITHOUT ROWID`` stores rows in the primary-key b-tree itself, which halves the work of a
write. Each thread gets its own connection, closed when the thread ends (see
:mod:`~kvstore.stores.sqlite.connections`) and reopened after ``fork``. Single statements run in
autocommit; anything that reads then writes (``incr``, ``clear``, batches, transactions) runs
under ``BEGIN IMMEDIATE``, which takes the write lock up front, so a reader never has to upgrade
to a writer and ``busy_timeout`` can always wait instead of failing with "database is locked".
Set-if-absent and compare-and-swap are one statement each (an upsert whose update applies only
to an expired row; an ``UPDATE ... WHERE value = ?``), atomic under SQLite's write lock.

Durability (``synchronous``): ``NORMAL`` (default) with WAL survives a crash of the process;
``FULL`` also survives a power loss or OS crash, at the cost of an fsync per commit.

A file this process cannot write (a read-only mount, a read-only or immutable file or folder)
opens read-only: reads work, writes raise :class:`~kvstore.StoreUnavailableError` naming the file.

The package: :mod:`.store` (:class:`SQLiteStore`), :mod:`.statements` (the statements of a
table, the size bound's triggers) and :mod:`.connections` (a connection per thread, read-only
files, sqlite3's errors as kvstore's).
"""

from .store import SQLiteStore

__all__ = ["SQLiteStore"]
