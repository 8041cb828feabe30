"""The YAML configuration: parsed and checked completely, in one place, into frozen dataclasses.

Nothing is opened here. Every mistake is a :class:`~kvstore.ConfigError` that names the setting::

    persistence.categories.session.ttl: '5x' is not a duration

``~`` is expanded in paths, and ``${VAR}`` / ``${VAR:-default}`` in every string.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from . import checks, registry
from .checks import expand_env, mask_secrets
from .places import (Locations, config_data_dir, default_data_dir, embedded_cache_path,
                     embedded_cache_table, journal_dir, locations)
from .places import anchor_paths, own_paths
from .errors import ConfigError

__all__ = ["default_data_dir", "config_data_dir", "locations", "journal_dir", "Locations", "embedded_cache_path", "embedded_cache_table", "Config", "MemoryConfig", "SQLiteConfig", "RedisConfig", "FileConfig", "PostgresConfig",
           "CategoryConfig", "BackupConfig", "JournalConfig", "STORE_NAMES", "load_config", "parse_config",
           "expand_env", "mask_secrets", "configured_backends"]

STORE_NAMES = registry.TIERS
SERIALIZERS = checks.SERIALIZERS
BACKUP_INTERVALS = {"hourly": 3600.0, "daily": 86400.0, "weekly": 604800.0}


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
    #: A near cache for every key (kvstore.stores.near.settings).
    near: Any = None


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
    #: A near cache for this category's keys (kvstore.stores.near.settings).
    near: Any = None


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


@dataclass(frozen=True)
class TelemetryConfig:
    #: Instrument kvstore with OpenTelemetry when a manager opens (kvstore.contrib.otel, with
    #: the global providers; needs ``pip install kvstore[otel]``).
    otel: bool = False


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
    telemetry: TelemetryConfig = TelemetryConfig()
    #: The sections of registered third-party backends (kvstore.registry), checked by them.
    backends: Mapping[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- the sections
# (the value checkers are in kvstore.checks; a third-party backend's section is checked by its
# registry record's `settings` function)


def _store_name(value: Any, setting: str) -> str:
    return checks.choice(value, setting, STORE_NAMES)


def _file_section(value: Any, setting: str) -> FileConfig:
    """``file:`` takes ``serializer:`` as every store section does (json, msgpack, pickle, each
    optionally ``+gzip``), or the older ``format:``; given both, they must name one encoding."""
    data = checks.mapping(value, setting)
    config: FileConfig = checks.section(FileConfig, data, setting, _FILE)
    if config.serializer is None:
        return config
    base = config.serializer.split("+")[0]
    if "format" in data and config.format != base:
        raise ConfigError(f"{setting}.serializer: {config.serializer!r} disagrees with "
                          f"{setting}.format: {config.format!r} (give only one of them)")
    return replace(config, format=base)


def _postgres_section(value: Any, setting: str) -> PostgresConfig:
    config: PostgresConfig = checks.section(PostgresConfig, value, setting, _POSTGRES)
    if not config.dsn:
        raise ConfigError(f"{setting}.dsn: required when the postgres section is present")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", config.table):
        raise ConfigError(f"{setting}.table: {config.table!r} is not a plain table name")
    return config


def _redis_section(value: Any, setting: str) -> RedisConfig:
    config: RedisConfig = checks.section(RedisConfig, value, setting, _REDIS)
    from .stores.redis.connect import check_url  # the URL rules live with the client (no driver)

    check_url(config.url, f"{setting}.url")
    if config.fallback == "cache":
        raise ConfigError(f"{setting}.fallback: the cache cannot fall back to itself")
    return config


def _interval(value: Any, setting: str) -> float:
    if isinstance(value, str) and value.strip().lower() in BACKUP_INTERVALS:
        return BACKUP_INTERVALS[value.strip().lower()]
    seconds = checks.duration(value, setting)
    if seconds is None:
        raise ConfigError(f"{setting}: an interval is required (hourly, daily, weekly or a duration)")
    return seconds


def _at_least_1(value: Any, setting: str) -> int | None:
    return checks.opt_whole(value, setting, 1)


_ttl, _serializer = checks.duration, checks.serializer
_MEMORY = {"max_entries": _at_least_1, "ttl_default": _ttl, "snapshot": checks.path,
           "serializer": lambda v, s: None if v is None else _serializer(v, s), "autosave": _ttl}
_SQLITE = {"path": checks.path, "ttl_default": _ttl, "serializer": _serializer,
           "synchronous": lambda v, s: checks.choice(str(v).upper() if isinstance(v, str) else v,
                                                     s, ("OFF", "NORMAL", "FULL", "EXTRA")),
           "max_entries": _at_least_1}
_REDIS = {"url": checks.text, "ttl_default": _ttl, "serializer": _serializer,
          "key_prefix": checks.text, "cluster": checks.boolean, "socket_timeout": checks.seconds,
          "connect_timeout": checks.seconds, "max_connections": _at_least_1,
          "pool_timeout": checks.seconds,
          "fallback": lambda v, s: None if v is None else _store_name(v, s),
          "near": lambda v, s: _near().near_settings(v, s)}
_FILE = {"base_path": checks.path, "ttl_default": _ttl, "serializer": _serializer,
         "format": lambda v, s: checks.choice(v, s, ("json", "msgpack", "pickle"))}
_POSTGRES = {"dsn": checks.text, "table": checks.text, "ttl_default": _ttl,
             "serializer": _serializer, "max_entries": _at_least_1}
_CATEGORY = {"store": _store_name, "ttl": _ttl, "near": lambda v, s: _near().near_settings(v, s)}


def _near() -> Any:
    from .stores.near import settings

    return settings
_BACKUP = {"enabled": checks.boolean, "interval": _interval, "path": checks.path,
           "retention": lambda v, s: checks.whole(v, s, 1)}
_JOURNAL = {"recover_interval": _ttl}
_TELEMETRY = {"otel": checks.boolean}

_TOP_LEVEL = ("default_store", "pickle_secret", "memory", "sqlite", "redis", "file", "postgres",
              "categories", "backup", "journal", "telemetry")


def _third_party(body: Mapping[str, Any], p: str) -> dict[str, Any]:
    """The sections of registered third-party backends (kvstore.registry), each checked by its
    backend's ``settings`` function; any other unknown key is left to the caller."""
    found: dict[str, Any] = {}
    for backend in registry.backends():
        section = backend.section
        if section is None or section in _TOP_LEVEL or section not in body:
            continue
        if backend.tier is None:
            raise ConfigError(f"{p}.{section}: backend {backend.name!r} names no tier to open")
        check = (registry.load(backend.settings) if backend.settings is not None
                 else lambda v, s: dict(checks.mapping(v, s)))
        found[section] = check(body[section], f"{p}.{section}")
    return found


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
    root = checks.mapping(data, source)
    if "persistence" in root:
        extra = [k for k in root if k != "persistence"]
        if extra:
            raise ConfigError(f"{extra[0]}: unknown top-level setting (only 'persistence' is known)")
        body = checks.mapping(root["persistence"], "persistence")
    else:
        body = root
    p = "persistence"
    third_party = _third_party(body, p)
    known = _TOP_LEVEL + tuple(b.section for b in registry.backends()
                               if b.section and b.section not in _TOP_LEVEL)
    for key in body:
        if key not in known:
            if body is root:  # no `persistence:` level: name the key as the user wrote it
                hint = " (did you mean 'persistence'?)" if _close(key, "persistence") else ""
                raise ConfigError(f"{key}: unknown top-level setting{hint} (known: persistence, "
                                  f"or directly: {', '.join(known)})")
            raise ConfigError(f"{p}.{key}: unknown setting (known: {', '.join(known)})")

    categories: dict[str, CategoryConfig] = {}
    for name, spec in checks.mapping(body.get("categories"), f"{p}.categories").items():
        setting = f"{p}.categories.{name}"
        if not name or ":" in name:
            raise ConfigError(f"{setting}: a category name is non-empty and has no ':'")
        if isinstance(spec, str):  # shorthand: `session: memory`
            spec = {"store": spec}
        if "store" not in checks.mapping(spec, setting):
            raise ConfigError(f"{setting}.store: missing (one of {', '.join(STORE_NAMES)})")
        categories[name] = checks.section(CategoryConfig, spec, setting, _CATEGORY)

    config = Config(
        default_store=_store_name(body.get("default_store", "database"), f"{p}.default_store"),
        pickle_secret=checks.opt_text(body.get("pickle_secret"), f"{p}.pickle_secret"),
        memory=checks.section(MemoryConfig, body.get("memory"), f"{p}.memory", _MEMORY),
        sqlite=checks.section(SQLiteConfig, body.get("sqlite"), f"{p}.sqlite", _SQLITE),
        redis=None if "redis" not in body else _redis_section(body["redis"], f"{p}.redis"),
        file=_file_section(body.get("file"), f"{p}.file"),
        postgres=(None if "postgres" not in body
                  else _postgres_section(body["postgres"], f"{p}.postgres")),
        categories=categories,
        backup=checks.section(BackupConfig, body.get("backup"), f"{p}.backup", _BACKUP),
        journal=checks.section(JournalConfig, body.get("journal"), f"{p}.journal", _JOURNAL),
        telemetry=checks.section(TelemetryConfig, body.get("telemetry"), f"{p}.telemetry",
                                 _TELEMETRY),
        backends=third_party,
    )
    _check_consistency(config)
    return config


