"""Replacing a whole store's contents (restores): the generic way, and the file store's.

``store._replace_all(rows, logs)`` swaps every key (and every log, unless ``logs`` is None) for
the given ones, so that a failure partway leaves the old contents. SQLite and PostgreSQL do it
in one database transaction and Redis in one script (their own ``_replace_all``); this module
holds the two others:

- :func:`replace_generic` (memory, Redis Cluster, wrappers): a copy of the old contents first,
  then clear and write; on any failure the copy is written back before the error propagates.
- :func:`replace_files` (FileStore): under the folder's lock every new file is written as a
  temp file first, then all of them are renamed in place and the old ones removed, each
  replaced file kept as a hard link until the end, so a failure puts every file back.

``rows`` are ``(key, blob, ttl)`` ready for the store (``ttl`` seconds from now, None: no
expiry); ``logs`` are ``(name, [blob, ...])`` ready for the store's ``_log_append``, records in
order (so their numbers are 1, 2, 3 ... as they were).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Iterable


if TYPE_CHECKING:
    from .store import PersistenceStore
    from .stores.file import FileStore

__all__ = ["Row", "LogRecords", "replace_generic", "replace_files", "dump_logs"]

Row = tuple[str, Any, "float | None"]
LogRecords = tuple[str, list[Any]]
_PAGE = 1000


def dump_logs(store: "PersistenceStore") -> list[LogRecords]:
    """Every log of ``store`` as ``(name, [blob, ...])``, ready for its own ``_log_append``."""
    return [(name, [store._log_blob_in(name, blob) for _, blob in store._log_blobs(name)])
            for name in store._log_names("")]


def _dump_rows(store: "PersistenceStore") -> list[Row]:
    from .transfer import iter_rows

    return [row for page in iter_rows(store, batch=_PAGE) for row in page]


def _overwrite(store: "PersistenceStore", rows: Iterable[Row],
               logs: Iterable[LogRecords] | None) -> None:
    store._clear("")
    it = iter(rows)
    while batch := list(itertools.islice(it, _PAGE)):
        store._put_rows(batch)
    if logs is not None:
        for name in store._log_names(""):
            store._log_delete(name)
        for name, blobs in logs:
            for blob in blobs:
                store._log_append(name, blob)


def replace_generic(store: "PersistenceStore", rows: Iterable[Row],
                    logs: Iterable[LogRecords] | None) -> None:
    """Replace by clearing and writing, with the old contents copied first and written back
    if anything fails (for stores with no native way to swap everything at once)."""
    old_rows = _dump_rows(store)
    old_logs = dump_logs(store) if logs is not None else None
    try:
        _overwrite(store, rows, logs)
    except BaseException:
        _overwrite(store, old_rows, old_logs)
        raise


def replace_files(store: "FileStore", rows: Iterable[Row], logs: Iterable[LogRecords] | None) -> None:
    """Replace a FileStore's files all at once (see the module docstring)."""
    from .stores.file import _LOG_EXT

    now = store._clock()
    writes = {}  # read in full first: a failure to read is not the folder's
    for key, blob, ttl in rows:
        writes[store._path_for(key)] = store._file_bytes(key, blob, None if ttl is None else now + ttl)
    for name, blobs in logs or ():
        writes[store._log_path(name)] = "".join(
            f'{{"seq":{seq},"record":{blob}}}\n' for seq, blob in enumerate(blobs, 1)).encode()
    with store._io(), store._locked():
        old = [path for _, path, _ in store._matching("")]
        if logs is not None:
            old += list(store._walk(_LOG_EXT))
        deletes = [path for path in old if path not in writes]
        store._publish(store._stage(list(writes.items())), deletes)
