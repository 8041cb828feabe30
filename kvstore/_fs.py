"""File-system helpers shared by the stores, backups and snapshots: owner-only folders, fsync."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["make_private_dirs", "fsync_dir", "open_abandoned"]


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and every missing parent with mode 0700.

    ``Path.mkdir(parents=True, mode=...)`` and ``os.makedirs`` apply the mode to the last folder
    only; the parents would get the umask's (usually world-readable) mode.
    """
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # created by another process meanwhile
            pass


def fsync_dir(path: Path) -> None:
    """fsync a folder, so a rename or a new file in it survives a power loss (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_abandoned(path: Path) -> int | None:
    """A descriptor of ``path``, locked, when the process that wrote it (and held its ``flock``
    while working) is gone; None when it is still alive or the file was removed meanwhile.
    The lock dies with its holder, so a killed process never looks alive (a pid could)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
