"""FileStore: one file per key under ``base_path`` (see :mod:`kvstore.stores.file`)."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Callable, Iterator

from ..._commit import Before
from ...errors import (ConfigError, CorruptDataError, InvalidKeyError, SerializationError,
                       StoreUnavailableError)
from ...serializers import Serializer, SerializerSpec, encode_json_text
from ...store import KEEP, MISSING, TTL, Check, Op, PersistenceStore, conflict, decode_stored
from . import atomic, logs as logfile
from .format import Decoded, FileFormat, same
from .keys import EXTENSIONS, LOG_EXT, key_path, unquote
from .lock import FolderLock
from .paths import LinkRefused, Parts, Root, open_file, open_folder, read_file, walk
from .replace import replacement_files

__all__ = ["FileStore"]

_META_DIR = ".kvstore-meta"
_STALE_TEMP = 600.0


class FileStore(PersistenceStore):
    """Keys as files under ``base_path`` (see the module docstring for the layout).

    Args:
        base_path: the folder (default: ``files`` in the platform's user data folder); created
            with mode 0700, files with 0600.
        format: ``"json"`` (plain, editable files), ``"msgpack"`` or ``"pickle"`` (needs
            ``secret`` or a ``serializer`` with one).
        ttl_default: TTL for ``save`` without one (None: permanent).
        serializer: a :class:`~kvstore.Serializer` or name; sets the format (and compression).
        fsync: fsync each file and its folder (default True: a write survives a power loss).
        clock: time source for expiry (seconds since the epoch); inject one in tests.
    """

    durable = True
    crash_atomic = False  # one rename per key: a multi-key commit goes through the journal
    own_encoding = True  # encode/decode below: plain JSON files (the batch shortcuts are off)

    def __init__(self, base_path: str | os.PathLike[str] | None = None, format: str = "json",
                 ttl_default: TTL = None, *, serializer: SerializerSpec | None = None,
                 secret: bytes | str | None = None, fsync: bool = True,
                 clock: Callable[[], float] = time.time, _within: Root | None = None) -> None:
        if serializer is not None:
            resolved = Serializer.resolve(serializer, secret)
            format = resolved.format
        else:
            if format not in EXTENSIONS:
                raise ConfigError(f"format: {format!r} is not one of json, msgpack, pickle")
            resolved = Serializer.resolve(format, secret, setting="format")
        super().__init__(ttl_default=ttl_default, serializer=resolved)
        if base_path is None:
            import platformdirs

            base_path = Path(platformdirs.user_data_dir("kvstore", appauthor=False)) / "files"
        if _within is None:
            self.base_path = Path(os.path.expanduser(os.fspath(base_path))).resolve()
            self._root = Root(self.base_path)
        else:  # a nested store (the lock namespace), walked to like any folder below the parent
            self._root = _within.child(Path(base_path).name)
            self.base_path = self._root.path
        self._base_depth = len(self.base_path.parts)
        self.format = format
        self._ext = EXTENSIONS[format]
        # Plain JSON files unless compression makes them binary anyway.
        self._plain_json = format == "json" and resolved.compression is None
        self._fsync = fsync
        self._clock = clock
        self._lock = FolderLock(self._root)
        self._path_for = lru_cache(maxsize=8192)(self._compute_path)
        self._format = FileFormat(self._plain_json, self._blob, partial(PersistenceStore.decode, self),
                                  self._path_for)
        self._file_bytes = self._format.file_bytes
        try:
            folder = open_folder(self._root, (), create=True)
            assert folder is not None
            folder.close()
            self._remove_stale_temp_files()
        except LinkRefused as exc:
            raise _link_error(exc.path) from exc
        except OSError as exc:
            raise StoreUnavailableError(f"FileStore folder {self.base_path}: "
                                        f"{exc.strerror or exc}") from exc

    def describe(self) -> str:
        return f"base_path={str(self.base_path)!r}, format={self.format!r}"

    # -- keys and paths ----------------------------------------------------------------------------

    def _compute_path(self, key: str) -> Path:
        return key_path(self.base_path, key, self._ext)

    def check_key(self, key: Any) -> None:
        super().check_key(key)
        self._path_for(key)

    def _key_for(self, path: Path) -> str | None:
        rel = path.relative_to(self.base_path).parts
        if not rel[-1].endswith(self._ext):
            return None
        parts = [*rel[:-1], rel[-1][: -len(self._ext)]]
        try:
            key = "/".join(unquote(p) for p in parts)
            # Only a canonical name is a key: a hand-made `a%2Fb.json` or `x!.json` decodes to a
            # key whose own file is elsewhere, so listing it would name a key load() cannot read.
            return key if self._path_for(key) == path else None
        except (UnicodeDecodeError, ValueError):
            return None

    # -- encoding ------------------------------------------------------------------------------------

    def encode(self, key: str, value: Any) -> Any:
        if not self._plain_json:
            return super().encode(key, value)
        try:
            return encode_json_text(value, indent=2)
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"key {key!r}: cannot serialize {type(value).__name__} "
                                     f"with json: {exc}; nothing was written") from exc

    def decode(self, key: str, blob: Any) -> Any:
        if type(blob) is Decoded:
            return blob.value
        return super().decode(key, blob)

    def _blob(self, key: str, value: Any) -> Any:
        """The serializer's blob of ``value`` (the base store's encoding), whatever the files
        hold: what a snapshot or a log transfer hands to another store."""
        return PersistenceStore.encode(self, key, value)

    # -- file primitives: every step relative to a folder descriptor (see .paths, .atomic) -------

    def _rel(self, path: Path) -> Parts:
        """The segments of ``path`` below ``base_path``."""
        return path.parts[self._base_depth:]

    def _read(self, key: str) -> tuple[Any, float | None] | None:
        try:  # not `with self._io(key)`: the hottest path, and a generator costs a few µs
            data = read_file(self._root, self._path_for(key).parts[self._base_depth:])
        except (LinkRefused, OSError) as exc:
            raise self._error(exc, key) from exc
        return None if data is None else self._format.parse(key, data)

    def _live(self, key: str) -> tuple[Any, float | None] | None:
        entry = self._read(key)
        if entry is None or (entry[1] is not None and entry[1] <= self._clock()):
            return None
        return entry

    def _locked(self, key: str = "") -> Any:
        """The folder's writer lock (see :class:`.lock.FolderLock`); an error taking it names
        ``key``."""
        return self._lock.held(partial(self._io, key))

    def _remove(self, path: Path) -> bool:
        """Delete a key's file (True when it was there) and the folders it leaves empty."""
        return atomic.remove(self._root, self._rel(path))

    def _stage(self, writes: list[tuple[Path, bytes]]) -> list[tuple[atomic.Temp, Path]]:
        """Every temp file written (and fsynced) before the first rename: ``(temp, path)``."""
        temps = atomic.stage(self._root, [(self._rel(p), d) for p, d in writes], self._fsync)
        return [(t, p) for t, (p, _) in zip(temps, writes)]

    def _publish(self, temps: list[tuple[atomic.Temp, Path]], deletes: list[Path]) -> None:
        """Rename the temp files over their paths and remove ``deletes``: all of it, or, when a
        step fails, none of it (the replaced files are kept as hard links until the end)."""
        atomic.publish(self._root, [t for t, _ in temps], [self._rel(p) for p in deletes],
                        self._fsync)

    def _write_files(self, writes: list[tuple[Path, bytes]], deletes: list[Path]) -> None:
        """Write every temp file (fsynced) before the first rename; then renames, then deletes."""
        self._publish(self._stage(writes), deletes)

    @contextmanager
    def _io(self, key: str = "") -> Iterator[None]:
        """File errors as kvstore's: a link met on the way is an :class:`InvalidKeyError`, any
        other ``OSError`` a :class:`StoreUnavailableError`; both name the key."""
        try:
            yield
        except (LinkRefused, OSError) as exc:
            raise self._error(exc, key) from exc

    def _error(self, exc: LinkRefused | OSError,
               key: str) -> InvalidKeyError | StoreUnavailableError:
        if isinstance(exc, LinkRefused):
            return _link_error(exc.path, key)
        where = f"key {key!r}: " if key else ""
        what = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else exc
        return StoreUnavailableError(f"{where}FileStore {self.base_path}: {what}")

    # -- byte-level operations -------------------------------------------------------------------------

    def raw_get(self, key: str) -> Any:
        entry = self._read(key)
        if entry is None:
            return MISSING
        if entry[1] is not None and entry[1] <= self._clock():
            self._drop_expired(key)
            return MISSING
        return entry[0]

    def _drop_expired(self, key: str) -> None:
        """Remove an expired file found by a read, so TTL'd keys do not pile up on disk."""
        try:
            with self._locked():
                entry = self._read(key)  # again under the lock: a writer may have renewed it
                if entry is not None and entry[1] is not None and entry[1] <= self._clock():
                    self._remove(self._path_for(key))
        except (OSError, CorruptDataError, InvalidKeyError, LinkRefused):
            pass  # best effort: the key is invisible either way

    def raw_set(self, key: str, blob: Any, ttl: float | None) -> None:
        data = self._file_bytes(key, blob, None if ttl is None else self._clock() + ttl)
        with self._io(key), self._locked(key):
            self._write_files([(self._path_for(key), data)], [])

    def raw_set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        expires = None if ttl is None else self._clock() + ttl
        writes = [(self._path_for(k), self._file_bytes(k, b, expires)) for k, b in items]
        with self._io(), self._locked():
            self._write_files(writes, [])

    def raw_delete(self, key: str) -> bool:
        with self._io(key), self._locked(key):
            try:
                live = self._live(key) is not None
            except CorruptDataError:  # unreadable, but it is there: deleting it is the fix
                live = True
            removed = self._remove(self._path_for(key))
        return live and removed

    def raw_exists(self, key: str) -> bool:
        return self._live(key) is not None

    def raw_ttl(self, key: str) -> float | None:
        entry = self._live(key)
        if entry is None or entry[1] is None:
            return None
        return max(entry[1] - self._clock(), 0.0)

    def raw_incr(self, key: str, amount: int, ttl: float | None) -> int:
        with self._io(key), self._locked(key):
            entry = self._live(key)
            blob, expires = (MISSING, None) if entry is None else entry
            new, blob, expires = self._next_count(key, blob, expires, self._clock(), amount, ttl)
            self._write_files([(self._path_for(key), self._file_bytes(key, blob, expires))], [])
        return new

    def raw_add(self, key: str, blob: Any, ttl: float | None) -> bool:
        with self._io(key), self._locked(key):
            if self._live(key) is not None:
                return False
            expires = None if ttl is None else self._clock() + ttl
            self._write_files([(self._path_for(key), self._file_bytes(key, blob, expires))], [])
        return True

    def raw_cas(self, key: str, expected: Any, new: Any, ttl: Any) -> bool:
        with self._io(key), self._locked(key):
            entry = self._live(key)
            if entry is None or not same(entry[0], expected):
                return False
            path = self._path_for(key)
            if new is MISSING:
                self._write_files([], [path])
            else:
                self._write_files([(path, self._file_bytes(key, new, self._expiry(ttl, entry)))], [])
        return True

    def raw_touch(self, key: str, ttl: float | None) -> bool:
        with self._io(key), self._locked(key):
            entry = self._live(key)
            if entry is None:
                return False
            expires = None if ttl is None else self._clock() + ttl
            self._write_files([(self._path_for(key), self._file_bytes(key, entry[0], expires))], [])
        return True

    def _expiry(self, ttl: Any, entry: tuple[Any, float | None] | None) -> float | None:
        if ttl is KEEP:
            return None if entry is None else entry[1]
        return None if ttl is None else self._clock() + ttl

    def _listing(self, ext: str | None = None) -> Iterator[tuple[int, str, Path]]:
        """``(folder descriptor, file name, path)`` of every file with the extension, links
        and dot-folders skipped; the descriptor is valid until the next item."""
        suffix = ext or self._ext
        join = self.base_path.joinpath
        for fd, name, parts in walk(self._root, lambda n: n.endswith(suffix)):
            yield fd, name, join(*parts)

    def _walk(self, ext: str | None = None) -> Iterator[Path]:
        """The path of every file with the extension (see :meth:`_listing`)."""
        for _, _, path in self._listing(ext):
            yield path

    def _matching(self, prefix: str) -> Iterator[tuple[str, Path, float | None]]:
        for fd, name, path in self._listing():
            key = self._key_for(path)
            if key is None or not key.startswith(prefix):
                continue
            expires = self._format.expiry_of(fd, name)
            if expires is False:
                continue
            yield key, path, expires

    def raw_keys(self, prefix: str) -> Iterator[str]:
        now = self._clock()
        with self._io():
            found = sorted(self._matching(prefix))
        for key, _, expires in found:
            if expires is None or expires > now:
                yield key

    def raw_clear(self, prefix: str) -> int:
        live = 0
        with self._io(), self._locked():
            now = self._clock()
            for _, path, expires in list(self._matching(prefix)):
                if self._remove(path) and (expires is None or expires > now):
                    live += 1
        return live

    @contextmanager
    def raw_commit(self, ops: list[Op], checks: list[Check],
                    before: Before | None = None) -> Iterator[None]:
        # Under the store's flock: check, read the before-images, write every temp file, run
        # the caller's block, then publish (all renames, or none). The block runs outside
        # _io(): its errors are its own.
        with self._locked():
            with self._io():
                for key, expected in checks:
                    entry = self._live(key)
                    if not same(MISSING if entry is None else entry[0], expected):
                        raise conflict(key)
                final = {k: (b, t) for k, b, t in ops}  # the last op on a key wins
                if before is not None:  # every writer takes the flock: nobody comes between
                    before.images = self.raw_snapshot(list(final))
                writes = [(self._path_for(k), self._file_bytes(
                              k, b, self._expiry(t, self._live(k) if t is KEEP else None)))
                          for k, (b, t) in final.items() if b is not MISSING]
                deletes = [self._path_for(k) for k, (b, _) in final.items() if b is MISSING]
                temps = self._stage(writes)
            try:
                yield
            except BaseException:
                for tmp, _ in temps:
                    tmp.discard()  # a staged temp file that will not be published
                raise
            with self._io():
                self._publish(temps, deletes)

    # -- logs: one JSON Lines file per log (the format and damage rules: see .logs) ------------
    # <base_path>/<name>.jsonl, one {"seq": n, "record": ...} per line. Appends run under the
    # folder's flock; reads take no lock (a line is visible once its newline is written).

    def _log_path(self, name: str) -> Path:
        path = self._path_for(name)  # cached
        return path.with_name(path.name[: -len(self._ext)] + LOG_EXT)

    def encode_record(self, name: str, record: Any) -> Any:
        try:
            return encode_json_text(record)
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"log {name!r}: cannot serialize {type(record).__name__} "
                                     f"as JSON: {exc}; nothing was written") from exc

    def decode_record(self, name: str, blob: Any) -> Any:
        return blob  # _log_read has decoded the line

    def _log_open(self, name: str, flags: int) -> int | None:
        return open_file(self._root, self._rel(self._log_path(name)), flags,
                         create_dirs=bool(flags & os.O_CREAT))

    def raw_log_append(self, name: str, blob: Any) -> int:
        with self._io(name), self._locked(name):
            fd = self._log_open(name, os.O_RDWR | os.O_CREAT)
            assert fd is not None  # O_CREAT, folders made
            try:
                seq = logfile.append(fd, blob, self._fsync)
            finally:
                os.close(fd)
            return seq

    def raw_log_read(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        with self._io(name):
            fd = self._log_open(name, os.O_RDONLY)
            if fd is None:
                return []
            with os.fdopen(fd, "rb") as fh:
                return logfile.read(fh, after, limit, f"log {name!r} ({self._log_path(name)})")

    def raw_log_read_desc(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        with self._io(name):  # complete lines read from the end, a block at a time
            fd = self._log_open(name, os.O_RDONLY)
            rows = [] if fd is None else logfile.read_backwards(fd, after, limit)  # closes fd
        # A damaged line met: the forward read numbers it (and raises as it does).
        return super().raw_log_read_desc(name, after, limit) if rows is None else rows

    def raw_log_len(self, name: str) -> int:
        """The number the last line holds (a damaged line counts: it keeps its number)."""
        with self._io(name):
            fd = self._log_open(name, os.O_RDONLY)
            if fd is None:
                return 0
            try:
                return logfile.tail(fd)[1]
            finally:
                os.close(fd)

    def raw_log_delete(self, name: str) -> bool:
        with self._io(name), self._locked(name):
            return self._remove(self._log_path(name))

    def raw_log_names(self, prefix: str) -> list[str]:
        names = []
        with self._io():
            for path in self._walk(LOG_EXT):
                key = self._key_for(path.with_name(path.name[: -len(LOG_EXT)] + self._ext))
                if key is not None and key.startswith(prefix):
                    names.append(key)
        return sorted(names)

    def open_meta(self) -> "FileStore":
        return FileStore(base_path=self.base_path / _META_DIR, format="msgpack",
                         fsync=self._fsync, clock=self._clock, _within=self._root)

    def lock_id(self) -> str:
        return f"file:{self.base_path}"

    def raw_snapshot(self, keys: list[str]) -> list[tuple[str, Any, float | None]]:
        """Headered serializer blobs (bytes, like every other store), so a snapshot can be
        applied to any store: a migration, a transaction's rollback, a raw export."""
        now = self._clock()
        out: list[tuple[str, Any, float | None]] = []
        for key in keys:
            entry = self._live(key)
            if entry is None:
                out.append((key, MISSING, None))
            else:
                value = entry[0]
                if type(value) is Decoded:
                    value = self._blob(key, value.value)
                out.append((key, value, None if entry[1] is None else max(entry[1] - now, 0.0)))
        return out

    def _remove_stale_temp_files(self) -> None:
        """Temp files left by a crashed writer (older than 10 minutes) are removed."""
        cutoff = time.time() - _STALE_TEMP
        for fd, name, _ in walk(self._root, lambda n: n.startswith(".tmp-")):
            try:
                if os.stat(name, dir_fd=fd, follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(name, dir_fd=fd)
            except OSError:
                pass

    def close(self) -> None:
        meta = self.__dict__.get("_meta_store")
        if meta is not None:
            meta.close()
        self._lock.close()

    # -- restores and log transfer (see kvstore.rows) --------------------------------------------------

    def raw_replace_all(self, rows: Any, logs: Any) -> None:
        writes = replacement_files(rows, logs, self._clock(), self._path_for,
                                   self._file_bytes, self._log_path)
        with self._io(), self._locked():
            old = [path for _, path, _ in self._matching("")]
            if logs is not None:
                old += list(self._walk(LOG_EXT))
            deletes = [path for path in old if path not in writes]
            self._publish(self._stage(list(writes.items())), deletes)

    def raw_log_blobs(self, name: str, after: int = 0, limit: int | None = None) -> list[tuple[int, Any]]:
        # Headered bytes like every other store's, so a log moves to any store.
        return [(seq, self._blob(name, record))
                for seq, record in self.raw_log_read(name, after, limit)]

    def raw_log_blob_in(self, name: str, blob: Any) -> Any:
        assert self.serializer is not None
        return self.encode_record(name, decode_stored(name, blob, self.serializer))



def _link_error(path: Path, key: str = "") -> InvalidKeyError:
    where = f"key {key!r}: " if key else ""
    return InvalidKeyError(f"{where}{path} is a symbolic link: FileStore never follows links "
                           "inside its folder (one could lead outside it); replace it with a "
                           "real file or folder")

