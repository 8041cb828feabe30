"""FileStore's writer lock: exclusive across threads (an RLock) and processes (``flock`` on
``<base_path>/.kvstore.lock``), held again by the same thread without deadlock."""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, ContextManager, Iterator

from .paths import Root, open_file, stat_file

__all__ = ["LOCK_NAME", "FolderLock"]

LOCK_NAME = ".kvstore.lock"


class FolderLock:
    """The lock of the folder ``root``."""

    def __init__(self, root: Root) -> None:
        self._root = root
        self._thread_lock = threading.RLock()
        self._fd: int | None = None
        self._owner = (0, 0, 0)  # (pid, inode, device) of the lock file descriptor
        self._depth = 0

    @contextmanager
    def held(self, io: Callable[[], ContextManager[Any]]) -> Iterator[None]:
        """Exclusive across threads and processes; taking it runs in ``io()`` (the store's
        error mapping, naming the key)."""
        with self._thread_lock:
            if self._depth:  # held already by this thread: a second flock would be undone
                self._depth += 1  # by the inner unlock
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            with io():
                fd = self._lock_file()
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _lock_file(self) -> int:
        """The flock'ed descriptor of ``.kvstore.lock``. Opened again in a child process (a
        flock belongs to an open file) and when the file at the path is another one than the
        descriptor's (the folder was replaced, by a restore or by hand, maybe while this
        process waited): the lock that excludes the others is the one in the folder now."""
        while True:
            fd = self._fd
            if fd is None or self._owner[0] != os.getpid():
                fd = open_file(self._root, (LOCK_NAME,), os.O_RDWR | os.O_CREAT, True)
                assert fd is not None  # O_CREAT, folder made
                st = os.fstat(fd)
                self._fd, self._owner = fd, (os.getpid(), st.st_ino, st.st_dev)
            fcntl.flock(fd, fcntl.LOCK_EX)
            now = stat_file(self._root, (LOCK_NAME,))
            if now is not None and (os.getpid(), now.st_ino, now.st_dev) == self._owner:
                return fd
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            self._fd = None

    def close(self) -> None:
        """Close this process's descriptor of the lock file (reopened when taken again)."""
        with self._thread_lock:
            if self._fd is not None and self._owner[0] == os.getpid():
                os.close(self._fd)
            self._fd = None
