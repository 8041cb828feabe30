"""Race-free access to a FileStore's folder: every path is walked from a descriptor.

Checking a path with ``lstat`` and then opening or renaming it by name leaves a gap in which a
folder can be swapped for a symbolic link, and the open then follows it (issue 21: files were
written outside ``base_path`` within seconds while two threads saved). Here the store's folder is
held open (:class:`Root`), every folder below it is opened relative to its parent's descriptor
with ``O_DIRECTORY | O_NOFOLLOW``, and every open, rename, link, unlink, mkdir, rmdir, stat and
listing runs relative to the descriptor of the folder it acts in. A link met at any moment, even
one swapped in mid-call, raises :class:`LinkRefused` and is never followed.

Paths are given as ``parts``: the segments below the root, as the key mapping produced them.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path
from typing import Callable, Iterator

from .._fs import make_private_dirs

__all__ = ["Root", "Folder", "LinkRefused", "Parts", "open_folder", "open_file", "read_file",
           "walk", "is_link"]

Parts = tuple[str, ...]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | _CLOEXEC
DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | NOFOLLOW
# O_NONBLOCK: a FIFO planted under a key's name must not hang a read.
_READ_FLAGS = os.O_RDONLY | NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
_MKDIR_TRIES = 5


class LinkRefused(Exception):
    """A step of a path is a symbolic link (maybe swapped in a moment ago): never followed."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path


def is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


class Root:
    """The store's folder, held open for the store's life.

    Each :meth:`fd` call checks, with one ``stat``, that ``path`` still names the folder the
    descriptor holds, and reopens it when the folder was replaced (a restore swaps in a new one;
    a person may delete and recreate it): writes never go to a folder that is no longer the
    store's. A replaced descriptor is kept open until :meth:`close`, because another thread may
    be using it that very moment (closing it could let the number name an unrelated file).

    ``parent`` makes a nested root (the store's ``.kvstore-meta``): looked up and opened from the
    parent's descriptor without following a link, like every other folder.
    """

    def __init__(self, path: Path, parent: Root | None = None) -> None:
        self.path = path
        self._parent = parent
        self._fd: int | None = None
        self._ident = (0, 0)
        self._retired: list[int] = []
        self._lock = threading.Lock()
        #: Bumped on each (re)open, so descriptors of files inside (the flock file) follow it.
        self.generation = 0

    def fd(self, create: bool = False) -> int | None:
        """The folder's descriptor; ``None`` when the folder does not exist and ``create`` is
        False (created with mode 0700 otherwise)."""
        try:
            st = self._lookup(create)
        except FileNotFoundError:
            if not create:
                return None
            self._make()
            st = self._lookup(create)
        if self._fd is not None and (st.st_ino, st.st_dev) == self._ident:
            return self._fd
        return self._reopen(create)

    def _lookup(self, create: bool) -> os.stat_result:
        if self._parent is None:
            return os.stat(self.path)
        parent = self._parent.fd(create)
        if parent is None:
            raise FileNotFoundError(errno.ENOENT, "no such folder", str(self.path))
        st = os.stat(self.path.name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            raise LinkRefused(self.path)
        return st

    def _make(self) -> None:
        if self._parent is None:
            make_private_dirs(self.path)
            return
        parent = self._parent.fd(True)
        assert parent is not None
        try:
            os.mkdir(self.path.name, 0o700, dir_fd=parent)
        except FileExistsError:  # created meanwhile (or a link: refused by the open)
            pass

    def _reopen(self, create: bool) -> int:
        with self._lock:
            if self._parent is None:
                fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
            else:
                parent = self._parent.fd(create)
                if parent is None:
                    raise FileNotFoundError(errno.ENOENT, "no such folder", str(self.path))
                fd = _open_dir(parent, self.path.name, self.path)
            st = os.fstat(fd)
            if self._fd is not None:
                self._retired.append(self._fd)
            self._fd, self._ident = fd, (st.st_ino, st.st_dev)
            self.generation += 1
            return fd

    def close(self) -> None:
        """Close every descriptor (the store reopens on its next call)."""
        with self._lock:
            for fd in self._retired + ([] if self._fd is None else [self._fd]):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._fd, self._retired = None, []


def _open_dir(dir_fd: int, name: str, where: Path) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and is_link(dir_fd, name)):
            raise LinkRefused(where) from exc
        raise


