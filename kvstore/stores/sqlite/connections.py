"""SQLiteStore's connections: one per thread, closed when the thread ends; read-only files.

A SQLite connection holds two or three file descriptors (the database, its ``-wal``, its ``-shm``).
Kept until ``close()``, a thread-per-request server's thousands of short threads ran a process out
of descriptors (~500 requests under ``ulimit -n 1024``, then "unable to open database file" on
every call). So each connection is tied to a small token stored beside it in the thread's
``threading.local`` slot: when the thread ends Python frees the slot, the token dies, and its
finalizer closes the connection. The store tracks the tokens weakly, so ``close()`` still closes
every live connection and a finished thread's entry disappears by itself.

A database the process cannot write (a read-only mount, a read-only or immutable file or folder)
is opened read-only (``mode=ro``; ``immutable=1`` when a WAL file's shared-memory index cannot be
created on a read-only medium): reads work, and every write fails with SQLite's "attempt to write
a readonly database", which the store reports as :class:`~kvstore.StoreUnavailableError`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from urllib.parse import quote

from ..._fs import make_private_dirs
from ...errors import CorruptDataError, StoreUnavailableError

__all__ = ["Connections", "connect", "is_read_only", "prepare_file", "translate"]


class _Token:
    """Lives in one thread's local slot beside that thread's connection; dies with the thread."""

    __slots__ = ("finalizer", "__weakref__")

    finalizer: weakref.finalize


def _close(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error:  # closing must never raise into a dying thread or close()
        pass


class Connections:
    """The live connections of one store, each closed when its thread ends or at ``close_all``."""

    def __init__(self) -> None:
        self._tokens: "weakref.WeakSet[_Token]" = weakref.WeakSet()
        self._lock = threading.Lock()

    def adopt(self, local: threading.local, conn: sqlite3.Connection) -> sqlite3.Connection:
        """Make ``conn`` the calling thread's connection in ``local``, closed with the thread."""
        token = _Token()
        token.finalizer = weakref.finalize(token, _close, conn)
        token.finalizer.atexit = False  # at exit the process closes its files anyway
        local.conn = conn
        local.token = token
        with self._lock:
            self._tokens.add(token)
        return conn

    def close_all(self) -> None:
        """Close every live connection (other threads reopen one on their next call)."""
        with self._lock:
            tokens, self._tokens = list(self._tokens), weakref.WeakSet()
        for token in tokens:
            token.finalizer()

    def forget(self) -> list[sqlite3.Connection]:
        """In a child after ``fork``: never close (so never touch) the parent's connections;
        return them for the caller to keep referenced."""
        kept = []
        for token in list(self._tokens):
            detached = token.finalizer.detach()
            if detached is not None:
                kept.append(detached[2][0])
        self._tokens = weakref.WeakSet()
        return kept

    def __len__(self) -> int:
        """How many connections are open (for tests and diagnostics)."""
        with self._lock:
            return sum(1 for token in self._tokens if token.finalizer.alive)


def is_read_only(path: Path) -> bool:
    """True when this process cannot write ``path`` or create files beside it (SQLite needs
    both: the ``-wal``/``-shm`` or ``-journal`` files live in the same folder)."""
    return not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK))


def connect(path: Path, busy_timeout: float, synchronous: str, read_only: bool
            ) -> sqlite3.Connection:
    """A configured connection to ``path`` (read-only ones refuse every write)."""
    if read_only:
        return _connect_read_only(path, busy_timeout)
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None,
                           check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        # Switching a new file to WAL takes an exclusive lock that the busy timeout does not
        # wait for: processes opening a fresh database together retry instead of failing.
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        # A REPLACE fires the delete trigger of the row it replaces (the bound's count).
        conn.execute("PRAGMA recursive_triggers = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_read_only(path: Path, busy_timeout: float) -> sqlite3.Connection:
    uri = f"file:{quote(os.fspath(path))}?mode=ro"
    try:
        return _open_uri(uri, busy_timeout)
    except sqlite3.OperationalError as exc:
        if "unable to open" not in str(exc):
            raise
    # A WAL database on a read-only medium without its -shm file cannot build the shared index:
    # SQLite then opens it only as immutable (no other writer can exist on such a medium).
    return _open_uri(uri + "&immutable=1", busy_timeout)


def _open_uri(uri: str, busy_timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None,
                           check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the file now
    except BaseException:
        conn.close()
        raise
    return conn


def prepare_file(path: Path) -> bool:
    """Create the file if missing; True when it exists but cannot be written here."""
    try:
        if path.exists():
            return is_read_only(path)
        make_private_dirs(path.parent)
        # Created here, owner-only, before SQLite would create it with the umask's mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as exc:
        raise StoreUnavailableError(f"SQLite file {path}: {exc.strerror or exc}") from exc
    return False


def translate(exc: sqlite3.Error, path: Path, busy_timeout: float) -> Exception:
    """kvstore's error for a sqlite3 one on the file ``path``: locked -> unavailable, damaged ->
    corrupt."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError):
        if "locked" in text or "busy" in text:
            return StoreUnavailableError(
                f"SQLite file {path} stayed locked by another writer for "
                f"{busy_timeout:g}s: {text}")
        if "readonly" in text:
            return StoreUnavailableError(f"SQLite file {path} is read-only here "
                                         f"(reads work, writes are refused): {text}")
        return StoreUnavailableError(f"SQLite file {path}: {text}")
    if isinstance(exc, sqlite3.DatabaseError):
        return CorruptDataError(f"SQLite file {path} is damaged: {exc}")
    return StoreUnavailableError(f"SQLite file {path}: {text}")
