"""Replacing a FileStore's whole contents at once (restores): the new files, read in full first.

The store then, under the folder's lock, writes every new file as a temp file, renames all of
them in place and removes the old ones, each replaced file kept as a hard link until the end, so
a failure puts every file back (see :func:`.atomic.publish`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from ...rows import LogRecords, Row
from . import logs as logfile

__all__ = ["replacement_files"]


def replacement_files(rows: Iterable[Row], logs: Iterable[LogRecords] | None, now: float,
                      path_for: Callable[[str], Path],
                      file_bytes: Callable[[str, Any, float | None], bytes],
                      log_path: Callable[[str], Path]) -> dict[Path, bytes]:
    """Every file of the new contents, ``{path: bytes}``: the keys' files (``rows``) and the
    logs' (a failure to read them is not the folder's, so they are read before it is locked)."""
    writes = {}
    for key, blob, ttl in rows:
        writes[path_for(key)] = file_bytes(key, blob, None if ttl is None else now + ttl)
    for name, blobs in logs or ():
        writes[log_path(name)] = b"".join(
            logfile.line(seq, blob) for seq, blob in enumerate(blobs, 1))
    return writes
