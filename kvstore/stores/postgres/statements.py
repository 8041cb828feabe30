"""PostgresStore's statements, written once for both drivers.

:func:`statements` renders every statement of a table; :class:`Queries` turns each
single-statement operation into a :class:`Query` (the statement, its parameters, what to fetch
and how to read the rows), which :class:`~kvstore.stores.postgres.PostgresStore` runs on its
pooled connection and :class:`~kvstore.stores.postgres.aio.AsyncPostgresStore` on an asyncio
pool.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from ..._marks import KEEP, MISSING
from ...errors import NotAnIntegerError
from ...store import prefix_upper_bound

__all__ = ["PAGE", "PURGE_EVERY", "PURGE_BATCH", "Query", "Queries", "statements"]

PURGE_EVERY = 1.0  # seconds between purges of expired rows, at most
PURGE_BATCH = 256  # rows a purge deletes, at most
PAGE = 1000        # keys() fetches this many keys per query


class Query(NamedTuple):
    """One statement of an operation: run it, fetch ``"one"``/``"all"``/nothing, and turn the
    rows into the operation's result; ``data_error`` names a DataError for the caller."""

    sql: Any
    params: dict[str, Any]
    fetch: str | None
    result: Callable[[Any], Any]
    data_error: Callable[[BaseException], BaseException] | None


