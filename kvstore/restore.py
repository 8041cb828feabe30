"""Restoring a backup, all or nothing.

1. :func:`kvstore.backup.verify_backup`: the manifest, every part's size and sha256, SQLite's
   integrity check; a part that is a symbolic link, not a regular file or outside the backup
   folder is refused.
2. Every record of every part is read and checked against the store it goes to: it parses, its
   key (or log name) passes that store's key check, its value decodes, a log's records are
   numbered 1, 2, 3 ..., no key comes twice, and the counts match the manifest. Anything wrong
   raises :class:`~kvstore.backup.BackupError` naming the part and line; nothing has changed.
3. Each store's keys and logs are replaced at once (``store.raw_replace_all``: one transaction on
   SQLite and PostgreSQL, one script on Redis, staged files renamed together on the file
   store), so a store that fails is left as it was. The stores go SQLite first, Redis last;
   before the first one changes, every store but the last is copied, as a backup, into a
   ``.tmp-restore-*`` folder beside the backups; if a later store fails, the earlier ones are
   put back from that copy before the error is raised. The copy is removed at the end, and
   kept (the error names it) when putting a store back failed too.

A crash: while the stores change, a marker in the copy folder names the backup, flock-held by
the restoring process. A restore killed halfway (some stores restored, the file store partly
renamed) is finished by the next manager that opens (:func:`recover_restores`, run next to the
commit journal's recovery): it runs the restore again from the backup, so the stores end up all
restored, never out of step.

Logs: a backup made with manifest ``version`` 2 or later brings logs back exactly (records
written since are gone, deleted logs come back, same numbers); one made before logs were backed
up (``version`` 1) leaves the stores' logs as they are.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generator, Iterator

from ._fs import fsync_dir, make_private_dirs, open_abandoned
from .backup import BackupError, file_copy, verify_backup, write_manifest, write_part
from .config import default_data_dir
from .errors import (CorruptDataError, InvalidKeyError, KVStoreError, SerializationError,
                     StoreUnavailableError)
from .rows import LogRecords, Row
from .store import PersistenceStore, decode_stored
from .transfer import READER, Record, key_payload, log_payload, parse_record

if TYPE_CHECKING:
    from .core import Core

__all__ = ["restore_backup", "recover_restores"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_MARKER = "RESTORING"


class _Part:
    """One part of a backup, read as records for the store it goes to."""

    def __init__(self, folder: Path, name: str, info: dict[str, Any], store: PersistenceStore,
                 logs: bool) -> None:
        self.folder, self.name, self.info, self.store = folder, name, info, store
        self.path = folder / info["file"]
        self.with_logs = logs

    def _where(self, loc: int | None, rec: Record) -> str:
        """Where ``rec`` is: its line, or (a SQLite part) its key or log."""
        at = loc if loc is not None else f"{'log' if rec.is_log else 'key'} {rec.name!r}"
        return f"{self.folder}: part {self.path.name}:{at}"

    def records(self) -> Iterator[tuple[int | None, Record]]:
        """``(line, record)`` for every key, then every log record (when logs are restored)."""
        if self.path.suffix == ".sqlite3":
            yield from self._sqlite_records()
            return
        fd = os.open(self.path, os.O_RDONLY | _NOFOLLOW)  # checked: a regular file, no link
        with os.fdopen(fd, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rec = parse_record(line, f"{self.folder}: part {self.path.name}:{number}")
                    except CorruptDataError as exc:
                        raise BackupError(f"{exc}; nothing was changed") from exc
                    if self.with_logs or not rec.is_log:
                        yield number, rec

    def _table(self) -> str:
        """The table a SQLite part holds the keys in (``<table>_log``: the logs)."""
        table = self.info.get("table", getattr(self.store, "table", "kvstore"))
        if not isinstance(table, str) or not table.isidentifier():
            raise BackupError(f"{self.folder}/manifest.json: table {table!r} of store "
                              f"{self.name!r} is not a table name")
        return table

    def _sqlite_records(self) -> Iterator[tuple[int | None, Record]]:
        table = self._table()
        con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            names = {n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if table not in names:
                raise BackupError(f"{self.folder}: part {self.path.name} has no table {table!r}")
            now = time.time()
            for key, value, exp in con.execute(f'SELECT key, value, expires_at FROM "{table}" '
                                               "ORDER BY key"):
                yield None, Record(False, key, bytes(value), None if exp is None else exp - now,
                                   0, True)
            if self.with_logs and f"{table}_log" in names:
                for name, seq, value in con.execute(f'SELECT name, seq, value FROM "{table}_log" '
                                                    "ORDER BY name, seq"):
                    yield None, Record(True, name, bytes(value), None, int(seq), True)
        except sqlite3.Error as exc:
            raise BackupError(f"{self.folder}: part {self.path.name} cannot be read ({exc})") from exc
        finally:
            con.close()

    def validate(self) -> int:
        """Check every record against the store (see the module docstring); the keys restored."""
        store, keys, records = self.store, 0, 0
        seen: set[str] = set()
        logs: dict[str, int] = {}  # log name -> its last record's number
        last_log = None
        for loc, rec in self.records():
            try:
                store.check_key(rec.name)
                if rec.is_log:
                    if rec.name != last_log and rec.name in logs:
                        raise BackupError(f"log {rec.name!r}: its records are not together")
                    if rec.seq != logs.get(rec.name, 0) + 1:
                        raise BackupError(f"log {rec.name!r}: record {rec.seq} follows record "
                                          f"{logs.get(rec.name, 0)}")
                    logs[rec.name], last_log, records = rec.seq, rec.name, records + 1
                    log_payload(store, rec)
                    if rec.is_blob:
                        decode_stored(rec.name, rec.payload, store.serializer or READER)
                    continue
                if rec.name in seen:
                    raise BackupError(f"key {rec.name!r} comes twice")
                seen.add(rec.name)
                payload = key_payload(store, rec)
                if rec.is_blob and store.serializer is not None:
                    store.decode(rec.name, payload)
            except KVStoreError as exc:
                raise BackupError(f"{self._where(loc, rec)} (for store {self.name!r}): {exc}; "
                                  "nothing was changed") from exc
            if rec.ttl is None or rec.ttl > 0:
                keys += 1
        self._check_counts(len(seen), len(logs), records)
        return keys

    def _check_counts(self, keys: int, logs: int, records: int) -> None:
        info = self.info
        found = {"log_records": records, "logs": logs}
        if self.path.suffix != ".sqlite3":  # a SQLite part's live count depends on the time
            found["keys"] = keys
        for field, count in found.items():
            if field in info and (self.with_logs or field == "keys") and info[field] != count:
                raise BackupError(f"{self.folder}: part {self.path.name} holds {count} {field}, "
                                  f"the manifest says {info[field]}; the backup is damaged")

    def replace(self) -> None:
        """Replace the store's keys (and logs) with this part's."""
        if self.path.suffix == ".sqlite3" and file_copy(self.store):
            self.store.replace_from_file(  # type: ignore[attr-defined]
                self.path, self._table(), self.with_logs)
            return
        rows, logs = self.rows(), self.logs()
        try:
            self.store.raw_replace_all(rows, logs)
        finally:  # a store that stopped reading halfway leaves no part open (or locked)
            for reader in (rows, logs):
                if reader is not None:
                    reader.close()

    def rows(self) -> Generator[Row, None, None]:
        for _, rec in self.records():
            if not rec.is_log and (rec.ttl is None or rec.ttl > 0):
                yield rec.name, key_payload(self.store, rec), rec.ttl

    def logs(self) -> Generator[LogRecords, None, None] | None:
        return self._logs() if self.with_logs else None

    def _logs(self) -> Generator[LogRecords, None, None]:
        name, blobs = None, []
        for _, rec in self.records():
            if not rec.is_log:
                continue
            if rec.name != name and name is not None:
                yield name, blobs
                blobs = []
            name = rec.name
            blobs.append(log_payload(self.store, rec))
        if name is not None:
            yield name, blobs


def restore_backup(core: "Core", path: str | os.PathLike[str],
                   progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Replace the stores' keys (and logs) with backup ``path``'s, all or nothing.

    Returns ``{store: keys restored}``. Raises :class:`BackupError` (nothing changed) when the
    backup is damaged, partial, names a store this manager does not have, or holds a record a
    store would refuse. When a store fails while being replaced, it is left as it was and the
    stores replaced before it are put back; the error (kvstore's own) says so.
    """
    folder = Path(path).expanduser()
    manifest = verify_backup(folder)
    for store_name in manifest["stores"]:
        if store_name not in core.stores:
            raise BackupError(f"{folder}: the backup has store {store_name!r}, which this "
                              f"manager does not have ({', '.join(core.stores)})")
    with_logs = isinstance(manifest.get("version"), int) and manifest["version"] >= 2
    # SQLite first (its copy is one online backup), Redis last (the one store that needs no
    # copy: reading a big Redis back takes longest).
    parts = sorted((_Part(folder, name, info, core.stores[name], with_logs)
                    for name, info in manifest["stores"].items()),
                   key=lambda p: 0 if file_copy(p.store) else 1 + p.store.optimistic)
    counts = {name: 0 for name in manifest["stores"]}  # in the backup's order
    counts.update((part.name, part.validate()) for part in parts)
    for part in parts:  # an unavailable store fails here, before anything changes
        part.store.exists("kvstore-restore-probe")
    copies = _spare_folder(core)
    keep = False
    try:
        undo = _copy_current(parts[:-1], copies) if len(parts) > 1 else {}
        with _marked(copies, folder):
            _replace(parts, undo, counts, progress, copies)
    except BackupError as exc:
        keep = getattr(exc, "copy_kept", False)
        raise
    finally:
        if not keep:
            shutil.rmtree(copies, ignore_errors=True)
    core.forget_routes()
    return counts


