"""PostgresStore: the database tier shared by several application servers (psycopg 3).

One table::

    key text COLLATE "C" PRIMARY KEY, value bytea NOT NULL, expires_at timestamptz

``COLLATE "C"`` makes the primary key's order bytewise, so a literal prefix is an index range
(``key >= p AND key < bound``), never ``LIKE``. An index on ``expires_at`` serves the purge of
expired rows, which runs in small batches at most once a second. Connections come from a
``psycopg_pool.ConnectionPool``, safe across threads.

Atomic operations are single statements (row locks make them exact with any number of
writers): set-if-absent is an upsert that replaces only an expired row, compare-and-swap an
``UPDATE ... WHERE value = %s``. A transaction's part runs in one database transaction that
first takes ``pg_advisory_xact_lock`` on each key it reads or writes (in one fixed order, so
two commits never deadlock; transaction-scoped, so a pooled connection never keeps one), then
locks the rows it read with ``FOR UPDATE`` and checks them. Locks live in ``<table>_meta``.

The package: :mod:`.store` (:class:`PostgresStore`, on ``psycopg_pool.ConnectionPool``),
:mod:`.aio` (:class:`~.aio.AsyncPostgresStore`, on ``AsyncConnectionPool``, built from a
PostgresStore), :mod:`.statements` (every statement and the query plan both drivers run) and
:mod:`.commit` (a transaction's marked commit and the table journal).
"""

from .store import PostgresStore

__all__ = ["PostgresStore"]
