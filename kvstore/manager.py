"""PersistenceManager: one object that routes each key to the right store with the right TTL.

>>> pm = PersistenceManager.from_config({"persistence": {
...     "categories": {"session": {"store": "memory", "ttl": "15m"}}}})   # doctest: +SKIP
>>> pm.save("session:42", {"user": "ann"})                                  # doctest: +SKIP
>>> pm.route("session:42").store                                           # doctest: +SKIP
'memory'
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import threading
import time
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .config import Config, load_config, mask_secrets, parse_config
from ._fs import make_private_dirs
from .errors import ConfigError, InvalidKeyError, KVStoreError
from .serializers import Serializer
from .store import MISSING, TTL, PersistenceStore
from .stores.memory import MemoryStore
from .transaction import Transaction

__all__ = ["PersistenceManager", "Route", "Event", "StoreStats", "default_data_dir"]

EVENTS = ("save", "load", "delete", "error")
_ROUTE_CACHE_SIZE = 4096   # categories
_KEY_CACHE_SIZE = 65536    # recently used keys (a few MB at most)


def default_data_dir() -> Path:
    """Where the embedded default keeps its files: ``$KVSTORE_DATA_DIR`` or the platform's user
    data folder (platformdirs)."""
    env = os.environ.get("KVSTORE_DATA_DIR")
    if env:
        return Path(os.path.expanduser(env))
    import platformdirs

    return Path(platformdirs.user_data_dir("kvstore", appauthor=False))


@dataclasses.dataclass(frozen=True)
class Route:
    """Where a key goes: ``store`` name, effective ``ttl`` (seconds, None = permanent) and why."""

    key: str
    category: str | None
    store: str
    ttl: float | None
    reason: str

    def __str__(self) -> str:
        ttl = "permanent" if self.ttl is None else f"ttl {self.ttl:g}s"
        return f"{self.key} -> {self.store} ({ttl}; {self.reason})"


@dataclasses.dataclass(frozen=True)
class Event:
    """What a listener registered with :meth:`PersistenceManager.on` receives."""

    name: str
    key: str | None
    store: str
    size: int | None = None
    duration: float = 0.0
    error: BaseException | None = None

    def __getitem__(self, field: str) -> Any:
        """``event["key"]`` works as well as ``event.key``."""
        if field not in self.__dataclass_fields__:
            raise KeyError(field)
        return getattr(self, field)


@dataclasses.dataclass
class StoreStats:
    hits: int = 0
    misses: int = 0
    saves: int = 0
    deletes: int = 0
    errors: int = 0


class PersistenceManager:
    """Routes keys by category to the ``memory``, ``cache``, ``database`` and ``file`` stores.

    ``PersistenceManager()`` is the embedded default: no server, files under
    :func:`default_data_dir`. Use :meth:`from_yaml` / :meth:`from_config` for the rest.
    """

    def __init__(self, config: Config | None = None, *,
                 stores: Mapping[str, PersistenceStore] | None = None) -> None:
        self.config = config if config is not None else Config()
        self._listeners: dict[str, list[Callable[[Event], Any]]] = {e: [] for e in EVENTS}
        self._on_save = self._listeners["save"]  # the same lists, without a dict lookup per call
        self._on_load = self._listeners["load"]
        self._stats: dict[str, StoreStats] = {}
        # category -> (store, category TTL, stats, store name): routing costs one dict lookup.
        self._route_cache: dict[str, tuple[PersistenceStore, float | None, StoreStats, str]] = {}
        self._key_routes: dict[str, tuple[PersistenceStore, float | None, StoreStats, str]] = {}
        self._closed = False
        self.stores: dict[str, PersistenceStore] = dict(stores) if stores else self._open_stores()
        self._stats = {name: StoreStats() for name in self.stores}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._load_memory_snapshot()
        if self.config.memory.autosave and self.config.memory.snapshot:
            self._start_thread("kvstore-autosave", "memory", self.config.memory.autosave,
                               self.save_snapshot)
        if self.config.backup.enabled:
            self._start_thread("kvstore-backup", "backup", self.config.backup.interval,
                               self.backup)

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> "PersistenceManager":
        """Read, check and apply a YAML file (see ``config.example.yaml``)."""
        return cls(load_config(path))

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | Config) -> "PersistenceManager":
        """The same structure as the YAML, as a dict (with or without ``persistence:``)."""
        return cls(data if isinstance(data, Config) else parse_config(data))

    def _open_stores(self) -> dict[str, PersistenceStore]:
        from .stores.file import FileStore
        from .stores.sqlite import SQLiteStore

        c = self.config
        secret = c.pickle_secret
        data_dir = default_data_dir()
        opened: dict[str, PersistenceStore] = {}
        try:
            opened["memory"] = MemoryStore(max_entries=c.memory.max_entries,
                                           ttl_default=c.memory.ttl_default,
                                           serializer=c.memory.serializer, secret=secret)
            if c.postgres is not None:
                from .stores.postgres import PostgresStore

                opened["database"] = PostgresStore(dsn=c.postgres.dsn, table=c.postgres.table,
                                                   ttl_default=c.postgres.ttl_default,
                                                   serializer=c.postgres.serializer, secret=secret)
            else:
                opened["database"] = SQLiteStore(path=c.sqlite.path or data_dir / "kvstore.db",
                                                 ttl_default=c.sqlite.ttl_default,
                                                 serializer=c.sqlite.serializer, secret=secret,
                                                 synchronous=c.sqlite.synchronous)
            opened["file"] = FileStore(base_path=c.file.base_path or data_dir / "files",
                                       format=c.file.format, ttl_default=c.file.ttl_default,
                                       secret=secret)
            if c.redis is not None:
                from .stores.redis import RedisStore

                redis = RedisStore(url=c.redis.url, ttl_default=c.redis.ttl_default,
                                   serializer=c.redis.serializer, key_prefix=c.redis.key_prefix,
                                   cluster=c.redis.cluster or None, secret=secret,
                                   socket_timeout=c.redis.socket_timeout,
                                   connect_timeout=c.redis.connect_timeout)
                if c.redis.fallback:
                    from .stores.fallback import FallbackStore

                    opened["cache"] = FallbackStore(
                        redis, opened[c.redis.fallback],
                        on_error=lambda exc: self._emit_error("fallback", "cache", exc))
                else:
                    opened["cache"] = redis
            else:
                # The embedded stand-in for Redis: a SQLite file with Redis's default TTL, shared
                # by every process on the machine like a local Redis would be.
                opened["cache"] = SQLiteStore(path=data_dir / "cache.db", ttl_default=3600,
                                              serializer="msgpack", secret=secret)
        except BaseException:
            for store in opened.values():
                store.close()
            raise
        return {name: opened[name] for name in ("memory", "cache", "database", "file")}

    # -- routing -------------------------------------------------------------------------------------

    def route(self, key: str) -> Route:
        """Which store and TTL ``key`` goes to, and why."""
        if not isinstance(key, str) or not key:
            raise InvalidKeyError(f"key must be a non-empty str, got {key!r}")
        category, sep, _ = key.partition(":")
        spec = self.config.categories.get(category) if sep else None
        if spec is not None:
            store = self.stores[spec.store]
            ttl = spec.ttl if spec.ttl is not None else store.ttl_default
            why = f"category {category!r}" + (f" sets ttl {spec.ttl:g}s" if spec.ttl else "")
            return Route(key, category, spec.store, ttl, why)
        name = self.config.default_store
        reason = (f"category {category!r} is not configured: default_store" if sep
                  else "no category (no ':' in the key): default_store")
        return Route(key, category if sep else None, name, self.stores[name].ttl_default, reason)

    def _resolve(self, category: str) -> tuple[PersistenceStore, float | None, StoreStats, str]:
        spec = self.config.categories.get(category)
        name = spec.store if spec is not None else self.config.default_store
        entry = (self.stores[name], spec.ttl if spec is not None else None, self._stats[name], name)
        if len(self._route_cache) >= _ROUTE_CACHE_SIZE:  # unconfigured categories are unbounded
            self._route_cache.clear()
        self._route_cache[category] = entry
        return entry

    def _forget_routes(self) -> None:
        """Drop cached routes (after ``stores`` changed)."""
        self._route_cache.clear()
        self._key_routes.clear()

    def _override(self, store: str) -> tuple[PersistenceStore, float | None, StoreStats, str]:
        st = self.stores.get(store)
        if st is None:
            raise ConfigError(f"store={store!r}: unknown store (known: {', '.join(self.stores)})")
        return st, None, self._stats[store], store

    def _entry(self, key: str, store: str | None) -> tuple[PersistenceStore, float | None, StoreStats, str]:
        """(store, category TTL, stats, store name) for a call; cached per category."""
        if store is not None:
            return self._override(store)
        try:
            i = key.find(":")
        except AttributeError:
            raise InvalidKeyError(f"key must be a non-empty str, got {key!r}") from None
        category = key[:i] if i > 0 else ""  # "" never names a category: default_store
        entry = self._route_cache.get(category) or self._resolve(category)
        # Remember the key itself too: a hit then costs one lookup of an already-hashed str.
        if len(self._key_routes) >= _KEY_CACHE_SIZE:
            self._key_routes.clear()
        self._key_routes[key] = entry
        return entry

    def _store_name_for(self, key: str, store: str | None) -> str:
        return self._entry(key, store)[3]

    def _route_ttl(self, key: str, store_name: str) -> float | None:
        entry = self._entry(key, None)
        return entry[1] if entry[3] == store_name else None

    # -- the key-value interface --------------------------------------------------------------------

    def save(self, key: str, value: Any, ttl: TTL = None, store: str | None = None) -> bool:
        """Store ``value`` where ``key`` routes (or in ``store``), with ``ttl`` or the category's."""
        # The per-key route cache is looked up inline here and in load(), the hot paths of every
        # application; _entry() fills it on a miss.
        if store is None and type(key) is str:
            entry = self._key_routes.get(key) or self._entry(key, None)
        else:
            entry = self._entry(key, store)
        st, category_ttl, stats, name = entry
        listeners = self._on_save
        start = time.perf_counter() if listeners else 0.0
        try:
            st.save(key, value, ttl if ttl is not None else category_ttl)
        except KVStoreError as exc:
            stats.errors += 1
            self._emit_error("save", name, exc, key)
            raise
        stats.saves += 1
        if listeners:
            self._emit(listeners, Event("save", key, name, _size(st, value),
                                        time.perf_counter() - start))
        return True

    def load(self, key: str, default: Any = None, store: str | None = None,
             as_type: type | None = None) -> Any:
        """The value of ``key`` or ``default``; ``as_type=SomeDataclass`` rebuilds the object."""
        if store is None and type(key) is str:
            entry = self._key_routes.get(key) or self._entry(key, None)
        else:
            entry = self._entry(key, store)
        st, _, stats, name = entry
        listeners = self._on_load
        start = time.perf_counter() if listeners else 0.0
        try:
            value = st.load(key, MISSING)
        except KVStoreError as exc:
            stats.errors += 1
            self._emit_error("load", name, exc, key)
            raise
        if value is MISSING:
            stats.misses += 1
            value = default
        else:
            stats.hits += 1
            if as_type is not None:
                value = from_dict(as_type, value)
        if listeners:
            self._emit(listeners, Event("load", key, name, None, time.perf_counter() - start))
        return value

    def delete(self, key: str, store: str | None = None) -> bool:
        st, _, stats, name = self._entry(key, store)
        listeners = self._listeners["delete"]
        start = time.perf_counter() if listeners else 0.0
        try:
            existed = st.delete(key)
        except KVStoreError as exc:
            stats.errors += 1
            self._emit_error("delete", name, exc, key)
            raise
        stats.deletes += 1
        if listeners:
            self._emit(listeners, Event("delete", key, name, None, time.perf_counter() - start))
        return existed

    def exists(self, key: str, store: str | None = None) -> bool:
        st, _, stats, name = self._entry(key, store)
        try:
            return st.exists(key)
        except KVStoreError as exc:
            stats.errors += 1
            self._emit_error("exists", name, exc, key)
            raise

    def keys(self, prefix: str = "", store: str | None = None) -> Iterator[str]:
        """Live keys starting with ``prefix``: in ``store``, or in every store (each key once)."""
        names = [store] if store is not None else list(self.stores)
        if store is not None:
            self._override(store)
        seen: set[str] = set()
        for name in names:
            try:
                found = list(self.stores[name].keys(prefix))
            except KVStoreError as exc:
                self._stats[name].errors += 1
                self._emit_error("keys", name, exc)
                raise
            for key in found:
                if key not in seen:
                    seen.add(key)
                    yield key

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Stage writes; commit them all on normal exit, none on an exception (re-raised)."""
        tx = Transaction(self)
        try:
            yield tx
        except BaseException:
            tx.discard()
            raise
        tx.commit()

    # -- events and stats ------------------------------------------------------------------------------

    def on(self, event: str, callback: Callable[[Event], Any]) -> Callable[[Event], Any]:
        """Call ``callback(Event)`` after each ``save``/``load``/``delete``, or on an ``error``.

        A callback that raises does not break the operation. Returns ``callback`` (usable as a
        decorator: ``@pm.on("error")`` is not supported; call ``pm.on("error", fn)``).
        """
        if event not in self._listeners:
            raise ConfigError(f"on({event!r}): unknown event (known: {', '.join(EVENTS)})")
        if not callable(callback):
            raise ConfigError(f"on({event!r}): callback must be callable")
        self._listeners[event].append(callback)
        return callback

    def off(self, event: str, callback: Callable[[Event], Any]) -> None:
        """Stop calling ``callback`` for ``event``."""
        if callback in self._listeners.get(event, []):
            self._listeners[event].remove(callback)

    @staticmethod
    def _emit(listeners: list[Callable[[Event], Any]], event: Event) -> None:
        for callback in list(listeners):
            try:
                callback(event)
            except Exception:  # a listener's bug must not break the application's write
                pass

    def _emit_error(self, op: str, store: str, exc: BaseException, key: str | None = None) -> None:
        listeners = self._listeners["error"]
        if listeners:
            self._emit(listeners, Event("error", key, store, None, 0.0, exc))

    def _count_commit(self, name: str, ops: list[tuple[str, Any, float | None]]) -> None:
        stats = self._stats[name]
        for key, blob, _ in ops:
            if blob is MISSING:
                stats.deletes += 1
            else:
                stats.saves += 1
            listeners = self._listeners["delete" if blob is MISSING else "save"]
            if listeners:
                size = len(blob) if isinstance(blob, (bytes, bytearray)) else None
                self._emit(listeners, Event("delete" if blob is MISSING else "save", key, name,
                                            size, 0.0))

    def stats(self) -> dict[str, dict[str, int]]:
        """Per store: hits, misses, saves, deletes, errors since the manager started."""
        return {name: dataclasses.asdict(s) for name, s in self._stats.items()}

    # -- backups ------------------------------------------------------------------------------------

    def backup(self, dest: str | os.PathLike[str] | None = None) -> Path:
        """Write a new backup of every durable store inside folder ``dest`` and return its path.

        Without ``dest`` the configured ``backup.path`` (default: the user data folder's
        ``backups``) is used, and older backups there beyond ``backup.retention`` are deleted.
        """
        from .backup import create_backup, prune_backups

        path = create_backup(self, dest)
        if dest is None:
            prune_backups(path.parent, self.config.backup.retention)
        return path

    def restore(self, path: str | os.PathLike[str]) -> dict[str, int]:
        """Replace the durable stores' contents with backup ``path`` (verified first: a damaged
        or partial backup raises ``CorruptDataError`` and nothing changes). Returns keys per store."""
        from .backup import restore_backup

        return restore_backup(self, path)

    # -- memory snapshots -----------------------------------------------------------------------------

    def _snapshot_serializer(self) -> Serializer:
        secret = self.config.pickle_secret
        return Serializer("pickle", secret=secret) if secret else Serializer("msgpack")

    def save_snapshot(self) -> int:
        """Write the memory store's live keys (with remaining TTLs) to ``memory.snapshot``
        atomically. Returns how many keys were written. Done every ``autosave`` and on close."""
        path = self.config.memory.snapshot
        memory = self.stores.get("memory")
        if path is None or not isinstance(memory, MemoryStore):
            return 0
        serializer = self._snapshot_serializer()
        rows = []
        for key, value, ttl in memory.items_with_ttl():
            try:
                serializer.serialize(value)
            except KVStoreError as exc:
                self._emit_error("snapshot", "memory", exc, key)
                continue
            rows.append((key, value, ttl))
        blob = serializer.serialize({"version": 1, "saved_at": time.time(), "entries": rows})
        _atomic_write(path, blob)
        return len(rows)

    def _load_memory_snapshot(self) -> None:
        path = self.config.memory.snapshot
        memory = self.stores.get("memory")
        if path is None or not isinstance(memory, MemoryStore) or not path.exists():
            return
        try:
            data = self._snapshot_serializer().deserialize(path.read_bytes())
            elapsed = max(0.0, time.time() - float(data["saved_at"]))
            ops: list[tuple[str, Any, float | None]] = []
            for key, value, ttl in data["entries"]:
                if ttl is None:
                    ops.append((key, value, None))
                elif ttl - elapsed > 0:
                    ops.append((key, value, ttl - elapsed))
            memory._apply(ops)
        except (KVStoreError, KeyError, TypeError, ValueError) as exc:
            # A damaged snapshot must not stop the application; the error event says why.
            self._emit_error("snapshot", "memory", exc)

    # -- background work -------------------------------------------------------------------------------

    def _start_thread(self, name: str, store: str, interval: float, job: Callable[[], Any]) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    job()
                except Exception as exc:  # keep the application running; tell the listeners
                    self._emit_error(name, store, exc)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        """Stop background work, save the memory snapshot, close every store. Safe twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        try:
            self.save_snapshot()
        except Exception as exc:
            self._emit_error("snapshot", "memory", exc)
        for store in self.stores.values():
            try:
                store.close()
            except Exception as exc:
                self._emit_error("close", type(store).__name__, exc)

    def __enter__(self) -> "PersistenceManager":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}={store!r}" for name, store in self.stores.items())
        return mask_secrets(f"PersistenceManager({parts})")


