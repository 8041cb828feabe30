"""Replacing a FileStore's whole contents at once (restores).

Under the folder's lock every new file is written as a temp file first, then all of them are
renamed in place and the old ones removed, each replaced file kept as a hard link until the end,
so a failure puts every file back (see :mod:`kvstore.stores._atomic`).
"""

from __future__ import annotations

from typing import Any, Iterable

from ..rows import LogRecords, Row
from . import _filelog

__all__ = ["replace_files"]


def replace_files(store: Any, rows: Iterable[Row], logs: Iterable[LogRecords] | None,
                  log_ext: str) -> None:
    """Replace a FileStore's (``store``) key files (and, unless ``logs`` is None, its ``log_ext`` log files)
    all at once (see the module docstring)."""
    now = store._clock()
    writes = {}  # read in full first: a failure to read is not the folder's
    for key, blob, ttl in rows:
        writes[store._path_for(key)] = store._file_bytes(key, blob, None if ttl is None else now + ttl)
    for name, blobs in logs or ():
        writes[store._log_path(name)] = b"".join(
            _filelog.line(seq, blob) for seq, blob in enumerate(blobs, 1))
    with store._io(), store._locked():
        old = [path for _, path, _ in store._matching("")]
        if logs is not None:
            old += list(store._walk(log_ext))
        deletes = [path for path in old if path not in writes]
        store._publish(store._stage(list(writes.items())), deletes)