@contextmanager
def _marked(copies: Path, backup: Path) -> Iterator[None]:
    """While the stores change: a marker naming the backup, flock-held by this process. A
    manager that opens and can take the lock knows the restore was killed, and finishes it
    (:func:`recover_restores`). A restore that ends, or fails as it reports, removes it."""
    path = copies / _MARKER
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps({"backup": str(backup.resolve())}).encode())
        os.fsync(fd)
        fsync_dir(copies)
        yield
    finally:
        os.unlink(path)
        os.close(fd)


def recover_restores(core: "Core", on_error: Callable[[BaseException], None] | None = None) -> int:
    """Finish the restores a killed process left halfway (run when a manager opens, like the
    commit journal's recovery): each is run again from its backup, so the stores end up all
    restored. One that cannot be finished now (a store unavailable) is kept for the next open.
    Returns how many were finished."""
    spare = (core.config.backup.path or default_data_dir() / "backups").expanduser()
    finished = 0
    for marker in sorted(spare.glob(f".tmp-restore-*/{_MARKER}")):
        fd = open_abandoned(marker)
        if fd is None:  # its process is alive and still restoring (or has just finished)
            continue
        try:
            data = os.read(fd, 1 << 16)
            try:
                if data:  # empty: killed before it was written, nothing had changed
                    restore_backup(core, json.loads(data)["backup"])
                    finished += 1
            except Exception as exc:  # kept: the next manager tries again
                if on_error is not None:
                    on_error(exc)
                continue
            shutil.rmtree(marker.parent, ignore_errors=True)
        finally:
            os.close(fd)
    return finished