def _size(store: PersistenceStore, value: Any) -> int | None:
    """Bytes the value takes once encoded (only computed when a listener wants it)."""
    if store.serializer is None:
        return None
    try:
        return len(store._encode("size", value))
    except KVStoreError:
        return None


def _atomic_write(path: Path, data: bytes) -> None:
    make_private_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# ------------------------------------------------------------------------------------- as_type


def from_dict(cls: Any, value: Any) -> Any:
    """Turn loaded data back into ``cls``: dataclasses (nested), datetimes from ISO text,
    ``list[X]``, ``dict[str, X]``, ``Optional[X]``. Other values are returned as they are."""
    origin = typing.get_origin(cls)
    args = typing.get_args(cls)
    if cls is Any or cls is None:
        return value
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return from_dict(arg, value)
            except (TypeError, ValueError):
                continue
        return value
    if origin in (list, set, frozenset, tuple) and isinstance(value, (list, tuple, set, frozenset)):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return tuple(from_dict(a, v) for a, v in zip(args, value))
        item = args[0] if args else Any
        return origin(from_dict(item, v) for v in value)
    if origin is dict and isinstance(value, dict):
        kt, vt = args if args else (Any, Any)
        return {from_dict(kt, k): from_dict(vt, v) for k, v in value.items()}
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"cannot build {cls.__name__} from {type(value).__name__}")
        hints = typing.get_type_hints(cls)
        kwargs = {f.name: from_dict(hints.get(f.name, Any), value[f.name])
                  for f in dataclasses.fields(cls) if f.name in value and f.init}
        return cls(**kwargs)
    if cls is dt.datetime and isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    if cls is dt.date and isinstance(value, str):
        return dt.date.fromisoformat(value)
    return value
