"""Reading and replacing a whole store's contents over its byte-level primitives.

- :func:`iter_rows` pages through every live ``(key, blob, ttl)`` of a store (exports, backups,
  migrations, restores' pre-restore copies).
- :func:`replace_generic` backs ``store.raw_replace_all(rows, logs)`` for stores with no native way
  to swap everything at once (memory, Redis Cluster, wrappers): a copy of the old contents
  first, then clear and write; on any failure the copy is written back before the error
  propagates. SQLite and PostgreSQL replace in one database transaction and Redis in one script
  (their own ``_replace_all``); the file store stages every file and renames them together
  (:mod:`kvstore.stores.file.replace`).

``rows`` are ``(key, blob, ttl)`` ready for the store (``ttl`` seconds from now, None: no
expiry); ``logs`` are ``(name, [blob, ...])`` ready for the store's ``_log_append``, records in
order (so their numbers are 1, 2, 3 ... as they were).

This module sits below :mod:`kvstore.store`: it calls a store's byte-level methods and imports
no store (``Store`` below is any :class:`~kvstore.store.PersistenceStore`).
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator

from ._marks import MISSING

__all__ = ["Row", "LogRecords", "BATCH", "iter_rows", "replace_generic", "dump_logs"]

Row = tuple[str, Any, "float | None"]
LogRecords = tuple[str, list[Any]]
Store = Any  # a PersistenceStore (not imported: kvstore.store imports this module)
BATCH = 1000


def iter_rows(store: Store, prefix: str = "", after: str | None = None,
              batch: int = BATCH) -> Iterator[list[Row]]:
    """Pages of ``(key, blob, ttl)`` of the live keys with ``prefix`` after ``after``, sorted,
    ``batch`` keys per query (one query per page where the store can: SQLite, PostgreSQL)."""
    if getattr(store.raw_rows, "lists_every_key", False):  # the base's: no native paging
        # (Redis, files, memory): each page would list every key again (a million Redis keys:
        # a thousand full SCANs), so the keys are listed once.
        keys = sorted(k for k in store.raw_keys(prefix) if after is None or k > after)
        for i in range(0, len(keys), batch):
            live = [row for row in store.raw_snapshot(keys[i:i + batch]) if row[1] is not MISSING]
            if live:
                yield live
        return
    while True:
        rows = store.raw_rows(prefix, after, batch)
        if not rows:
            return
        live = [row for row in rows if row[1] is not MISSING]  # deleted or expired meanwhile
        if live:
            yield live
        after = rows[-1][0]


def dump_logs(store: Store) -> list[LogRecords]:
    """Every log of ``store`` as ``(name, [blob, ...])``, ready for its own ``_log_append``."""
    return [(name, [store.raw_log_blob_in(name, blob) for _, blob in store.raw_log_blobs(name)])
            for name in store.raw_log_names("")]


def _overwrite(store: Store, rows: Iterable[Row],
               logs: Iterable[LogRecords] | None) -> None:
    store.raw_clear("")
    it = iter(rows)
    while batch := list(itertools.islice(it, BATCH)):
        store.raw_put_rows(batch)
    if logs is not None:
        for name in store.raw_log_names(""):
            store.raw_log_delete(name)
        for name, blobs in logs:
            for blob in blobs:
                store.raw_log_append(name, blob)


def replace_generic(store: Store, rows: Iterable[Row],
                    logs: Iterable[LogRecords] | None) -> None:
    """Replace by clearing and writing, with the old contents copied first and written back
    if anything fails (for stores with no native way to swap everything at once)."""
    old_rows = [row for page in iter_rows(store) for row in page]
    old_logs = dump_logs(store) if logs is not None else None
    try:
        _overwrite(store, rows, logs)
    except BaseException:
        _overwrite(store, old_rows, old_logs)
        raise
