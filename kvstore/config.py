"""The YAML configuration: parsed and checked completely, in one place, into frozen dataclasses.

Nothing is opened here. Every mistake is a :class:`~kvstore.ConfigError` that names the setting::

    persistence.categories.session.ttl: '5x' is not a duration

``~`` is expanded in paths, and ``${VAR}`` / ``${VAR:-default}`` in every string.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError, InvalidTTLError
from .store import parse_ttl

__all__ = ["default_data_dir", "locations", "journal_dir", "Locations", "embedded_cache_path", "embedded_cache_table", "Config", "MemoryConfig", "SQLiteConfig", "RedisConfig", "FileConfig", "PostgresConfig",
           "CategoryConfig", "BackupConfig", "JournalConfig", "STORE_NAMES", "load_config", "parse_config",
           "expand_env", "mask_secrets"]

STORE_NAMES = ("memory", "cache", "database", "file")
SERIALIZERS = ("json", "msgpack", "pickle", "json+gzip", "msgpack+gzip", "pickle+gzip")
BACKUP_INTERVALS = {"hourly": 3600.0, "daily": 86400.0, "weekly": 604800.0}
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


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


@dataclass(frozen=True)
class MemoryConfig:
    max_entries: int | None = None
    ttl_default: float | None = None
    serializer: str | None = None
    #: File the memory tier is saved to (every `autosave` and on close) and loaded from at start.
    snapshot: Path | None = None
    autosave: float | None = None


@dataclass(frozen=True)
class SQLiteConfig:
    path: Path | None = None
    ttl_default: float | None = None
    serializer: str = "json"
    synchronous: str = "NORMAL"
    #: Keep at most this many keys in the table, evicting the least recently stored.
    max_entries: int | None = None


class _MaskedRepr:
    """repr() with passwords in URLs and DSNs replaced by ***, so configs are safe to log."""

    def __repr__(self) -> str:
        body = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)  # type: ignore[arg-type]
                         if f.repr)
        return mask_secrets(f"{type(self).__name__}({body})")


@dataclass(frozen=True, repr=False)
class RedisConfig(_MaskedRepr):
    url: str = "redis://localhost:6379/0"
    ttl_default: float | None = 3600.0
    serializer: str = "msgpack"
    key_prefix: str = ""
    cluster: bool = False
    socket_timeout: float = 5.0
    connect_timeout: float = 2.0
    #: Connections opened at most (per node on a cluster); more callers wait for one.
    max_connections: int = 50
    #: Seconds a call waits for a free connection before StoreUnavailableError.
    pool_timeout: float = 5.0
    #: Store that serves the cache tier while Redis is unavailable (None: raise).
    fallback: str | None = None


@dataclass(frozen=True)
class FileConfig:
    base_path: Path | None = None
    format: str = "json"
    ttl_default: float | None = None
    serializer: str | None = None  # as the other sections; sets format (its part before "+")


@dataclass(frozen=True, repr=False)
class PostgresConfig(_MaskedRepr):
    dsn: str = ""
    table: str = "kvstore"
    ttl_default: float | None = None
    serializer: str = "json"
    #: Keep at most this many keys in the table, evicting the least recently stored.
    max_entries: int | None = None


@dataclass(frozen=True)
class CategoryConfig:
    store: str
    ttl: float | None = None


@dataclass(frozen=True)
class BackupConfig:
    enabled: bool = False
    interval: float = 86400.0
    retention: int = 7
    path: Path | None = None


@dataclass(frozen=True)
class JournalConfig:
    #: How often a running manager undoes what a dead committer left half-done (None: only at
    #: open and at its transactions).
    recover_interval: float | None = 2.0


@dataclass(frozen=True, repr=False)
class Config(_MaskedRepr):
    """The whole ``persistence:`` section. ``Config()`` is the embedded default (no server)."""

    default_store: str = "database"
    pickle_secret: str | None = field(default=None, repr=False)
    memory: MemoryConfig = MemoryConfig()
    sqlite: SQLiteConfig = SQLiteConfig()
    redis: RedisConfig | None = None
    file: FileConfig = FileConfig()
    postgres: PostgresConfig | None = None
    categories: Mapping[str, CategoryConfig] = field(default_factory=dict)
    backup: BackupConfig = BackupConfig()
    journal: JournalConfig = JournalConfig()


# ---------------------------------------------------------------------------- value checkers


def expand_env(text: str, setting: str) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; an unset variable without default is an error."""

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        value = os.environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise ConfigError(f"{setting}: environment variable {name} is not set "
                                  f"(write ${{{name}:-default}} to give a default)")
            return default
        return value

    return _ENV.sub(sub, text)


def _str(value: Any, setting: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{setting}: expected a string, got {type(value).__name__} {value!r}")
    return expand_env(value, setting)


def _opt_str(value: Any, setting: str) -> str | None:
    if value is None:
        return None
    text = _str(value, setting)
    return text or None


def _bool(value: Any, setting: str) -> bool:
    if isinstance(value, str):
        value = expand_env(value, setting).strip().lower()
        if value in ("true", "yes", "on", "1"):
            return True
        if value in ("false", "no", "off", "0", ""):
            return False
    if not isinstance(value, bool):
        raise ConfigError(f"{setting}: expected true or false, got {value!r}")
    return value


def _int(value: Any, setting: str, minimum: int = 0) -> int:
    if isinstance(value, str):
        text = expand_env(value, setting).strip()
        value = int(text) if text.lstrip("-").isdigit() else value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{setting}: expected a whole number, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{setting}: must be at least {minimum}, got {value}")
    return value


def _opt_int(value: Any, setting: str, minimum: int = 0) -> int | None:
    return None if value is None else _int(value, setting, minimum)


def _number(value: Any, setting: str) -> float:
    if isinstance(value, str):
        try:
            value = float(expand_env(value, setting))
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{setting}: expected a positive number of seconds, got {value!r}")
    return float(value)


def _duration(value: Any, setting: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = expand_env(value, setting)
        if value.strip().lower() in ("", "none", "never", "permanent"):
            return None
    try:
        return parse_ttl(value, setting)
    except InvalidTTLError:
        raise ConfigError(f"{setting}: {value!r} is not a duration "
                          "(use seconds or e.g. '90s', '15m', '1h', '7d')") from None


def _path(value: Any, setting: str) -> Path | None:
    text = _opt_str(value, setting)
    return None if text is None else Path(os.path.expanduser(text))


def _choice(value: Any, setting: str, choices: tuple[str, ...]) -> str:
    text = _str(value, setting)
    if text not in choices:
        raise ConfigError(f"{setting}: {text!r} is not one of {', '.join(choices)}")
    return text


def _store_name(value: Any, setting: str) -> str:
    return _choice(value, setting, STORE_NAMES)


def _mapping(value: Any, setting: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{setting}: expected a mapping, got {type(value).__name__} {value!r}")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"{setting}: setting names must be strings, got {key!r}")
    return value


def _section(cls: type, value: Any, setting: str, checkers: Mapping[str, Any]) -> Any:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys, checking each value."""
    data = _mapping(value, setting)
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{setting}.{key}: unknown setting (known: {', '.join(sorted(known))})")
    kwargs = {key: checkers[key](raw, f"{setting}.{key}") for key, raw in data.items()}
    return cls(**kwargs)


def _serializer(value: Any, setting: str) -> str:
    return _choice(value, setting, SERIALIZERS)


def _file_section(value: Any, setting: str) -> FileConfig:
    """``file:`` takes ``serializer:`` as every store section does (json, msgpack, pickle, each
    optionally ``+gzip``), or the older ``format:``; given both, they must name one encoding."""
    data = _mapping(value, setting)
    config: FileConfig = _section(FileConfig, data, setting, _FILE)
    if config.serializer is None:
        return config
    base = config.serializer.split("+")[0]
    if "format" in data and config.format != base:
        raise ConfigError(f"{setting}.serializer: {config.serializer!r} disagrees with "
                          f"{setting}.format: {config.format!r} (give only one of them)")
    return replace(config, format=base)


def _interval(value: Any, setting: str) -> float:
    if isinstance(value, str) and value.strip().lower() in BACKUP_INTERVALS:
        return BACKUP_INTERVALS[value.strip().lower()]
    seconds = _duration(value, setting)
    if seconds is None:
        raise ConfigError(f"{setting}: an interval is required (hourly, daily, weekly or a duration)")
    return seconds


_MEMORY = {"max_entries": lambda v, s: _opt_int(v, s, 1), "ttl_default": _duration,
           "serializer": lambda v, s: None if v is None else _serializer(v, s),
           "snapshot": _path, "autosave": _duration}
_SQLITE = {"path": _path, "ttl_default": _duration, "serializer": _serializer,
           "synchronous": lambda v, s: _choice(str(v).upper() if isinstance(v, str) else v, s,
                                               ("OFF", "NORMAL", "FULL", "EXTRA")),
           "max_entries": lambda v, s: _opt_int(v, s, 1)}
_REDIS = {"url": _str, "ttl_default": _duration, "serializer": _serializer, "key_prefix": _str,
          "cluster": _bool, "socket_timeout": _number, "connect_timeout": _number,
          "max_connections": lambda v, s: _int(v, s, 1), "pool_timeout": _number,
          "fallback": lambda v, s: None if v is None else _store_name(v, s)}
_FILE = {"base_path": _path, "format": lambda v, s: _choice(v, s, ("json", "msgpack", "pickle")),
         "ttl_default": _duration, "serializer": _serializer}
_POSTGRES = {"dsn": _str, "table": _str, "ttl_default": _duration, "serializer": _serializer,
             "max_entries": lambda v, s: _opt_int(v, s, 1)}
_CATEGORY = {"store": _store_name, "ttl": _duration}
_BACKUP = {"enabled": _bool, "interval": _interval, "retention": lambda v, s: _int(v, s, 1),
           "path": _path}
_JOURNAL = {"recover_interval": _duration}

_TOP_LEVEL = ("default_store", "pickle_secret", "memory", "sqlite", "redis", "file", "postgres",
              "categories", "backup", "journal")


def _close(word: str, target: str) -> bool:
    import difflib

    return difflib.SequenceMatcher(None, word.lower(), target).ratio() >= 0.8


def _one_line(exc: Exception) -> str:
    """A YAML error as one line: where (line and column, 1-based), then what."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    what = f"{context}, {problem}" if context else problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {' '.join(what.split())}"


def parse_config(data: Mapping[str, Any] | None, source: str = "config") -> Config:
    """Check ``data`` (the YAML's structure, with or without the ``persistence:`` level)."""
    root = _mapping(data, source)
    if "persistence" in root:
        extra = [k for k in root if k != "persistence"]
        if extra:
            raise ConfigError(f"{extra[0]}: unknown top-level setting (only 'persistence' is known)")
        body = _mapping(root["persistence"], "persistence")
    else:
        body = root
    p = "persistence"
    for key in body:
        if key not in _TOP_LEVEL:
            if body is root:  # no `persistence:` level: name the key as the user wrote it
                hint = " (did you mean 'persistence'?)" if _close(key, "persistence") else ""
                raise ConfigError(f"{key}: unknown top-level setting{hint} (known: persistence, "
                                  f"or directly: {', '.join(_TOP_LEVEL)})")
            raise ConfigError(f"{p}.{key}: unknown setting (known: {', '.join(_TOP_LEVEL)})")

    redis = body.get("redis", None) if "redis" in body else None
    postgres = body.get("postgres", None) if "postgres" in body else None
    categories: dict[str, CategoryConfig] = {}
    for name, spec in _mapping(body.get("categories"), f"{p}.categories").items():
        setting = f"{p}.categories.{name}"
        if not name or ":" in name:
            raise ConfigError(f"{setting}: a category name is non-empty and has no ':'")
        if isinstance(spec, str):  # shorthand: `session: memory`
            spec = {"store": spec}
        if "store" not in _mapping(spec, setting):
            raise ConfigError(f"{setting}.store: missing (one of {', '.join(STORE_NAMES)})")
        categories[name] = _section(CategoryConfig, spec, setting, _CATEGORY)

    config = Config(
        default_store=_store_name(body.get("default_store", "database"), f"{p}.default_store"),
        pickle_secret=_opt_str(body.get("pickle_secret"), f"{p}.pickle_secret"),
        memory=_section(MemoryConfig, body.get("memory"), f"{p}.memory", _MEMORY),
        sqlite=_section(SQLiteConfig, body.get("sqlite"), f"{p}.sqlite", _SQLITE),
        redis=None if "redis" not in body else _section(RedisConfig, redis, f"{p}.redis", _REDIS),
        file=_file_section(body.get("file"), f"{p}.file"),
        postgres=(None if "postgres" not in body
                  else _section(PostgresConfig, postgres, f"{p}.postgres", _POSTGRES)),
        categories=categories,
        backup=_section(BackupConfig, body.get("backup"), f"{p}.backup", _BACKUP),
        journal=_section(JournalConfig, body.get("journal"), f"{p}.journal", _JOURNAL),
    )
    _check_consistency(config)
    return config


def _check_consistency(config: Config) -> None:
    p = "persistence"
    if config.postgres is not None and not config.postgres.dsn:
        raise ConfigError(f"{p}.postgres.dsn: required when the postgres section is present")
    if config.postgres is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}",
                                                        config.postgres.table):
        raise ConfigError(f"{p}.postgres.table: {config.postgres.table!r} is not a plain table name")
    if config.redis is not None and config.redis.fallback == "cache":
        raise ConfigError(f"{p}.redis.fallback: the cache cannot fall back to itself")
    if config.memory.autosave is not None and config.memory.snapshot is None:
        raise ConfigError(f"{p}.memory.autosave: needs memory.snapshot (the file to save to)")
    serializers = [("memory", config.memory.serializer), ("sqlite", config.sqlite.serializer),
                   ("redis", config.redis.serializer if config.redis else None),
                   ("file", config.file.format),
                   ("postgres", config.postgres.serializer if config.postgres else None)]
    for section, name in serializers:
        if name and name.startswith("pickle") and not config.pickle_secret:
            key = "format" if section == "file" and not config.file.serializer else "serializer"
            raise ConfigError(f"{p}.{section}.{key}: pickle needs persistence.pickle_secret "
                              "(unsigned pickle would let stored data run code)")


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check a YAML file. Malformed YAML, or a key given twice in one mapping, is a
    :class:`ConfigError` with the position."""
    import yaml

    from ._yamlload import load_yaml

    source = os.fspath(path)
    try:
        with open(os.path.expanduser(source), encoding="utf-8") as fh:
            data = load_yaml(fh, source)
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: malformed YAML: {_one_line(exc)}") from None
    if data is None:
        data = {}
    return _anchor_paths(parse_config(data, source), Path(os.path.expanduser(source)).parent)


def _anchor_paths(config: Config, base: Path) -> Config:
    """Relative paths in a YAML file are relative to that file's folder, not to the cwd."""
    from dataclasses import replace

    def fix(section: Any, name: str) -> Any:
        value = getattr(section, name)
        if value is None or value.is_absolute():
            return section
        return replace(section, **{name: (base / value).resolve()})

    return replace(config, memory=fix(config.memory, "snapshot"), sqlite=fix(config.sqlite, "path"),
                   file=fix(config.file, "base_path"), backup=fix(config.backup, "path"))


_SECRET_IN_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/]*):(?P<pw>[^@/]+)@",
                            re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """``redis://user:***@host`` for ``redis://user:secret@host`` (also DSN ``password=...``)."""
    text = _SECRET_IN_URL.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return re.sub(r"(password\s*=\s*)(\S+)", r"\1***", text, flags=re.IGNORECASE)