def _copy_current(parts: list[_Part], copies: Path) -> dict[str, _Part]:
    """What the stores a later failure would put back hold now, as a backup in ``copies`` (a
    restore killed halfway leaves it behind, restorable like any backup)."""
    import datetime as dt

    try:
        infos = {p.name: write_part(p.name, p.store, copies) for p in parts}
        write_manifest(copies, infos, dt.datetime.now(dt.timezone.utc),
                       {"note": "the stores' contents before a restore, kept if it was stopped"})
    except OSError as exc:
        raise StoreUnavailableError(f"restore: cannot write the copy of the stores' current "
                                    f"contents in {copies}: {exc}; nothing was changed") from exc
    return {p.name: _Part(copies, p.name, infos[p.name], p.store, True) for p in parts}


def _spare_folder(core: "Core") -> Path:
    """A private temporary folder beside the configured backups, for the pre-restore copy."""
    spare = (core.config.backup.path or default_data_dir() / "backups").expanduser()
    try:
        make_private_dirs(spare)
        copies = spare / f".tmp-restore-{secrets.token_hex(6)}"
        copies.mkdir(mode=0o700)
    except OSError as exc:
        raise StoreUnavailableError(
            f"restore: cannot write the copy of the stores' current contents in {spare} "
            f"(backup.path) that would put them back if a store failed: "
            f"{exc.strerror or exc}; nothing was changed") from exc
    return copies


def _replace(parts: list[_Part], undo: dict[str, _Part], counts: dict[str, int],
             progress: Callable[[int], None] | None, copies: Path | None) -> None:
    done: list[_Part] = []
    total = 0
    for part in parts:
        try:
            part.replace()
        except BaseException as exc:
            left = []
            for earlier in reversed(done):
                try:
                    undo[earlier.name].replace()
                except Exception:  # keep going: put back as much as possible
                    left.append(earlier.name)
            if not isinstance(exc, Exception):
                raise
            back = ", ".join(p.name for p in done if p.name not in left)
            msg = (f"restore: store {part.name!r} failed ({type(exc).__name__}: {exc}); it was "
                   f"left as it was" + (f", and {back} put back as it was" if back else ""))
            if left:
                kept = BackupError(msg + f"; NOT put back (they hold the backup's contents): "
                                   f"{', '.join(left)}; what they held before is kept in "
                                   f"{copies} (restore it from there)")
                kept.copy_kept = True  # type: ignore[attr-defined]
                raise kept from exc
            error: Exception = BackupError(msg)
            # A store's own failure keeps its kind (unavailable...); data it refused is the
            # backup's fault: BackupError.
            if isinstance(exc, KVStoreError) and not isinstance(exc, (InvalidKeyError,
                                                                      SerializationError)):
                try:
                    error = type(exc)(msg)
                except TypeError:
                    pass
            raise error from exc
        done.append(part)
        total += counts[part.name]
        if progress is not None:
            progress(total)

