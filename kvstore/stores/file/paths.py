"""Race-free access to a FileStore's folder: nothing inside it is ever reached through a link.

Checking a path with ``lstat`` and then opening or renaming it by name leaves a gap in which a
folder can be swapped for a symbolic link, and the open then follows it (issue 21: files were
written outside ``base_path`` within seconds while two threads saved). Here a path below the
store's folder is walked one step at a time: the first step is opened by its full path with
``O_NOFOLLOW`` (the store's own folder is named by the path the user configured, resolved once),
each further folder relative to its parent's descriptor with ``O_DIRECTORY | O_NOFOLLOW``, and
every open, rename, link, unlink, mkdir, rmdir, stat and listing runs relative to the descriptor
of the folder it acts in. A link met at any moment, even one swapped in mid-call, raises
:class:`LinkRefused` and is never followed.

The store's folder itself is looked up by path on every call, never held open: a folder that
was replaced (a restore swaps in a new one; a person deletes and recreates it) is the one used
from the next call on, and nothing is ever written into a folder that is no longer the store's.
This costs no more than opening by path did: a key directly in the folder is one ``open``.

Paths are given as ``parts``: the segments below the root, as the key mapping produced them.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Callable, Iterator

from ..._fs import make_private_dirs

__all__ = ["Root", "Folder", "LinkRefused", "Parts", "NOFOLLOW", "open_folder", "open_file",
           "read_file", "read_at", "stat_file", "walk"]

Parts = tuple[str, ...]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | _CLOEXEC
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
DIR_FLAGS = os.O_RDONLY | _DIRECTORY | NOFOLLOW
# O_NONBLOCK: a FIFO planted under a key's name must not hang a read.
_READ_FLAGS = os.O_RDONLY | NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
_MKDIR_TRIES = 5


class LinkRefused(Exception):
    """A step of a path is a symbolic link (maybe swapped in a moment ago): never followed."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path


class Root:
    """Where a store's files live: ``base`` (the folder the user named, trusted as it is) and
    the ``inner`` steps below it (the lock namespace ``.kvstore-meta``), which, like every
    folder below ``base``, are walked without following a link."""

    __slots__ = ("base", "inner", "path", "_prefix")

    def __init__(self, base: Path, inner: Parts = ()) -> None:
        self.base = base
        self.inner = inner
        self.path = base.joinpath(*inner)
        self._prefix = os.path.join(base, "")  # "<base>/": joined to the first step's name

    def full(self, name: str) -> str:
        """The full path of ``name`` directly in ``base`` (a string: cheaper than a Path)."""
        return self._prefix + name

    def child(self, name: str) -> Root:
        return Root(self.base, self.inner + (name,))

    def where(self, parts: Parts) -> Path:
        return self.path.joinpath(*parts)


