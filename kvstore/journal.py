"""The commit journal: a transaction over several durable stores survives a SIGKILL mid-commit.

Before the first store applies its part, :meth:`Journal.begin` writes (and fsyncs) a record of
every part: the writes, and what each written key held before. The committing process holds an
``flock`` on the record until :meth:`Journal.end` removes it after the last store. A process
killed in between leaves the record behind, unlocked; the next manager to open the same
configuration (:meth:`Journal.recover`) undoes it: every key the transaction wrote that still
holds what it wrote gets its old value back (a key changed since by someone else is left
alone). So a cross-store commit is all or nothing, even across a crash of the committing
process. A record whose process is alive is locked and never touched.

Records are MessagePack (``str`` and ``bytes`` kept apart), files of mode 0600 in a folder
beside the configuration's database (see :func:`kvstore.config.journal_dir`).
"""

from __future__ import annotations

import fcntl
import os
import secrets
from pathlib import Path
from typing import Any, Callable, Mapping

import msgpack

from ._fs import fsync_dir, make_private_dirs
from ._marks import KEEP, MISSING
from .store import Op, PersistenceStore

__all__ = ["Journal"]

_SUFFIX = ".kvjournal"
_MISSING, _KEEP = "missing", "keep"


def _pack_blob(blob: Any) -> Any:
    return {_MISSING: True} if blob is MISSING else blob


def _unpack_blob(blob: Any) -> Any:
    return MISSING if isinstance(blob, dict) and blob.get(_MISSING) else blob


def _pack_ttl(ttl: Any) -> Any:
    return _KEEP if ttl is KEEP else ttl


def _unpack_ttl(ttl: Any) -> Any:
    return KEEP if ttl == _KEEP else ttl


class Journal:
    """Commit records in ``folder`` (created on first use)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def begin(self, parts: list[tuple[str, list[Op], list[tuple[str, Any, float | None]]]]
              ) -> tuple[Path, int]:
        """Write and fsync the record of a commit; returns the handle :meth:`end` takes. The
        record stays locked by this process until then."""
        make_private_dirs(self.folder)
        record = [[name, [[k, _pack_blob(b), _pack_ttl(t)] for k, b, t in ops],
                   [[k, _pack_blob(b), t] for k, b, t in before]] for name, ops, before in parts]
        data = msgpack.packb({"version": 1, "parts": record}, use_bin_type=True)
        path = self.folder / f"{secrets.token_hex(8)}{_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            fsync_dir(self.folder)
        except BaseException:
            os.close(fd)
            _remove(path)
            raise
        return path, fd

    def end(self, handle: tuple[Path, int]) -> None:
        """The commit is over (done, or undone in process): drop its record."""
        path, fd = handle
        _remove(path)
        os.close(fd)  # releases the lock

    def recover(self, stores: Mapping[str, PersistenceStore],
                on_error: Callable[[BaseException], None] | None = None) -> int:
        """Undo the commits whose process died mid-way; returns how many. A record that cannot
        be undone now (a store unavailable) is kept for the next manager that opens."""
        try:
            names = sorted(p for p in os.listdir(self.folder) if p.endswith(_SUFFIX))
        except FileNotFoundError:
            return 0
        undone = 0
        for name in names:
            path = self.folder / name
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # finished meanwhile
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # its process is alive and still committing
                    continue
                with open(fd, "rb", closefd=False) as fh:
                    data = fh.read()
                if not data:  # killed before the record was written: nothing was applied
                    _remove(path)
                    continue
                try:
                    self._undo(msgpack.unpackb(data, raw=False), stores)
                except Exception as exc:  # keep the record: the next open tries again
                    if on_error is not None:
                        on_error(exc)
                    continue
                _remove(path)
                undone += 1
            finally:
                os.close(fd)
        return undone

    @staticmethod
    def _undo(record: dict[str, Any], stores: Mapping[str, PersistenceStore]) -> None:
        for name, ops, before in record["parts"]:
            store = stores.get(name)
            if store is None:
                continue
            store._undo([(k, _unpack_blob(b), _unpack_ttl(t)) for k, b, t in ops],
                        [(k, _unpack_blob(b), t) for k, b, t in before])


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    fsync_dir(path.parent)