class Folder:
    """An open folder below the root: ``with open_folder(...) as fd``, closed on exit (the root's
    own descriptor is shared and stays open)."""

    __slots__ = ("fd", "_owned")

    def __init__(self, fd: int, owned: bool) -> None:
        self.fd = fd
        self._owned = owned

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self._owned = False
            os.close(self.fd)


def open_folder(root: Root, parts: Parts, create: bool = False) -> Folder | None:
    """The folder ``parts`` below the root, each step opened without following a link.

    ``None`` when a step is missing or is a file (no such key), unless ``create``: then missing
    folders are made (mode 0700) and a file in the way raises ``NotADirectoryError``. A step that
    is a symbolic link raises :class:`LinkRefused`.
    """
    fd = root.fd(create)
    if fd is None:
        return None
    owned = False
    try:
        for i, name in enumerate(parts):
            nxt = _step(fd, name, create, root.path.joinpath(*parts[:i + 1]))
            if owned:
                os.close(fd)
            if nxt is None:
                owned = False
                return None
            fd, owned = nxt, True
    except BaseException:
        if owned:
            os.close(fd)
        raise
    return Folder(fd, owned)


def _step(dir_fd: int, name: str, create: bool, where: Path) -> int | None:
    for _ in range(_MKDIR_TRIES):
        try:
            return _open_dir(dir_fd, name, where)
        except FileNotFoundError:
            if not create:
                return None
        except NotADirectoryError:
            if not create:
                return None
            raise
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:  # made meanwhile, or a link: the next open tells
            pass
    # Made and removed again each time (a folder swapped away under us): give up.
    raise FileNotFoundError(errno.ENOENT, "folder keeps disappearing", str(where))


def open_file(root: Root, parts: Parts, flags: int, create_dirs: bool = False) -> int | None:
    """A descriptor of the file ``parts`` (opened with ``O_NOFOLLOW``; created 0600 with
    ``O_CREAT``); ``None`` when it or a folder on the way does not exist."""
    folder = open_folder(root, parts[:-1], create_dirs)
    if folder is None:
        return None
    with folder as dir_fd:
        try:
            return os.open(parts[-1], flags | NOFOLLOW, 0o600, dir_fd=dir_fd)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LinkRefused(root.path.joinpath(*parts)) from exc
            raise


def read_fd(fd: int) -> bytes | None:
    """All bytes of an open file; ``None`` when it is not a regular file (a folder, a FIFO)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return None
    chunks = [os.read(fd, st.st_size + 1)]
    while chunks[-1]:  # the file grew (or the size was a hint only)
        chunks.append(os.read(fd, 65536))
    return b"".join(chunks)


def read_file(root: Root, parts: Parts) -> bytes | None:
    """The file's bytes; ``None`` when there is no such regular file."""
    try:
        fd = open_file(root, parts, _READ_FLAGS)
    except IsADirectoryError:
        return None
    if fd is None:
        return None
    try:
        return read_fd(fd)
    finally:
        os.close(fd)


def read_at(dir_fd: int, name: str, size: int | None = None) -> bytes | None:
    """The first ``size`` bytes (all: None) of the regular file ``name`` in an open folder;
    ``None`` when it is gone or is not a regular file. Links are not followed (``LinkRefused``
    is not raised here: a listing skips them)."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if size is not None:
            return os.pread(fd, size, 0)
        return read_fd(fd)
    finally:
        os.close(fd)


def walk(root: Root, match: Callable[[str], bool]) -> Iterator[tuple[int, str, Parts]]:
    """``(folder descriptor, name, parts)`` of every regular file whose name ``match``es, in
    every folder below the root except dot-folders (the store's own). Links are never followed;
    a folder removed or swapped for a link meanwhile is skipped. The descriptor is valid until
    the next item."""
    stack: list[Parts] = [()]
    while stack:
        parts = stack.pop()
        try:
            # A fresh descriptor even for the root: a listing reads from the descriptor's offset,
            # which the root's shared descriptor would share between threads.
            folder = open_folder(root, parts[:-1]) if parts else open_folder(root, ())
            if folder is None:
                continue
            with folder as parent:
                fd = os.open(parts[-1] if parts else ".", DIR_FLAGS, dir_fd=parent)
        except (LinkRefused, FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                continue
            raise
        try:
            with os.scandir(fd) as it:
                entries = list(it)
            for entry in entries:
                name = entry.name
                if entry.is_dir(follow_symlinks=False):
                    if not name.startswith("."):
                        stack.append(parts + (name,))
                elif match(name) and entry.is_file(follow_symlinks=False):
                    yield fd, name, parts + (name,)
        finally:
            os.close(fd)
