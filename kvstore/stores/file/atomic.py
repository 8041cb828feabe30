"""FileStore's atomic writes: temp files renamed over the keys' files, all or none.

Every step runs relative to an open folder descriptor (see :mod:`.paths`), so a folder swapped
for a symbolic link between two steps is refused, never followed. A write goes to a temp file in
the key's folder, is fsynced, then renamed over the key's file, and the folder is fsynced: a
reader sees the old file or the new one. A publish of several files keeps a hard link to each
file it replaces until every rename is done, so a failure partway puts the earlier files back.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat

from .paths import NOFOLLOW, Folder, LinkRefused, Parts, Root, open_folder

__all__ = ["Temp", "stage", "publish", "discard", "remove"]

_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW


def _temp_name() -> str:
    return f".tmp-{secrets.token_hex(8)}"


class _Shared:
    """A folder descriptor shared by the temp files staged in it; closed with the last one."""

    __slots__ = ("folder", "refs")

    def __init__(self, folder: Folder) -> None:
        self.folder = folder
        self.refs = 0

    def release(self) -> None:
        self.refs -= 1
        if self.refs <= 0:
            self.folder.close()


class Temp:
    """A staged temp file: written and fsynced in its key's folder, not yet renamed."""

    __slots__ = ("dir", "name", "target", "parts")

    def __init__(self, shared: _Shared, name: str, parts: Parts) -> None:
        shared.refs += 1
        self.dir = shared
        self.name = name
        self.target = parts[-1]
        self.parts = parts

    @property
    def dir_fd(self) -> int:
        return self.dir.folder.fd

    def discard(self) -> None:
        """Remove the temp file (publish failed or was abandoned) and release its folder."""
        if self.name:
            try:
                os.unlink(self.name, dir_fd=self.dir_fd)
            except OSError:
                pass
            self.name = ""
            self.dir.release()


def _check_target(root: Root, dir_fd: int, parts: Parts) -> None:
    """A key's file may be replaced, but never a link (it is refused, as on reads) or a folder."""
    try:
        mode = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise LinkRefused(root.path.joinpath(*parts))
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "a folder is in the way of a key's file",
                                str(root.path.joinpath(*parts)))


def _write(dir_fd: int, data: bytes, fsync: bool) -> str:
    name = _temp_name()
    fd = os.open(name, _WRITE_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(name, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    os.close(fd)
    return name


def stage(root: Root, writes: list[tuple[Parts, bytes]], fsync: bool) -> list[Temp]:
    """Every temp file written (and fsynced) before the first rename; the folders on the way
    are made (0700). Nothing is left behind when one fails."""
    folders: dict[Parts, _Shared] = {}
    temps: list[Temp] = []
    try:
        for parts, data in writes:
            shared = folders.get(parts[:-1])
            if shared is None:
                folder = open_folder(root, parts[:-1], create=True)
                assert folder is not None  # create=True
                shared = folders[parts[:-1]] = _Shared(folder)
            _check_target(root, shared.folder.fd, parts)
            temps.append(Temp(shared, _write(shared.folder.fd, data, fsync), parts))
    except BaseException:
        discard(temps)
        for shared in folders.values():
            if shared.refs == 0:
                shared.folder.close()
        raise
    return temps


def discard(temps: list[Temp]) -> None:
    for temp in temps:
        temp.discard()


def _keep_old(dir_fd: int, name: str, where: str) -> str | None:
    """A hard link to the file ``name`` (None when there is none), to undo a rename."""
    old = _temp_name()
    try:
        os.link(name, old, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        try:
            is_dir = stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except OSError:
            is_dir = False
        if is_dir:
            raise IsADirectoryError(errno.EISDIR, "a folder is in the way of a key's file",
                                    where) from exc
        raise
    return old


def publish(root: Root, temps: list[Temp], deletes: list[Parts], fsync: bool) -> None:
    """Rename the temp files over their keys' files and remove ``deletes``: all of it, or, when
    a step fails, none of it. The folders are fsynced after the last rename."""
    gone: list[tuple[int, str, Parts]] = []  # (folder fd, name, parts) of files to delete
    opened: list[Folder] = []
    try:
        for parts in deletes:
            folder = open_folder(root, parts[:-1])
            if folder is not None:  # no folder: nothing to delete
                opened.append(folder)
                gone.append((folder.fd, parts[-1], parts))
        if len(temps) + len(gone) == 1:  # one rename or unlink is atomic by itself
            for t in temps:
                os.replace(t.name, t.target, src_dir_fd=t.dir_fd, dst_dir_fd=t.dir_fd)
                t.name = ""
            for dir_fd, name, _ in gone:
                try:
                    os.unlink(name, dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
        else:
            _publish_all(root, temps, gone)
        if fsync:
            synced: set[int] = set()
            for fd in [t.dir_fd for t in temps] + [g[0] for g in gone]:
                if fd not in synced:
                    synced.add(fd)
                    _fsync_dir(fd)
    finally:
        for t in temps:
            if t.name:  # not renamed (a failure): gone, like the rest of this publish
                t.discard()
            else:
                t.dir.release()
        for folder in opened:
            folder.close()
    for parts in deletes:
        prune(root, parts[:-1])


def _publish_all(root: Root, temps: list[Temp], gone: list[tuple[int, str, Parts]]) -> None:
    done: list[tuple[int, str, str | None]] = []  # (folder fd, name, hard link to the old file)
    try:
        for t in temps:
            old = _keep_old(t.dir_fd, t.target, str(root.path.joinpath(*t.parts)))
            os.replace(t.name, t.target, src_dir_fd=t.dir_fd, dst_dir_fd=t.dir_fd)
            t.name = ""
            done.append((t.dir_fd, t.target, old))
        for dir_fd, name, parts in gone:
            old = _keep_old(dir_fd, name, str(root.path.joinpath(*parts)))
            if old is not None:
                os.unlink(name, dir_fd=dir_fd)
            done.append((dir_fd, name, old))
    except BaseException:
        for dir_fd, name, old in reversed(done):
            try:
                if old is None:
                    os.unlink(name, dir_fd=dir_fd)
                else:
                    os.replace(old, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except OSError:
                pass
        raise
    for dir_fd, _, old in done:
        if old is not None:
            try:
                os.unlink(old, dir_fd=dir_fd)
            except OSError:
                pass


def _fsync_dir(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder: best effort, as before
        pass


def remove(root: Root, parts: Parts) -> bool:
    """Delete the file ``parts`` (True when it was there) and the folders it leaves empty."""
    folder = open_folder(root, parts[:-1])
    if folder is None:
        return False
    with folder as dir_fd:
        try:
            os.unlink(parts[-1], dir_fd=dir_fd)
        except FileNotFoundError:
            return False
    prune(root, parts[:-1])
    return True


def prune(root: Root, dirs: Parts) -> None:
    """Remove the folders at the end of ``dirs`` that are empty, deepest first."""
    for depth in range(len(dirs) - 1, -1, -1):
        try:
            folder = open_folder(root, dirs[:depth])
        except (LinkRefused, OSError):
            return
        if folder is None:
            return
        with folder as dir_fd:
            try:
                os.rmdir(dirs[depth], dir_fd=dir_fd)
            except OSError:  # not empty (the usual case), or gone
                return