def statements(table: str) -> dict[str, str]:
    """Every statement of a store on ``table`` (its logs in ``<table>_log``), by name."""
    # Plain strings, rendered once: psycopg caches the conversion of a str query, while a
    # sql.Composed would be rendered again on every call. The table name is a checked
    # identifier, so quoting it is enough.
    t, idx = f'"{table}"', f'"{table}_expires_idx"'
    q = lambda text: text.replace("{t}", t).replace("{idx}", idx)  # noqa: E731
    live = "(expires_at IS NULL OR expires_at > to_timestamp(%(now)s))"
    return {
        "create": q('CREATE TABLE IF NOT EXISTS {t} (key text COLLATE "C" PRIMARY KEY, '
                    "value bytea NOT NULL, expires_at timestamptz)"),
        "index": q("CREATE INDEX IF NOT EXISTS {idx} ON {t} (expires_at) "
                   "WHERE expires_at IS NOT NULL"),
        "get": q(f"SELECT value FROM {{t}} WHERE key = %(key)s AND {live}"),
        "get_many": q(f"SELECT key, value FROM {{t}} WHERE key = ANY(%(keys)s) AND {live}"),
        "set": q("INSERT INTO {t} (key, value, expires_at) VALUES "
                 "(%(key)s, %(value)s, to_timestamp(%(exp)s)) ON CONFLICT (key) DO UPDATE "
                 "SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at"),
        "set_many": q("INSERT INTO {t} (key, value, expires_at) SELECT k, v, to_timestamp(e) "
                      "FROM unnest(%(keys)s::text[], %(values)s::bytea[], %(exps)s::float8[]) "
                      "AS u(k, v, e) ON CONFLICT (key) DO UPDATE "
                      "SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at"),
        "delete": q(f"DELETE FROM {{t}} WHERE key = ANY(%(keys)s) RETURNING {live}"),
        "exists": q(f"SELECT 1 FROM {{t}} WHERE key = %(key)s AND {live}"),
        "ttl": q(f"SELECT EXTRACT(EPOCH FROM expires_at)::float8 FROM {{t}} "
                 f"WHERE key = %(key)s AND {live}"),
        "snapshot": q(f"SELECT key, value, EXTRACT(EPOCH FROM expires_at)::float8 FROM {{t}} "
                      f"WHERE key = ANY(%(keys)s) AND {live}"),
        # One statement: the row lock of the upsert makes concurrent increments exact.
        "incr": q("INSERT INTO {t} AS cur (key, value, expires_at) VALUES "
                  "(%(key)s, convert_to(%(amount)s::text, 'UTF8'), to_timestamp(%(exp)s)) "
                  "ON CONFLICT (key) DO UPDATE SET "
                  "value = CASE WHEN cur.expires_at IS NOT NULL "
                  "AND cur.expires_at <= to_timestamp(%(now)s) THEN EXCLUDED.value "
                  "ELSE convert_to((convert_from(cur.value, 'UTF8')::numeric "
                  "+ %(amount)s)::text, 'UTF8') END, "
                  "expires_at = CASE WHEN cur.expires_at IS NOT NULL "
                  "AND cur.expires_at <= to_timestamp(%(now)s) THEN EXCLUDED.expires_at "
                  "ELSE cur.expires_at END "
                  "RETURNING convert_from(value, 'UTF8')"),
        "keys": q(f"SELECT key FROM {{t}} WHERE key > %(after)s AND key >= %(lo)s "
                  f"AND (%(hi)s::text IS NULL OR key < %(hi)s) AND {live} "
                  f"ORDER BY key LIMIT {PAGE}"),
        "keys_desc": q(f"SELECT key FROM {{t}} WHERE key >= %(lo)s "
                       f"AND (%(top)s::text IS NULL OR key < %(top)s) AND {live} "
                       "ORDER BY key DESC LIMIT %(page)s"),
        "clear": q(f"WITH gone AS (DELETE FROM {{t}} WHERE key >= %(lo)s "
                   f"AND (%(hi)s::text IS NULL OR key < %(hi)s) RETURNING expires_at) "
                   f"SELECT count(*) FILTER (WHERE expires_at IS NULL "
                   f"OR expires_at > to_timestamp(%(now)s)) FROM gone"),
        "purge": q("DELETE FROM {t} WHERE key IN (SELECT key FROM {t} WHERE expires_at "
                   f"<= to_timestamp(%(now)s) LIMIT {PURGE_BATCH})"),
        "drop": q("DROP TABLE IF EXISTS {t}"),
        # Logs: <table>_log, one row per record, numbered per name.
        "log_create": f'CREATE TABLE IF NOT EXISTS "{table}_log" (name text COLLATE "C" '
                      "NOT NULL, seq bigint NOT NULL, value bytea NOT NULL, "
                      "PRIMARY KEY (name, seq))",
        "log_lock": "SELECT pg_advisory_xact_lock(hashtextextended(%(ns)s || %(name)s, 0))",
        "log_append": f'INSERT INTO "{table}_log" (name, seq, value) SELECT %(name)s, '
                      f'coalesce(max(seq), 0) + 1, %(value)s FROM "{table}_log" '
                      "WHERE name = %(name)s RETURNING seq",
        "log_read": f'SELECT seq, value FROM "{table}_log" WHERE name = %(name)s AND '
                    "seq > %(after)s ORDER BY seq LIMIT %(limit)s",
        "log_read_desc": f'SELECT seq, value FROM "{table}_log" WHERE name = %(name)s AND '
                         "seq > %(after)s ORDER BY seq DESC LIMIT %(limit)s",
        "log_len": f'SELECT coalesce(max(seq), 0) FROM "{table}_log" WHERE name = %(name)s',
        "log_delete": f'DELETE FROM "{table}_log" WHERE name = %(name)s',
        "log_names": f'SELECT DISTINCT name FROM "{table}_log" WHERE name >= %(lo)s AND '
                     "(%(hi)s::text IS NULL OR name < %(hi)s) ORDER BY name",
        # Insert, or replace only an expired row; a row comes back when it was written.
        "add": q("INSERT INTO {t} AS cur (key, value, expires_at) VALUES "
                 "(%(key)s, %(value)s, to_timestamp(%(exp)s)) ON CONFLICT (key) DO UPDATE "
                 "SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at "
                 "WHERE cur.expires_at IS NOT NULL AND cur.expires_at <= to_timestamp(%(now)s) "
                 "RETURNING 1"),
        "cas": q("UPDATE {t} SET value = %(value)s, expires_at = CASE WHEN %(keep)s "
                 "THEN expires_at ELSE to_timestamp(%(exp)s) END "
                 f"WHERE key = %(key)s AND value = %(old)s AND {live} RETURNING 1"),
        "cas_delete": q(f"DELETE FROM {{t}} WHERE key = %(key)s AND value = %(old)s AND {live} "
                        "RETURNING 1"),
        "touch": q(f"UPDATE {{t}} SET expires_at = to_timestamp(%(exp)s) "
                   f"WHERE key = %(key)s AND {live} RETURNING 1"),
        "set_keep": q("UPDATE {t} SET value = %(value)s WHERE key = %(key)s"),
        # One advisory lock per key, taken in hash order (the same order in every commit).
        "lock_keys": ("SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT "
                      "hashtextextended(%(ns)s || k, 0) AS h "
                      "FROM unnest(%(keys)s::text[]) AS k ORDER BY h) AS s"),
        "check": q(f"SELECT key, value FROM {{t}} WHERE key = ANY(%(keys)s) AND {live} "
                   "FOR UPDATE"),
    }


class Queries:
    """The single-statement operations of a store on one table, as :class:`Query` objects
    (``clock``: the store's time source, for expiry)."""

    def __init__(self, table: str, clock: Callable[[], float], last_purge: float = 0.0) -> None:
        self.sql = statements(table)
        self.clock = clock
        self.last_purge = last_purge

    def _exp(self, ttl: float | None) -> float | None:
        return None if ttl is None else self.clock() + ttl

    def _q(self, name: str, params: dict[str, Any], fetch: str | None,
           result: Callable[[Any], Any] = lambda rows: rows,
           data_error: Callable[[BaseException], BaseException] | None = None) -> Query:
        return Query(self.sql[name], params, fetch, result, data_error)

    def get(self, key: str) -> Query:
        return self._q("get", {"key": key, "now": self.clock()}, "one",
                       lambda row: MISSING if row is None else bytes(row[0]))

    def get_many(self, keys: list[str]) -> Query:
        return self._q("get_many", {"keys": keys, "now": self.clock()}, "all",
                       lambda rows: {k: bytes(v) for k, v in rows})

    def set(self, key: str, blob: Any, ttl: float | None) -> Query:
        return self._q("set", {"key": key, "value": blob, "exp": self._exp(ttl)}, None)

    def set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> Query:
        return self._q("set_many", {"keys": [k for k, _ in items], "values": [b for _, b in items],
                                    "exps": [self._exp(ttl)] * len(items)}, None)

    def delete_many(self, keys: list[str]) -> Query:
        return self._q("delete", {"keys": keys, "now": self.clock()}, "all",
                       lambda rows: sum(1 for (live,) in rows if live))

    def exists(self, key: str) -> Query:
        return self._q("exists", {"key": key, "now": self.clock()}, "one",
                       lambda row: row is not None)

    def ttl(self, key: str) -> Query:
        now = self.clock()
        # timestamptz keeps microseconds: round so float noise never reports more than was set.
        return self._q("ttl", {"key": key, "now": now}, "one", lambda row: (
            None if row is None or row[0] is None else max(round(float(row[0]) - now, 6), 0.0)))

    def incr(self, key: str, amount: int, ttl: float | None) -> Query:
        return self._q("incr", {"key": key, "amount": amount, "now": self.clock(),
                                "exp": self._exp(ttl)}, "one", lambda row: int(row[0]),
                       lambda exc: NotAnIntegerError(f"incr {key!r}: stored value is not an integer"))

    def keys(self, prefix: str, after: str) -> Query:
        return self._q("keys", {"after": after, "lo": prefix, "hi": prefix_upper_bound(prefix),
                                "now": self.clock()}, "all", lambda rows: [k for (k,) in rows])

    def keys_desc(self, prefix: str, before: str | None, page: int = PAGE) -> Query:
        """A page (``page`` keys at most) of keys with ``prefix`` sorting before ``before``
        (None: from the last), descending: the same index read backwards."""
        hi = prefix_upper_bound(prefix)
        top = before if before is not None and (hi is None or before < hi) else hi
        return self._q("keys_desc", {"lo": prefix, "top": top, "now": self.clock(), "page": page},
                       "all", lambda rows: [k for (k,) in rows])

    def clear(self, prefix: str) -> Query:
        return self._q("clear", {"lo": prefix, "hi": prefix_upper_bound(prefix),
                                 "now": self.clock()}, "one", lambda row: int(row[0]))

    def add(self, key: str, blob: Any, ttl: float | None) -> Query:
        return self._q("add", {"key": key, "value": blob, "now": self.clock(),
                               "exp": self._exp(ttl)}, "one", lambda row: row is not None)

    def cas(self, key: str, expected: Any, new: Any, ttl: Any) -> Query:
        now = self.clock()
        found: Callable[[Any], bool] = lambda row: row is not None  # noqa: E731
        if new is MISSING:
            return self._q("cas_delete", {"key": key, "old": expected, "now": now}, "one", found)
        return self._q("cas", {"key": key, "old": expected, "value": new, "now": now,
                               "keep": ttl is KEEP,
                               "exp": None if ttl is None or ttl is KEEP else now + ttl},
                       "one", found)

    def touch(self, key: str, ttl: float | None) -> Query:
        return self._q("touch", {"key": key, "now": self.clock(), "exp": self._exp(ttl)}, "one",
                       lambda row: row is not None)

    def purge(self) -> Query | None:
        """The purge of expired rows, when one is due (at most once a second)."""
        now = self.clock()
        if now - self.last_purge < PURGE_EVERY:
            return None
        self.last_purge = now
        return self._q("purge", {"now": now}, None)
