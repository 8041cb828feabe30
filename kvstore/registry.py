"""The backend registry: one record per backend says what it is, and everything that opens,
drives or copies a store reads it (config, :func:`~kvstore.open_url`, the async front, backups).

>>> from kvstore import registry
>>> registry.get("sqlite").schemes
('sqlite',)
>>> registry.for_scheme("rediss").name
'redis'

A :class:`Backend` names its classes as ``"module:Class"`` strings, loaded on first use:
``import kvstore`` imports neither redis nor psycopg. A third-party backend registers with
:func:`register`, or is found through the entry point group ``kvstore.backends`` (each entry
point loads to a :class:`Backend`), as dogpile.cache finds its backends::

    [project.entry-points."kvstore.backends"]
    mykv = "mykv.kvstore_backend:BACKEND"

Capabilities a store object carries itself (``durable``, ``optimistic``, ``crash_atomic``,
``shares_data``: wrappers forward them) stay on the store; the registry holds what is known
before a store exists, or about how it is opened and driven.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Any, Iterator

from .errors import ConfigError

__all__ = ["Backend", "BackendError", "BUILTIN", "ENTRY_POINT_GROUP", "TIERS", "register", "get",
           "for_scheme", "for_store", "backends", "load", "unwrapped"]

ENTRY_POINT_GROUP = "kvstore.backends"
#: The stores a configuration opens; a backend's ``tier`` is one of them.
TIERS = ("memory", "cache", "database", "file")


class BackendError(ConfigError):
    """A backend cannot be registered (its name or a URL scheme is taken, or its record is
    wrong), or a name or scheme is not registered."""


@dataclass(frozen=True)
class Backend:
    """What a backend is. Strings ``"module:name"`` are imported when first needed."""

    #: Its name: ``registry.get(name)``; also the YAML section of a third-party backend.
    name: str
    #: The synchronous store class, ``"module:Class"``.
    store: str
    #: URL schemes :func:`~kvstore.open_url` opens with it (``redis``, ``rediss``...).
    schemes: tuple[str, ...] = ()
    #: ``"module:function"`` ``(url, scheme, options) -> store`` for :func:`open_url`; None: the
    #: class's ``from_url(url, **options)`` classmethod, else ``Class(url=url, **options)``.
    from_url: str | None = None
    #: The YAML section under ``persistence:`` that configures it (None: not configurable).
    section: str | None = None
    #: The store (``memory``, ``cache``, ``database``, ``file``) its section, when present,
    #: opens. None for the built-in defaults, which config.py and opening.py open themselves.
    tier: str | None = None
    #: ``"module:function"`` ``(value, setting) -> settings`` checking the section (raise
    #: ConfigError naming ``setting``); None: the section is a mapping of the class's arguments.
    settings: str | None = None
    #: ``"module:function"`` ``(settings, context) -> store`` (context: :class:`~kvstore.stores.
    #: opening.Opening`); None: ``Class(**settings, secret=config.pickle_secret)``.
    opener: str | None = None
    #: The async driver class, ``"module:Class"`` built from the synchronous store
    #: (``Driver(store)``; a wrapper's: ``Driver(store, face)``, ``face(inner)`` the async face
    #: of a store it wraps); None: the store's calls run in worker threads (or inline).
    async_driver: str | None = None
    #: Its calls never wait on I/O: the async front runs them on the event loop.
    inline: bool = False
    #: The async driver keeps tasks on its event loop (a connection pool's workers): a caller
    #: whose loops are short-lived (one ``asyncio.run`` per request) runs it in threads instead.
    loop_tasks: bool = False
    #: The whole store copies to one file and back (``backup_to(path)``, ``table``,
    #: ``_replace_from_file(path, table, logs)``): backups take that copy instead of writing
    #: records, and restores read it back first.
    file_copy: bool = False
    #: Its data lives in this process (``items_with_ttl()``, ``raw_apply(ops)``): the memory
    #: tier's ``memory.snapshot`` file saves and reloads it.
    snapshots: bool = False
    #: A wrapper of another store (FallbackStore, NearStore): the attribute holding the store it wraps.
    wraps: str | None = None

    def store_class(self) -> type:
        return load(self.store)

    def async_class(self) -> type | None:
        return None if self.async_driver is None else load(self.async_driver)


def load(target: str) -> Any:
    """The object ``"package.module:name"`` names (imported now)."""
    module, _, attr = target.partition(":")
    if not module or not attr:
        raise BackendError(f"{target!r} is not 'module:name'")
    value: Any = importlib.import_module(module)
    for part in attr.split("."):
        value = getattr(value, part)
    return value


_OPENING = "kvstore.stores.opening"
#: The backends kvstore ships (registered at import; entry points add to them on first use).
BUILTIN = (
    Backend("memory", "kvstore.stores.memory:MemoryStore", schemes=("memory",),
            from_url=f"{_OPENING}:memory_from_url", section="memory", inline=True,
            snapshots=True),
    Backend("sqlite", "kvstore.stores.sqlite:SQLiteStore", schemes=("sqlite",),
            from_url=f"{_OPENING}:sqlite_from_url", section="sqlite", file_copy=True),
    Backend("file", "kvstore.stores.file:FileStore", schemes=("file",),
            from_url=f"{_OPENING}:file_from_url", section="file"),
    Backend("redis", "kvstore.stores.redis:RedisStore",
            schemes=("redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "unix+cluster",
                     "redis+sentinel", "rediss+sentinel"),
            from_url=f"{_OPENING}:redis_from_url", section="redis", tier="cache",
            opener=f"{_OPENING}:open_redis", async_driver="kvstore.stores.redis.aio:AsyncRedisStore"),
    Backend("postgres", "kvstore.stores.postgres:PostgresStore",
            schemes=("postgresql", "postgres"), from_url=f"{_OPENING}:postgres_from_url",
            section="postgres", tier="database", opener=f"{_OPENING}:open_postgres",
            async_driver="kvstore.stores.postgres.aio:AsyncPostgresStore", loop_tasks=True),
    Backend("fallback", "kvstore.stores.fallback:FallbackStore", wraps="primary",
            async_driver="kvstore.stores.fallback.aio:AsyncFallbackStore"),
    Backend("near", "kvstore.stores.near:NearStore", wraps="inner",
            async_driver="kvstore.stores.near.aio:AsyncNearStore"),
)

_lock = threading.RLock()
_by_name: dict[str, Backend] = {}
_by_scheme: dict[str, Backend] = {}
_by_class: dict[type, Backend] = {}  # filled as classes are loaded (for_store)
_entry_points_loaded = False


def register(backend: Backend) -> Backend:
    """Add ``backend``; :class:`BackendError` if its name or one of its schemes is taken (the
    same record registered again is accepted). Returns it."""
    if not isinstance(backend, Backend):
        raise BackendError(f"register() takes a kvstore.registry.Backend, got {backend!r}")
    if not backend.name or ":" not in backend.store:
        raise BackendError(f"backend {backend.name!r}: a name and a store 'module:Class' are "
                           f"required, got {backend.store!r}")
    if backend.tier is not None and backend.tier not in TIERS:
        raise BackendError(f"backend {backend.name!r}: tier {backend.tier!r} is not one of "
                           f"{', '.join(TIERS)}")
    with _lock:
        old = _by_name.get(backend.name)
        if old == backend:
            return backend
        if old is not None:
            raise BackendError(f"backend {backend.name!r} is already registered "
                               f"({old.store}); {backend.store} cannot take its name")
        sections = {b.section: b for b in _by_name.values() if b.section}
        if backend.section and backend.section in sections:
            raise BackendError(f"backend {backend.name!r}: the config section "
                               f"{backend.section!r} is backend {sections[backend.section].name!r}'s")
        schemes = [s.lower() for s in backend.schemes]
        for scheme in schemes:
            if scheme in _by_scheme:
                raise BackendError(f"backend {backend.name!r}: URL scheme {scheme!r} is already "
                                   f"backend {_by_scheme[scheme].name!r}'s")
        _by_name[backend.name] = backend
        for scheme in schemes:
            _by_scheme[scheme] = backend
        _by_class.clear()
    return backend


def _load_entry_points() -> None:
    """Register the backends of the ``kvstore.backends`` entry point group (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    with _lock:
        if _entry_points_loaded:
            return
        _entry_points_loaded = True  # first: a plugin's module may look backends up itself
        try:
            _register_entry_points()
        except BaseException:
            _entry_points_loaded = False  # the next lookup raises again, not silently without it
            raise


def _register_entry_points() -> None:
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            backend = point.load()
        except Exception as exc:
            raise BackendError(f"entry point {point.name!r} of {ENTRY_POINT_GROUP!r} "
                               f"({point.value}) failed to load: {exc}") from exc
        if callable(backend) and not isinstance(backend, Backend):
            backend = backend()  # a function returning the record
        if not isinstance(backend, Backend):
            raise BackendError(f"entry point {point.name!r} of {ENTRY_POINT_GROUP!r} "
                               f"({point.value}) is not a kvstore.registry.Backend")
        register(backend)  # the same record again (a retried load) is accepted


def _reset() -> None:
    """Back to the built-in backends, entry points not yet read (for tests)."""
    global _entry_points_loaded
    with _lock:
        _by_name.clear()
        _by_scheme.clear()
        _by_class.clear()
        for backend in BUILTIN:
            register(backend)
        _entry_points_loaded = False


def backends() -> list[Backend]:
    """Every registered backend: the built-in ones, then the third-party ones."""
    _load_entry_points()
    with _lock:
        return list(_by_name.values())


def get(name: str) -> Backend:
    """The backend named ``name``; :class:`BackendError` if none is."""
    found = _by_name.get(name)
    if found is None:
        _load_entry_points()
        found = _by_name.get(name)
    if found is None:
        raise BackendError(f"no backend named {name!r} (known: {', '.join(_by_name)})")
    return found


def for_scheme(scheme: str) -> Backend:
    """The backend that opens URLs of ``scheme`` (``redis``, ``sqlite``...)."""
    found = _by_scheme.get(scheme.lower())
    if found is None:
        _load_entry_points()
        found = _by_scheme.get(scheme.lower())
    if found is None:
        raise BackendError(f"unknown URL scheme {scheme!r} (known: {', '.join(_by_scheme)})")
    return found


def for_store(store: Any) -> Backend | None:
    """The backend of ``store`` (an instance or a class), by its class and then its bases: a
    subclass resolves to its base's backend. None for a class no backend names. Only the
    classes of modules already imported are compared: a store exists, so its module is."""
    cls = store if isinstance(store, type) else type(store)
    found = _by_class.get(cls)
    if found is not None:
        return found
    _load_entry_points()
    import sys

    with _lock:
        classes: dict[type, Backend] = {}
        for backend in _by_name.values():
            module, _, attr = backend.store.partition(":")
            if module in sys.modules:  # never import a driver to answer a question
                try:
                    classes[load(backend.store)] = backend
                except (AttributeError, BackendError):
                    continue
        for base in cls.__mro__:
            if base in classes:
                _by_class[cls] = classes[base]
                return classes[base]
    return None


def unwrapped(store: Any) -> Iterator[Any]:
    """``store``, then the store it wraps, and so on (a wrapper's backend names the attribute)."""
    while store is not None:
        yield store
        backend = for_store(store)
        attr = None if backend is None else backend.wraps
        store = None if attr is None else getattr(store, attr, None)


_reset()
