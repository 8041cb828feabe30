"""FileStore: one file per key under ``base_path``, written atomically.

Key -> path. A key is split on ``/``; each part becomes one path segment:

- Letters, digits (any script) and ``-_.,:@+=~`` and space stay as they are; every other
  character (``%``, ``\\``, NUL, control characters, other punctuation) becomes ``%XX`` of its
  UTF-8 bytes. A leading ``.`` is written ``%2E``, so ``.`` and ``..`` can never step out of a
  folder and the store's own dot-files (temp files, the lock) never collide with a key.
- The last segment gets the format's extension: ``config/settings`` -> ``config/settings.json``.
  A folder segment that would end in that extension has its last dot encoded, so a folder can
  never collide with a key's file.
- Empty segments (a leading ``/``, ``a//b``, a trailing ``/``) and names too long for the file
  system (a segment over 200 bytes, a path over 3000) raise ``InvalidKeyError`` (a ValueError).

The mapping is exactly reversible (``keys()`` decodes paths back to keys; a hand-made file whose
name is not the canonical encoding of its decoded key, e.g. ``a%2Fb.json``, is not listed) and
every resolved path is checked to lie inside ``base_path``. Symbolic links inside the folder are
never followed, not even one swapped in mid-call: each folder below ``base_path`` is opened from
its parent's descriptor with ``O_DIRECTORY | O_NOFOLLOW``, and every open, rename, unlink, mkdir,
stat and listing runs relative to a folder's descriptor (see :mod:`._paths`). A key whose path
meets a link raises :class:`InvalidKeyError` naming the key and the link; ``keys()`` skips links.
``base_path`` itself is looked up on every call, so a folder replaced while the store is open (a
restore, a delete by hand) is the one used from the next call on. Case-insensitive file systems
(macOS, Windows defaults) would merge keys differing only in case: not supported.

File contents. ``format="json"``: plain JSON of the value, readable and editable by a person;
types JSON lacks are tagged objects (``{"__kv__": "datetime", "v": "..."}``). A key with a TTL
is wrapped: ``{"__kv__": "ttl", "expires_at": <unix time>, "value": ...}``. ``msgpack`` and
``pickle``: the serializer's self-describing blob, prefixed by ``b"\\xc1t"`` and the expiry as
a little-endian double when there is a TTL.

Writes go to a temp file in the same folder, are fsynced (``fsync=True``), then ``os.replace``d
over the key's file, and the folder is fsynced: a reader sees the old or the new file, never a
half-written one. Writers (threads and processes) take an exclusive ``flock`` on
``<base_path>/.kvstore.lock``, which makes ``incr``, set-if-absent, compare-and-swap (on the
file's exact bytes) and transactions atomic; readers take no lock. A write of several files
keeps a hard link to each file it replaces until every rename is done, so a failure partway
(a folder where a file must go, a full disk) puts the earlier files back.

Locks live in ``<base_path>/.kvstore-meta/`` (dot-folders are never keys), reached the same way.
Logs are JSON Lines files beside the keys' files (see :mod:`._filelog`).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import threading
import time
import unicodedata
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

from .._commit import Before
from ..errors import (ConfigError, CorruptDataError, InvalidKeyError, SerializationError,
                      StoreUnavailableError)
from ..serializers import HEADER_BYTE, Serializer, SerializerSpec, decode_json_text, encode_json_text
from ..store import (KEEP, MISSING, TTL, Check, Op, PersistenceStore, conflict, decode_stored,
                     same_blob)
from . import _atomic, _filelog
from ._filereplace import replace_files
from ._paths import (LinkRefused, Parts, Root, open_file, open_folder, read_at, read_file,
                     stat_file, walk)

__all__ = ["FileStore"]

_EXTENSIONS = {"json": ".json", "msgpack": ".msgpack", "pickle": ".pickle"}
_SAFE_PUNCT = set("-_.,:@+=~ ")
_MAX_SEGMENT = 200
_MAX_PATH = 3000
_TTL_MAGIC = HEADER_BYTE + b"t"
_TTL_HEAD = re.compile(rb'^\s*\{\s*"__kv__"\s*:\s*"ttl"\s*,\s*"expires_at"\s*:\s*(-?[0-9.eE+-]+)')
_LOCK_NAME = ".kvstore.lock"
_META_DIR = ".kvstore-meta"
_STALE_TEMP = 600.0


class _Decoded:
    """A value already decoded from a plain JSON file (so a stored ``bytes`` value is never
    mistaken for a serializer blob), with the file's bytes, which compare-and-swap compares."""

    __slots__ = ("value", "raw")

    def __init__(self, value: Any, raw: bytes) -> None:
        self.value = value
        self.raw = raw