def configured_backends(config: Config) -> dict[str, tuple[registry.Backend, Any]]:
    """``{tier: (backend, its checked settings)}`` for each section present that opens a tier
    (``redis:``, ``postgres:``, a third-party backend's); the other tiers open their defaults."""
    sections = {"redis": config.redis, "postgres": config.postgres, **config.backends}
    chosen: dict[str, tuple[registry.Backend, Any]] = {}
    for backend in registry.backends():
        settings = sections.get(backend.section or "")
        if backend.tier is None or settings is None:
            continue
        if backend.tier in chosen:
            raise ConfigError(f"persistence.{backend.section}: the {backend.tier} store is "
                              f"already persistence.{chosen[backend.tier][0].section} (give one)")
        chosen[backend.tier] = (backend, settings)
    return chosen


def _check_consistency(config: Config) -> None:
    p = "persistence"
    configured_backends(config)  # two sections for one store: refused
    _near().check_near(config)
    if config.telemetry.otel and importlib.util.find_spec("opentelemetry") is None:
        raise ConfigError(f"{p}.telemetry.otel: needs OpenTelemetry: pip install kvstore[otel]")
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
    if not data or (isinstance(data, Mapping) and list(data) == ["persistence"]
                    and not data["persistence"]):
        # An empty file is a mistake (a wrong path, a truncated copy), never "the defaults":
        # PersistenceManager() is how to ask for the embedded default.
        raise ConfigError(f"{source}: no settings (an empty configuration file; write a "
                          "'persistence:' section, e.g. persistence: {default_store: database})")
    file = Path(os.path.expanduser(source))
    return own_paths(anchor_paths(parse_config(data, source), file.parent), file)
