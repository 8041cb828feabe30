"""SQLiteStore's statements for one table, and the schema changes they need: the size bound's
triggers and a read-only file's stand-in tables."""

from __future__ import annotations

import sqlite3
from typing import Any

from ...store import prefix_upper_bound

__all__ = ["PURGE_EVERY", "PURGE_BATCH", "PAGE", "MAX_PARAMS", "LIVE", "Statements", "key_range"]

PURGE_EVERY = 1.0      # seconds between purges of expired rows (per store object)
PURGE_BATCH = 256      # rows per purge: small, so no write waits long on it
PAGE = 1000            # keys() fetches this many keys per query
MAX_PARAMS = 500       # keys per `IN (...)` query

LIVE = "(expires_at IS NULL OR expires_at > ?)"


class Statements:
    """The statements for one table (a checked identifier), built once per store."""

    def __init__(self, table: str) -> None:
        t = f'"{table}"'
        self.name = table
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
                      f"WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT {PURGE_BATCH})")
        # Insert, or replace only a row that has expired: (key, value, expires_at, now).
        self.add = (f"INSERT INTO {t} AS cur (key, value, expires_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                    "expires_at = excluded.expires_at "
                    "WHERE cur.expires_at IS NOT NULL AND cur.expires_at <= ?")
        # Compare-and-swap on a live row: (..., key, expected, now).
        self.cas = f"UPDATE {t} SET value = ?, expires_at = ? WHERE key = ? AND value = ? AND {LIVE}"
        self.cas_keep = f"UPDATE {t} SET value = ? WHERE key = ? AND value = ? AND {LIVE}"
        self.cas_delete = f"DELETE FROM {t} WHERE key = ? AND value = ? AND {LIVE}"
        self.touch = f"UPDATE {t} SET expires_at = ? WHERE key = ? AND {LIVE}"
        self.set_keep = f"UPDATE {t} SET value = ? WHERE key = ?"  # the expiry stays
        self.table = t
        # The size bound (``max_entries``): a store number per row, a one-row table with the
        # count, the last number and the cap, kept by triggers, so every write path of every
        # process stamps, counts and evicts in the statement that writes (see apply_bound).
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
        self.log_read_desc = self.log_read.replace("ORDER BY seq", "ORDER BY seq DESC")
        self.log_len = f"SELECT coalesce(max(seq), 0) FROM {lt} WHERE name = ?"
        self.log_delete = f"DELETE FROM {lt} WHERE name = ?"
        self.log_names = (f"SELECT DISTINCT name FROM {lt} WHERE name >= ? AND (? IS NULL OR name < ?) "
                          "ORDER BY name")

    def apply_bound(self, conn: sqlite3.Connection, max_entries: int | None) -> None:
        """Apply ``max_entries`` to the table (in the caller's write transaction).

        The bound belongs to the table: the last store to open it sets it, and one opened
        without ``max_entries`` removes it (nothing is evicted that this store was not told to
        evict). Rows stored before a bound existed are the first to go.
        """
        bound, *triggers = self.bound_names
        exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                              (bound,)).fetchone() is not None
        if max_entries is None:
            if exists:
                for trigger in triggers:
                    conn.execute(f'DROP TRIGGER IF EXISTS "{trigger}"')
                conn.execute(f'DROP TABLE "{bound}"')
            return
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({self.table})")]
        if "stored" not in columns:  # a table from before bounds: migrate it in place
            conn.execute(f"ALTER TABLE {self.table} ADD COLUMN stored INTEGER")
        for statement in self.bound_schema:
            conn.execute(statement)
        if exists:
            conn.execute(f'UPDATE "{bound}" SET cap = ?', (max_entries,))
        else:
            conn.execute(self.bound_set, (max_entries,))
        conn.execute(self.bound_evict)

    def shadow_missing_tables(self, conn: sqlite3.Connection) -> None:
        # A read-only file without this store's tables (or its newer log table) reads as empty:
        # empty TEMP tables of the same names stand in, then query_only refuses every write.
        meta = f"{self.name}_meta"
        creates = {self.name: self.schema[0], meta: Statements(meta).schema[0],
                   f"{self.name}_log": self.log_schema}
        for table, statement in creates.items():
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                            (table,)).fetchone() is None:
                conn.execute(statement.replace("CREATE TABLE", "CREATE TEMP TABLE", 1))
        conn.execute("PRAGMA query_only = ON")


def key_range(prefix: str, after: str | None = None, desc: bool = False) -> tuple[str, list[Any]]:
    """The WHERE clause of keys with ``prefix`` (and sorting after ``after``; ``desc``:
    before it) as ONE index range: two lower bounds (``key >= p AND key > a``) make SQLite
    seek to the first and scan to the second, so paging a big table would cost O(n) per page."""
    hi = prefix_upper_bound(prefix)
    if desc:  # below ``after`` and below the prefix's end, whichever comes first
        top = after if after is not None and (hi is None or after < hi) else hi
        return ("key >= ?", [prefix]) if top is None else ("key >= ? AND key < ?", [prefix, top])
    low, lo = ("key > ?", after) if after is not None and after >= prefix else ("key >= ?", prefix)
    if hi is None:
        return low, [lo]
    return f"{low} AND key < ?", [lo, hi]