def _same(current: Any, expected: Any) -> bool:
    """Whether a key's current blob is still the one read (plain JSON: the same file bytes) or
    written (plain JSON: the same value as the JSON text that was written)."""
    if type(current) is _Decoded:
        if isinstance(expected, str):
            return encode_json_text(current.value, indent=2) == expected
        current = current.raw
    if type(expected) is _Decoded:
        expected = expected.raw
    return same_blob(current, expected)


def _safe_char(ch: str) -> bool:
    if ch in _SAFE_PUNCT:
        return True
    if ch.isascii():
        return ch.isalnum()
    # Letters and digits of any script; no format/control/combining-only oddities.
    return unicodedata.category(ch)[0] in ("L", "N")


def _quote(segment: str) -> str:
    out = []
    for ch in segment:
        if _safe_char(ch):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    text = "".join(out)
    if text.startswith("."):
        text = "%2E" + text[1:]
    return text


_UNQUOTE = re.compile(r"(?:%[0-9A-F]{2})+")


def _unquote(segment: str) -> str:
    return _UNQUOTE.sub(lambda m: bytes.fromhex(m.group(0).replace("%", "")).decode("utf-8"), segment)


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

    def __init__(self, base_path: str | os.PathLike[str] | None = None, format: str = "json",
                 ttl_default: TTL = None, *, serializer: SerializerSpec | None = None,
                 secret: bytes | str | None = None, fsync: bool = True,
                 clock: Callable[[], float] = time.time, _within: Root | None = None) -> None:
        if serializer is not None:
            resolved = Serializer.resolve(serializer, secret)
            format = resolved.format
        else:
            if format not in _EXTENSIONS:
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
        self._ext = _EXTENSIONS[format]
        # Plain JSON files unless compression makes them binary anyway.
        self._plain_json = format == "json" and resolved.compression is None
        self._fsync = fsync
        self._clock = clock
        self._thread_lock = threading.RLock()
        self._lock_fd: int | None = None
        self._lock_owner = (0, 0, 0)  # (pid, inode, device) of the lock file descriptor
        self._lock_depth = 0
        self._path_for = lru_cache(maxsize=8192)(self._compute_path)
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
        segments = key.split("/")
        if any(not s for s in segments):
            raise InvalidKeyError(f"key {key!r}: empty path segment (leading, trailing or double "
                                  "'/') cannot be stored as a file")
        encoded = [_quote(s) for s in segments]
        for i, seg in enumerate(encoded[:-1]):
            if seg.endswith(self._ext):
                cut = len(seg) - len(self._ext)
                encoded[i] = seg[:cut] + "%2E" + seg[cut + 1:]
        encoded[-1] += self._ext
        if any(len(s.encode("utf-8")) > _MAX_SEGMENT for s in encoded) or \
                sum(len(s.encode("utf-8")) + 1 for s in encoded) > _MAX_PATH:
            raise InvalidKeyError(f"key {key[:60]!r}... is too long for a file name")
        path = self.base_path.joinpath(*encoded)
        # Defence in depth: the encoding already makes an escape impossible.
        if os.path.commonpath([self.base_path, os.path.normpath(path)]) != str(self.base_path):
            raise InvalidKeyError(f"key {key!r} would leave the store's folder")
        return path

    def check_key(self, key: Any) -> None:
        super().check_key(key)
        self._path_for(key)

    def _key_for(self, path: Path) -> str | None:
        rel = path.relative_to(self.base_path).parts
        if not rel[-1].endswith(self._ext):
            return None
        parts = [*rel[:-1], rel[-1][: -len(self._ext)]]
        try:
            key = "/".join(_unquote(p) for p in parts)
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
        if type(blob) is _Decoded:
            return blob.value
        return super().decode(key, blob)

    def _file_bytes(self, key: str, blob: Any, expires: float | None) -> bytes:
        if self._plain_json:
            if type(blob) is _Decoded:  # rewritten as it is (a new expiry)
                blob = encode_json_text(blob.value, indent=2)
            elif isinstance(blob, (bytes, bytearray)):  # a blob from another store: keep files plain
                assert self.serializer is not None
                blob = encode_json_text(decode_stored(key, blob, self.serializer), indent=2)
            if expires is None:
                return (blob + "\n").encode("utf-8")
            return ('{"__kv__": "ttl", "expires_at": ' + repr(expires) + ', "value": '
                    + blob + "}\n").encode("utf-8")
        if isinstance(blob, str):  # JSON text from a plain-JSON FileStore (same-store transfer)
            assert self.serializer is not None
            blob = PersistenceStore.encode(self, key, decode_json_text(blob))
        if expires is None:
            return bytes(blob)
        return _TTL_MAGIC + struct.pack("<d", expires) + bytes(blob)

    def _parse(self, key: str, data: bytes) -> tuple[Any, float | None]:
        """``(stored blob or decoded JSON value, expires_at)`` from a file's bytes."""
        if self._plain_json:
            if data[:1] == HEADER_BYTE:  # a binary blob placed here by a migration
                return data, None
            try:
                text = data.decode("utf-8")
                if b'"ttl"' in data and b'"__kv__"' in data:
                    # Look for the wrapper *before* tags are decoded: a user dict shaped like the
                    # wrapper was escaped by the encoder, and only decodes to that shape later.
                    raw = json.loads(text)
                    if type(raw) is dict and raw.get("__kv__") == "ttl" and "value" in raw:
                        expires = raw.get("expires_at")
                        if not isinstance(expires, (int, float)) or isinstance(expires, bool) \
                                or len(raw) != 3:
                            raise CorruptDataError(f"key {key!r}: file {self._path_for(key)} has "
                                                   "a malformed TTL wrapper")
                        inner = raw["value"]
                        if isinstance(inner, (dict, list)):
                            inner = decode_json_text(json.dumps(inner))
                        return _Decoded(inner, data), float(expires)
                return _Decoded(decode_json_text(text), data), None
            except CorruptDataError:
                raise
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise CorruptDataError(f"key {key!r}: file {self._path_for(key)} is not valid "
                                       f"JSON ({exc})") from exc
        if data[:2] == _TTL_MAGIC:
            if len(data) < 10:
                raise CorruptDataError(f"key {key!r}: file is truncated")
            return data[10:], struct.unpack("<d", data[2:10])[0]
        return data, None

    # -- file primitives: every step relative to a folder descriptor (see _paths, _atomic) -------

    def _rel(self, path: Path) -> Parts:
        """The segments of ``path`` below ``base_path``."""
        return path.parts[self._base_depth:]

    def _read(self, key: str) -> tuple[Any, float | None] | None:
        try:  # not `with self._io(key)`: the hottest path, and a generator costs a few µs
            data = read_file(self._root, self._path_for(key).parts[self._base_depth:])
        except (LinkRefused, OSError) as exc:
            raise self._error(exc, key) from exc
        return None if data is None else self._parse(key, data)

    def _live(self, key: str) -> tuple[Any, float | None] | None:
        entry = self._read(key)
        if entry is None or (entry[1] is not None and entry[1] <= self._clock()):
            return None
        return entry

    @contextmanager
    def _locked(self, key: str = "") -> Iterator[None]:
        """Exclusive across threads (RLock) and processes (flock on the lock file); an error
        taking it names ``key``."""
        with self._thread_lock:
            if self._lock_depth:  # held already by this thread: a second flock would be undone
                self._lock_depth += 1  # by the inner unlock
                try:
                    yield
                finally:
                    self._lock_depth -= 1
                return
            with self._io(key):
                fd = self._lock_file()
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _lock_file(self) -> int:
        """The flock'ed descriptor of ``.kvstore.lock``. Opened again in a child process (a
        flock belongs to an open file) and when the file at the path is another one than the
        descriptor's (the folder was replaced, by a restore or by hand, maybe while this
        process waited): the lock that excludes the others is the one in the folder now."""
        while True:
            fd = self._lock_fd
            if fd is None or self._lock_owner[0] != os.getpid():
                fd = open_file(self._root, (_LOCK_NAME,), os.O_RDWR | os.O_CREAT, True)
                assert fd is not None  # O_CREAT, folder made
                st = os.fstat(fd)
                self._lock_fd, self._lock_owner = fd, (os.getpid(), st.st_ino, st.st_dev)
            fcntl.flock(fd, fcntl.LOCK_EX)
            now = stat_file(self._root, (_LOCK_NAME,))
            if now is not None and (os.getpid(), now.st_ino, now.st_dev) == self._lock_owner:
                return fd
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            self._lock_fd = None

    def _remove(self, path: Path) -> bool:
        """Delete a key's file (True when it was there) and the folders it leaves empty."""
        return _atomic.remove(self._root, self._rel(path))

    def _stage(self, writes: list[tuple[Path, bytes]]) -> list[tuple[_atomic.Temp, Path]]:
        """Every temp file written (and fsynced) before the first rename: ``(temp, path)``."""
        temps = _atomic.stage(self._root, [(self._rel(p), d) for p, d in writes], self._fsync)
        return [(t, p) for t, (p, _) in zip(temps, writes)]

    def _publish(self, temps: list[tuple[_atomic.Temp, Path]], deletes: list[Path]) -> None:
        """Rename the temp files over their paths and remove ``deletes``: all of it, or, when a
        step fails, none of it (the replaced files are kept as hard links until the end)."""
        _atomic.publish(self._root, [t for t, _ in temps], [self._rel(p) for p in deletes],
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
            if entry is None or not _same(entry[0], expected):
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

    def _expiry_of(self, dir_fd: int, name: str) -> float | None | bool:
        """Expiry read from the file's first bytes (False: file gone or unreadable)."""
        head = read_at(dir_fd, name, 128)
        if head is None:
            return False
        if self._plain_json:
            m = _TTL_HEAD.match(head)
            if m:
                try:
                    return float(m.group(1))
                except ValueError:
                    pass
            if b'"__kv__"' in head and b'"ttl"' in head:  # reformatted by hand: parse it all
                data = read_at(dir_fd, name)
                try:
                    return None if data is None else self._parse("?", data)[1]
                except CorruptDataError:
                    return None
            return None
        if head[:2] == _TTL_MAGIC and len(head) >= 10:
            return float(struct.unpack("<d", head[2:10])[0])
        return None

    def _matching(self, prefix: str) -> Iterator[tuple[str, Path, float | None]]:
        for fd, name, path in self._listing():
            key = self._key_for(path)
            if key is None or not key.startswith(prefix):
                continue
            expires = self._expiry_of(fd, name)
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
                    if not _same(MISSING if entry is None else entry[0], expected):
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
                    _unlink(tmp)
                raise
            with self._io():
                self._publish(temps, deletes)

    # -- logs: one JSON Lines file per log (the format and damage rules: see _filelog) ------------
    # <base_path>/<name>.jsonl, one {"seq": n, "record": ...} per line. Appends run under the
    # folder's flock; reads take no lock (a line is visible once its newline is written).

    def _log_path(self, name: str) -> Path:
        path = self._path_for(name)  # cached
        return path.with_name(path.name[: -len(self._ext)] + _LOG_EXT)

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
                end, last = _filelog.tail(fd)
                if os.fstat(fd).st_size != end:  # a torn last line: cut it off
                    os.ftruncate(fd, end)
                seq = last + 1
                view = memoryview(_filelog.line(seq, blob))
                offset = end
                while view:
                    written = os.pwrite(fd, view, offset)
                    view, offset = view[written:], offset + written
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            return seq

    def raw_log_read(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        with self._io(name):
            fd = self._log_open(name, os.O_RDONLY)
            if fd is None:
                return []
            with os.fdopen(fd, "rb") as fh:
                return _filelog.read(fh, after, limit, f"log {name!r} ({self._log_path(name)})")

    def raw_log_len(self, name: str) -> int:
        """The number the last line holds (a damaged line counts: it keeps its number)."""
        with self._io(name):
            fd = self._log_open(name, os.O_RDONLY)
            if fd is None:
                return 0
            try:
                return _filelog.tail(fd)[1]
            finally:
                os.close(fd)

    def raw_log_delete(self, name: str) -> bool:
        with self._io(name), self._locked(name):
            return self._remove(self._log_path(name))

    def raw_log_names(self, prefix: str) -> list[str]:
        names = []
        with self._io():
            for path in self._walk(_LOG_EXT):
                key = self._key_for(path.with_name(path.name[: -len(_LOG_EXT)] + self._ext))
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
                if type(value) is _Decoded:
                    value = PersistenceStore.encode(self, key, value.value)
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
        with self._thread_lock:
            if self._lock_fd is not None and self._lock_owner[0] == os.getpid():
                os.close(self._lock_fd)
            self._lock_fd = None

    # -- restores and log transfer (see kvstore.rows) --------------------------------------------------

    def raw_replace_all(self, rows: Any, logs: Any) -> None:
        replace_files(self, rows, logs, _LOG_EXT)

    def raw_log_blobs(self, name: str, after: int = 0, limit: int | None = None) -> list[tuple[int, Any]]:
        # Headered bytes like every other store's, so a log moves to any store.
        return [(seq, PersistenceStore.encode(self, name, record))
                for seq, record in self.raw_log_read(name, after, limit)]

    def raw_log_blob_in(self, name: str, blob: Any) -> Any:
        assert self.serializer is not None
        return self.encode_record(name, decode_stored(name, blob, self.serializer))


_LOG_EXT = ".jsonl"


def _link_error(path: Path, key: str = "") -> InvalidKeyError:
    where = f"key {key!r}: " if key else ""
    return InvalidKeyError(f"{where}{path} is a symbolic link: FileStore never follows links "
                           "inside its folder (one could lead outside it); replace it with a "
                           "real file or folder")


def _unlink(tmp: _atomic.Temp) -> None:
    """Remove a staged temp file that will not be published."""
    tmp.discard()
