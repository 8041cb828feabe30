"""Where a configuration keeps its data: the user data folder, a configuration file's own
folder, the embedded cache and the journal beside the database (``kvstore config check``
prints them, see :func:`locations`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checks import mask_secrets

if TYPE_CHECKING:
    from .config import Config

__all__ = ["default_data_dir", "config_data_dir", "locations", "journal_dir", "Locations",
           "embedded_cache_path", "embedded_cache_table", "own_paths", "anchor_paths"]


def default_data_dir() -> Path:
    """Where the embedded default keeps its files: ``$KVSTORE_DATA_DIR`` or the platform's user
    data folder (platformdirs)."""
    env = os.environ.get("KVSTORE_DATA_DIR")
    if env:
        return Path(os.path.expanduser(env))
    import platformdirs

    return Path(platformdirs.user_data_dir("kvstore", appauthor=False))


@dataclass(frozen=True)
class Locations:
    """Where a configuration keeps its data (see :func:`locations`)."""

    database: str      # the SQLite file, or the PostgreSQL table
    cache: str         # Redis, or the embedded stand-in's file / table
    file: Path
    backups: Path
    snapshot: Path | None
    journal: Path


def embedded_cache_table(table: str) -> str:
    """The PostgreSQL table of the embedded cache beside ``table`` (at most 58 characters, like
    every table name: its lock table adds ``_meta``)."""
    name = f"{table}_cache"
    if len(name) <= 58:
        return name
    import hashlib

    return f"{table[:39]}_{hashlib.sha256(table.encode()).hexdigest()[:12]}_cache"


def embedded_cache_path(config: "Config") -> Path:
    """The embedded cache's SQLite file: beside the configuration's own database file
    (``app.db`` -> ``app.cache.db``), or ``cache.db`` in the data folder for the default."""
    if config.sqlite.path is not None:
        path = config.sqlite.path
        return path.with_name(path.stem + ".cache.db")
    return default_data_dir() / "cache.db"


def journal_dir(config: "Config") -> Path:
    """Where cross-store commits are recorded while they run (see :mod:`kvstore.journal`):
    beside the configuration's database file, like the embedded cache."""
    if config.sqlite.path is not None and config.postgres is None:
        path = config.sqlite.path
        return path.with_name(path.stem + ".journal")
    if config.postgres is not None:
        return default_data_dir() / f"journal-{config.postgres.table}"
    return default_data_dir() / "journal"


def locations(config: "Config") -> Locations:
    """Every place ``config`` reads and writes (``kvstore config check`` prints them)."""
    data = default_data_dir()
    if config.postgres is not None:
        database = f"postgresql table {config.postgres.table!r} at {mask_secrets(config.postgres.dsn)}"
    else:
        database = str(config.sqlite.path or data / "kvstore.db")
    if config.redis is not None:
        cache = f"redis {mask_secrets(config.redis.url)} (key_prefix {config.redis.key_prefix!r})"
    elif config.postgres is not None:
        cache = (f"postgresql table {embedded_cache_table(config.postgres.table)!r} "
                 "(the embedded stand-in for Redis)")
    else:
        cache = f"{embedded_cache_path(config)} (the embedded stand-in for Redis)"
    return Locations(database=database, cache=cache, file=config.file.base_path or data / "files",
                     backups=config.backup.path or data / "backups",
                     snapshot=config.memory.snapshot, journal=journal_dir(config))


def config_data_dir(path: str | os.PathLike[str]) -> Path:
    """The folder of its own where a configuration file keeps what it gives no path for:
    ``<data folder>/configs/<file name>-<12 hex of its absolute path's SHA-256>`` (the data
    folder: ``$KVSTORE_DATA_DIR`` or the user data folder). Two files never share it; the same
    file always finds it again; nothing is written beside the file (it may be read-only, or in
    a repository)."""
    import hashlib

    file = Path(os.path.expanduser(os.fspath(path))).resolve()
    digest = hashlib.sha256(os.fsencode(file)).hexdigest()[:12]
    return default_data_dir() / "configs" / f"{file.stem}-{digest}"


def own_paths(config: "Config", file: Path) -> "Config":
    """A configuration file's missing paths, in a folder of its own (:func:`config_data_dir`),
    so that two path-less configuration files never share data (the embedded default,
    ``Config()``, keeps the data folder itself)."""
    if config.sqlite.path and config.file.base_path and config.backup.path:
        return config
    own = config_data_dir(file)
    return replace(config,
                   sqlite=replace(config.sqlite, path=config.sqlite.path or own / "kvstore.db"),
                   file=replace(config.file, base_path=config.file.base_path or own / "files"),
                   backup=replace(config.backup, path=config.backup.path or own / "backups"))


def anchor_paths(config: "Config", base: Path) -> "Config":
    """Relative paths in a YAML file are relative to that file's folder, not to the cwd."""
    def fix(section: Any, name: str) -> Any:
        value = getattr(section, name)
        if value is None or value.is_absolute():
            return section
        return replace(section, **{name: (base / value).resolve()})

    return replace(config, memory=fix(config.memory, "snapshot"), sqlite=fix(config.sqlite, "path"),
                   file=fix(config.file, "base_path"), backup=fix(config.backup, "path"))
