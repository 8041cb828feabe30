"""Backups: a consistent snapshot of every durable store, with a manifest and checksums.

A backup is a folder ``kvstore-backup-<UTC time>-<id>`` holding one part per store and
``manifest.json``::

    database.sqlite3   SQLite stores: the online backup API (never a copy of a file being written);
                       keys and logs of one moment
    cache.jsonl        other stores (files, Redis, PostgreSQL): JSON Lines of the exact stored bytes,
                       the keys, then every log's records in order (see kvstore.transfer)
    manifest.json      store, kind, key count, log and log record counts, bytes and sha256 of each
                       part; kvstore version; time

It is written under a temporary name and renamed when complete, so a half-written backup never
looks like a backup. :func:`restore_backup` (:mod:`kvstore.restore`) checks every checksum,
SQLite's integrity check and every record against the store it goes to before it changes
anything, then replaces each store's keys and logs at once. Manifest ``version`` 2 backups hold
logs; a restore of a version 1 backup (made before logs were backed up) leaves logs as they are.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from . import registry
from ._fs import fsync_dir, make_private_dirs
from .config import default_data_dir
from .errors import CorruptDataError, KVStoreError, StoreUnavailableError
from .store import PersistenceStore
from .transfer import export_jsonl, export_logs

if TYPE_CHECKING:
    from .core import Core

__all__ = ["create_backup", "prune_backups", "list_backups", "BackupError"]

MANIFEST = "manifest.json"
PREFIX = "kvstore-backup-"
VERSION = 2  # 2: parts hold logs too


class BackupError(CorruptDataError):
    """A backup is damaged, partial, or does not fit the stores it would go to (a record a
    store would refuse, a part that is not a regular file of the backup); nothing was changed."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_copy(store: PersistenceStore) -> bool:
    """Whether ``store``'s backend copies the whole store to one file (see
    :attr:`kvstore.registry.Backend.file_copy`): its backup part is that copy."""
    backend = registry.for_store(store)
    return backend is not None and backend.file_copy


def _backup_stores(core: "Core") -> Iterator[tuple[str, PersistenceStore]]:
    for name, store in core.stores.items():
        if store.durable:  # memory is not: it has its own snapshot file
            yield name, store


def _sqlite_counts(path: Path, table: str) -> tuple[int, int, int]:
    """``(live keys, logs, log records)`` of a SQLite part."""
    import time

    con = sqlite3.connect(path)
    try:
        keys = con.execute(f'SELECT count(*) FROM "{table}" WHERE expires_at IS NULL OR '
                           "expires_at > ?", (time.time(),)).fetchone()[0]
        if not con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                           (f"{table}_log",)).fetchone():
            return int(keys), 0, 0
        logs, records = con.execute(f'SELECT count(DISTINCT name), count(*) FROM "{table}_log"'
                                    ).fetchone()
        return int(keys), int(logs), int(records)
    finally:
        con.close()


def write_part(store_name: str, store: PersistenceStore, folder: Path) -> dict[str, Any]:
    """Write ``store``'s keys and logs into ``folder`` as one part; its manifest entry."""
    extra: dict[str, Any] = {}
    if file_copy(store):
        part = folder / f"{store_name}.sqlite3"
        store.backup_to(part)  # type: ignore[attr-defined]
        table = store.table  # type: ignore[attr-defined]
        keys, logs, records = _sqlite_counts(part, table)
        extra["table"] = table
    else:
        part = folder / f"{store_name}.jsonl"
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            keys = export_jsonl(store, fh, raw=store.serializer is not None)
            logs, records = export_logs(store, fh, raw=store.serializer is not None)
            fh.flush()
            os.fsync(fh.fileno())
    return {"kind": type(store).__name__, "file": part.name, "keys": keys, "logs": logs,
            "log_records": records, **extra, "bytes": part.stat().st_size, "sha256": _sha256(part)}


