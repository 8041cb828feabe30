"""The commit journal: a transaction over several stores survives a SIGKILL mid-commit.

Once every store holding a write lock has taken it and read what the written keys hold (the
before-images, read under those locks), and before any store's writes become visible,
:meth:`Journal.begin` writes (fsyncs, then renames into place) a record of every part: the
writes and those images. A store that writes in one script at exit (Redis) records its
images itself, in a marker key the script writes with the data; its part of the record names
that marker (the transaction's token) instead. The committing process holds an ``flock`` on
the record until :meth:`Journal.end` removes it after the last store committed, or after the
commit was undone in process.

A process killed in between leaves the record behind, unlocked; the next manager to open the
same configuration (:meth:`Journal.recover`), and every running one within
``journal.recover_interval`` (its background pass, see :mod:`kvstore.lifecycle`), undoes it:
a marked part is first settled (did
its script run? if not, it never will), then every key the transaction wrote that still
holds exactly what it wrote gets its image back. A key changed since by another writer is left
alone and reported (an error event naming it). A record whose process is alive is locked and
never touched; so is a record a commit left *in doubt* (a store's reply lost, the store out of
reach): it is released and kept, and the next transaction of that manager (or its
background pass, or the next manager to open) settles it the same way.

Records are MessagePack (``str`` and ``bytes`` kept apart), files of mode 0600 in a folder
beside the configuration's database (see :func:`kvstore.config.journal_dir`).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import msgpack

from ._commit import Image
from ._fs import fsync_dir, make_private_dirs
from ._marks import KEEP, MISSING
from . import observe
from .errors import TransactionError
from .store import Op, PersistenceStore, same_blob

__all__ = ["Journal"]

_SUFFIX = ".kvjournal"
_TEMP = ".kvjournal-tmp"
_MISSING, _KEEP = "missing", "keep"
_SHARED = "shared records"  # in Journal.left: the servers' records could not be read yet

#: One part of a record: (store name, its writes, its images (None: the store's marker has
#: them), whether the store marked the commit: recovery asks it whether it was applied).
RecordPart = tuple[str, list[Op], Optional[list[Image]], bool]


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
        #: Records this process left in doubt (paths; tokens of shared records); its next
        #: transaction settles them first.
        self.left: list[Any] = []
        self._retry_at = 0.0
        # One recovery at a time in this process: the background pass and a transaction's.
        self._recovering = threading.Lock()

    def pending(self) -> bool:
        """Whether records left in doubt are due another try (every 2 s at most, so calls made
        while a server is down do not each wait for it)."""
        return bool(self.left) and time.monotonic() >= self._retry_at

    def begin(self, token: str, parts: list[RecordPart]) -> tuple[Path, int]:
        """Write and fsync the record of a commit; returns the handle :meth:`end` takes. The
        record stays locked by this process until then. It appears under its final name only
        once complete, so a record recovery finds is always whole."""
        make_private_dirs(self.folder)
        data = pack_record(token, parts)
        name = secrets.token_hex(8)
        temp, path = self.folder / f"{name}{_TEMP}", self.folder / f"{name}{_SUFFIX}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            os.rename(temp, path)  # the lock stays with the file
            fsync_dir(self.folder)
        except BaseException:
            os.close(fd)
            _remove(temp)
            _remove(path)
            raise
        return path, fd

    def end(self, handle: tuple[Path, int]) -> None:
        """The commit is over (done, or undone in process): drop its record."""
        path, fd = handle
        _remove(path)
        os.close(fd)  # releases the lock

    def release(self, handle: tuple[Path, int]) -> None:
        """The commit is in doubt: keep its record, unlocked, for :meth:`recover` to settle."""
        path, fd = handle
        self.left.append(path)  # before the lock goes: a recovery that takes it then drops it
        os.close(fd)

    def recover(self, stores: Mapping[str, PersistenceStore],
                on_error: Callable[[BaseException], None] | None = None) -> int:
        """Undo the commits whose process died mid-way (or that were left in doubt); returns
        how many. A record that cannot be undone now (a store unavailable) is kept for the
        next try; keys left alone because another writer changed them are reported to
        ``on_error`` as a :class:`TransactionError` naming them."""
        with self._recovering:
            # Only what was left before the folder is read can be known to be gone: a
            # committing thread adds its record first, then its name here.
            earlier = list(self.left)
            try:
                names = sorted(os.listdir(self.folder))
            except FileNotFoundError:
                names = []
            undone = 0
            for name in names:
                if name.endswith(_TEMP):
                    _remove_unlocked(self.folder / name)  # killed while writing: nothing applied
                elif name.endswith(_SUFFIX) and self._recover_one(self.folder / name, stores,
                                                                  on_error):
                    undone += 1
            # Settled by another manager meanwhile: no longer this process's to settle.
            self._drop_left(earlier, lambda item: isinstance(item, Path) and item.name not in names)
            undone += self._recover_shared(stores, on_error, earlier)
            self._retry_at = time.monotonic() + 2.0 if self.left else 0.0
        if undone:
            observe.signal("journal_repaired", count=undone, journal=str(self.folder))
        return undone

    def _drop_left(self, earlier: list[Any], gone: Callable[[Any], bool]) -> None:
        for item in [item for item in earlier if gone(item)]:
            try:
                self.left.remove(item)
            except ValueError:  # (a committing thread only appends; nothing else removes)
                pass

    def _recover_shared(self, stores: Mapping[str, PersistenceStore],
                        on_error: Callable[[BaseException], None] | None,
                        earlier: list[Any]) -> int:
        """The records servers keep for every machine (see ``kvstore.stores.pg_journal``)."""
        undone = 0
        seen: set[str] = set()
        for store in {id(s): s for s in stores.values()}.values():
            shared = store.shared_journal()
            if shared is None:
                continue
            try:
                undone += shared.recover(stores, on_error, self.left, seen)
            except Exception as exc:  # the server is down: the next try reads them again
                if _SHARED not in self.left:
                    self.left.append(_SHARED)
                if on_error is not None:
                    on_error(exc)
                return undone  # (the others most likely live on the same server: no waiting)
        # Every server answered: a token of this process's in-doubt commit that no server
        # holds any more was settled by another manager (or machine).
        self._drop_left(earlier, lambda item: isinstance(item, str) and item not in seen)
        return undone

    def _recover_one(self, path: Path, stores: Mapping[str, PersistenceStore],
                     on_error: Callable[[BaseException], None] | None) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # finished meanwhile
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its process is alive and still committing
                return False
            if os.fstat(fd).st_nlink == 0:  # recovered by another manager meanwhile
                return False
            with open(fd, "rb", closefd=False) as fh:
                data = fh.read()
            if not undo_record(data, stores, on_error):
                return False
            _remove(path)
            if path in self.left:
                self.left.remove(path)
            return True
        finally:
            os.close(fd)


def pack_record(token: str, parts: list[RecordPart]) -> bytes:
    """A commit record (MessagePack): the token and every part."""
    record = [[name, [[k, _pack_blob(b), _pack_ttl(t)] for k, b, t in ops],
               None if images is None else [[k, _pack_blob(b), t] for k, b, t in images],
               marked] for name, ops, images, marked in parts]
    return bytes(msgpack.packb({"version": 2, "token": token, "parts": record}, use_bin_type=True))


def undo_record(data: bytes, stores: Mapping[str, PersistenceStore],
                on_error: Callable[[BaseException], None] | None) -> bool:
    """Undo the commit recorded in ``data``; False when it cannot be done now (the error goes
    to ``on_error``; keep the record). Keys left alone are reported to ``on_error`` too."""
    try:
        kept = _undo(msgpack.unpackb(data, raw=False), stores) if data else []
    except Exception as exc:  # keep the record: the next try settles it
        if on_error is not None:
            on_error(exc)
        return False
    if kept and on_error is not None:
        on_error(TransactionError(
            f"recovered an interrupted transaction; left as they are (changed since by another "
            f"writer): {', '.join(kept)}"))
    return True


def _undo(record: dict[str, Any], stores: Mapping[str, PersistenceStore]) -> list[str]:
    """Undo every part of ``record``; the keys left alone (``store:key``)."""
    token = record.get("token", "")
    kept: list[str] = []
    marked: list[PersistenceStore] = []
    for name, ops, images, *flags in record["parts"]:
        store = stores.get(name)
        if store is None:
            continue
        applied = [(k, _unpack_blob(b), _unpack_ttl(t)) for k, b, t in ops]
        before = None if images is None else [(k, _unpack_blob(b), t) for k, b, t in images]
        if flags and flags[0]:  # the store's marker says whether it committed (for good)
            found = store.raw_outcome(token, list(dict.fromkeys(k for k, _, _ in applied)))
            marked.append(store)
            if found is None:
                continue
            before = before if before is not None else found
        if before is None:
            continue
        left = store.raw_undo(applied, before)
        if left:
            # A key that holds its image was never written (the store did not commit):
            # nothing to report. Anything else was changed by another writer.
            old = {k: b for k, b, _ in before}
            now = {k: b for k, b, _ in store.raw_snapshot(left)}
            kept += [f"{name}:{k}" for k in left if not same_blob(now[k], old.get(k, MISSING))]
    for store in marked:
        store.raw_forget(token)
    return kept


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


def _remove_unlocked(path: Path) -> None:
    """Remove a temp record a dead process left: unlocked, and older than a minute (a live
    writer locks it right after creating it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        if time.time() - os.fstat(fd).st_mtime < 60:
            return
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return
    finally:
        os.close(fd)
    _remove(path)