def _swapped(dir_fd: int | None, name: str) -> bool:
    """After ``ENOTDIR`` from an ``O_DIRECTORY | O_NOFOLLOW`` open (Linux answers so for a link):
    whether ``name`` is a link, or a folder or nothing by now (so it was one a moment ago), rather
    than a file in the way."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        return True
    return stat.S_ISLNK(mode) or stat.S_ISDIR(mode)


class _Link(Exception):
    """A step is a link (its full path is added by the caller, only then: it costs a Path)."""


def _open_dir(dir_fd: int | None, name: str) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and _swapped(dir_fd, name)):
            raise _Link() from exc
        raise


class Folder:
    """An open folder: ``with open_folder(...) as fd``; the descriptor is closed on exit."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def _open_base(root: Root, create: bool) -> int | None:
    try:
        return os.open(root.base, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    except FileNotFoundError:
        if not create:
            return None
    make_private_dirs(root.base)
    return os.open(root.base, os.O_RDONLY | _DIRECTORY | _CLOEXEC)


def open_folder(root: Root, parts: Parts, create: bool = False) -> Folder | None:
    """The folder ``parts`` below the root, each step opened without following a link.

    ``None`` when a step is missing or is a file (no such key), unless ``create``: then missing
    folders are made (mode 0700) and a file in the way raises ``NotADirectoryError``. A step that
    is a symbolic link raises :class:`LinkRefused`.
    """
    steps = root.inner + parts
    if not steps:
        base = _open_base(root, create)
        return None if base is None else Folder(base)
    # The first step by its full path (so the base needs no descriptor of its own), the rest
    # relative to the folder above.
    fd: int | None = None
    i = 0
    try:
        for i, name in enumerate(steps):
            nxt = _step(fd, root.full(name) if fd is None else name, create, root)
            if fd is not None:
                os.close(fd)
            fd = nxt
            if fd is None:
                return None
    except BaseException as exc:
        if fd is not None:
            os.close(fd)
        if isinstance(exc, _Link):
            raise LinkRefused(root.base.joinpath(*steps[:i + 1])) from exc.__cause__
        raise
    assert fd is not None
    return Folder(fd)


def _step(dir_fd: int | None, name: str, create: bool, root: Root) -> int | None:
    for _ in range(_MKDIR_TRIES):
        try:
            return _open_dir(dir_fd, name)
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
        except FileNotFoundError:
            if dir_fd is not None:
                raise
            make_private_dirs(root.base)  # the store's folder itself is missing
    # Made and removed again each time (a folder swapped away under us): give up.
    raise FileNotFoundError(errno.ENOENT, "folder keeps disappearing", name)


def open_file(root: Root, parts: Parts, flags: int, create_dirs: bool = False) -> int | None:
    """A descriptor of the file ``parts`` (opened with ``O_NOFOLLOW``; created 0600 with
    ``O_CREAT``); ``None`` when it or a folder on the way does not exist (never with ``O_CREAT``
    and ``create_dirs``: a folder removed meanwhile raises its ``OSError``)."""
    try:
        if not root.inner and len(parts) == 1:  # directly in the store's folder: one open
            try:
                return _open_leaf(None, root.full(parts[0]), flags)
            except FileNotFoundError:
                if not create_dirs:
                    return None
                make_private_dirs(root.base)
                return _open_leaf(None, root.full(parts[0]), flags)
        folder = open_folder(root, parts[:-1], create_dirs)
        if folder is None:
            return None
        with folder as dir_fd:
            try:
                return _open_leaf(dir_fd, parts[-1], flags)
            except FileNotFoundError:
                if flags & os.O_CREAT:  # the folder was removed since it was opened
                    raise
                return None
    except _Link as exc:
        raise LinkRefused(root.where(parts)) from exc.__cause__


def _open_leaf(dir_fd: int | None, name: str, flags: int) -> int | None:
    try:
        return os.open(name, flags | NOFOLLOW, 0o600, dir_fd=dir_fd)
    except NotADirectoryError:
        if flags & os.O_CREAT:
            raise
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Link() from exc
        raise


def stat_file(root: Root, parts: Parts) -> os.stat_result | None:
    """``lstat`` of the file ``parts``; ``None`` when it does not exist."""
    try:
        if not root.inner and len(parts) == 1:
            return os.stat(root.full(parts[0]), follow_symlinks=False)
        folder = open_folder(root, parts[:-1])
        if folder is None:
            return None
        with folder as dir_fd:
            return os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_fd(fd: int) -> bytes | None:
    """All bytes of an open file; ``None`` when it is not a regular file (a folder, a FIFO)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return None
    want = st.st_size + 1
    data = os.read(fd, want)
    if len(data) < want:  # a short read of a regular file: its end (the usual case)
        return data
    chunks = [data]
    while chunks[-1]:  # the file grew meanwhile (a hand edit: kvstore replaces, never grows)
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
    ``None`` when it is gone, is a link or is not a regular file (a listing skips those)."""
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
            folder = open_folder(root, parts)
        except (LinkRefused, FileNotFoundError, NotADirectoryError):
            continue
        if folder is None:
            continue
        with folder as fd:
            with os.scandir(fd) as it:
                entries = list(it)
            for entry in entries:
                name = entry.name
                if entry.is_dir(follow_symlinks=False):
                    if not name.startswith("."):
                        stack.append(parts + (name,))
                elif match(name) and entry.is_file(follow_symlinks=False):
                    yield fd, name, parts + (name,)