def write_manifest(folder: Path, parts: dict[str, Any], now: dt.datetime,
                   extra: dict[str, Any]) -> None:
    """Write (and fsync) ``folder``'s manifest for ``parts`` (entries of :func:`write_part`)."""
    from . import __version__

    manifest = {"format": "kvstore-backup", "version": VERSION, "kvstore_version": __version__,
                "created_at": now.isoformat(), "stores": parts, **extra}
    fd = os.open(folder / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(folder)


def create_backup(core: "Core", dest: str | os.PathLike[str] | None = None,
                  progress: Callable[[int], None] | None = None,
                  skip_unavailable: bool = False) -> Path:
    """Write a new backup inside folder ``dest`` (default: the configured backup folder).

    A store that is unavailable (Redis or PostgreSQL down) fails the backup with a
    :class:`StoreUnavailableError` naming it, and nothing is written; with
    ``skip_unavailable`` it is left out instead (the manifest lists it under ``skipped``).
    """
    folder = Path(dest) if dest is not None else (core.config.backup.path or default_data_dir() / "backups")
    folder = folder.expanduser()
    make_private_dirs(folder)
    now = dt.datetime.now(dt.timezone.utc)
    name = f"{PREFIX}{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{secrets.token_hex(3)}"
    tmp = folder / f".tmp-{name}"
    tmp.mkdir(mode=0o700)
    parts: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    try:
        total = 0
        for store_name, store in _backup_stores(core):
            try:
                store.exists("kvstore-backup-probe")
            except StoreUnavailableError as exc:
                if not skip_unavailable:
                    raise StoreUnavailableError(
                        f"backup: store {store_name!r} is unavailable ({exc}); nothing was "
                        "written (skip it with --skip-unavailable / skip_unavailable=True)"
                    ) from exc
                skipped[store_name] = str(exc)
                continue
            parts[store_name] = write_part(store_name, store, tmp)
            total += parts[store_name]["keys"]
            if progress is not None:
                progress(total)
        write_manifest(tmp, parts, now, {"skipped": skipped} if skipped else {})
        final = folder / name
        os.replace(tmp, final)
        fsync_dir(folder)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise BackupError(f"{path}: not a backup folder")
    if (path / MANIFEST).is_symlink():
        raise BackupError(f"{path}/{MANIFEST} is a symbolic link; refused")
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{path}: no {MANIFEST}; the backup is partial or not a backup") from None
    except ValueError as exc:
        raise BackupError(f"{path}/{MANIFEST}: damaged ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "kvstore-backup" \
            or not isinstance(manifest.get("stores"), dict):
        raise BackupError(f"{path}/{MANIFEST}: not a kvstore backup manifest")
    return manifest


def verify_backup(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check the manifest, every part's size and sha256, and SQLite parts' integrity."""
    folder = Path(path).expanduser()
    manifest = _read_manifest(folder)
    for store_name, info in manifest["stores"].items():
        try:
            part = folder / info["file"]
            if not isinstance(info["file"], str) or Path(info["file"]).name != info["file"] \
                    or info["file"] in ("", ".", ".."):
                raise BackupError(f"{folder}: part name {info['file']!r} is not a plain file name")
            check_part(folder, part, store_name)
            if part.stat().st_size != info["bytes"]:
                raise BackupError(f"{folder}: part {info['file']} has {part.stat().st_size} bytes, "
                                  f"the manifest says {info['bytes']}; the backup is damaged")
            if _sha256(part) != info["sha256"]:
                raise BackupError(f"{folder}: part {info['file']} does not match its sha256; "
                                  "the backup is damaged or was changed")
        except (KeyError, TypeError) as exc:
            raise BackupError(f"{folder}/{MANIFEST}: entry for {store_name!r} is incomplete "
                              f"({exc})") from None
        if part.suffix == ".sqlite3":
            con = sqlite3.connect(f"file:{part}?mode=ro", uri=True)
            try:
                ok = con.execute("PRAGMA integrity_check").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                raise BackupError(f"{folder}: {part.name} is not a valid SQLite file ({exc})") from None
            finally:
                con.close()
            if ok != "ok":
                raise BackupError(f"{folder}: {part.name} fails SQLite's integrity check: {ok}")
    return manifest


def check_part(folder: Path, part: Path, store_name: str) -> None:
    """Refuse a part that is missing, a symbolic link, not a regular file or outside ``folder``:
    a restore reads only the backup's own files."""
    try:
        mode = os.lstat(part).st_mode
    except FileNotFoundError:
        raise BackupError(f"{folder}: part {part.name} of store {store_name!r} is missing") from None
    if stat.S_ISLNK(mode):
        raise BackupError(f"{folder}: part {part.name} of store {store_name!r} is a symbolic "
                          "link; a backup's parts must be its own regular files")
    if not stat.S_ISREG(mode):
        raise BackupError(f"{folder}: part {part.name} of store {store_name!r} is not a regular file")
    if part.resolve().parent != folder.resolve():
        raise BackupError(f"{folder}: part {part.name} of store {store_name!r} is outside the "
                          "backup folder")


def list_backups(folder: str | os.PathLike[str]) -> list[Path]:
    """Complete backups in ``folder``, oldest first."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and p.name.startswith(PREFIX) and (p / MANIFEST).exists())


def prune_backups(folder: str | os.PathLike[str], retention: int) -> list[Path]:
    """Keep the newest ``retention`` backups in ``folder``; returns the ones deleted."""
    if retention < 1:
        raise KVStoreError(f"backup.retention: must be at least 1, got {retention}")
    backups = list_backups(folder)
    doomed = backups[:-retention] if len(backups) > retention else []
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed
