"""The manager's core: routing, TTL rules, stats and events, in one place for every front.

:class:`Core` knows the configured stores and which one a key goes to; it counts and reports
what happens. It opens nothing and runs no I/O of its own, so the synchronous
:class:`~kvstore.PersistenceManager`, its transactions, and the asyncio front all use the same
rules through these named methods:

- :meth:`Core.entry` / :meth:`Core.route`: the store, category TTL and stats of a key;
- :meth:`Core.store_names_for_prefix`: which stores can hold keys with a prefix;
- :meth:`Core.new_key_ttl` / :meth:`Core.ttl_for`: the TTL rules;
- :meth:`Core.failed`, :meth:`Core.saved`, :meth:`Core.loaded`, :meth:`Core.deleted`,
  :meth:`Core.committed`: statistics and events.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import threading
import time
from typing import Any, Callable, Iterable, Mapping, NamedTuple

from . import observe
from .config import Config
from .errors import ConfigError, InvalidArgumentError, InvalidKeyError, StoreUnavailableError
from .store import MISSING, PersistenceStore, parse_ttl
from .storemap import StoreMap

__all__ = ["Core", "Entry", "Route", "Event", "StoreStats", "EVENTS", "memo_keys"]

EVENTS = ("save", "load", "delete", "error")
_ROUTE_CACHE_SIZE = 4096   # categories
_KEY_CACHE_SIZE = 65536    # recently used keys (a few MB at most)


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
    """What a listener registered with :meth:`PersistenceManager.on` receives.

    ``name`` is the event (``save``, ``load``, ``delete``, ``error``). An ``error`` event's
    ``operation`` names what failed: the call (``"save"``, ``"load"``, ``"save_many"``, ...),
    ``"transaction"`` (a read in one), ``"commit"``, or a background job (``"snapshot"``,
    ``"fallback"``, ``"journal"``, ``"restore"``, ``"close"``, a scheduled job's name); the
    same names on the synchronous and the asyncio manager. Other events leave it None.
    """

    name: str
    key: str | None
    store: str
    size: int | None = None
    duration: float = 0.0
    error: BaseException | None = None
    operation: str | None = None

    def __getitem__(self, field: str) -> Any:
        """``event["key"]`` works as well as ``event.key``."""
        if field not in self.__dataclass_fields__:
            raise KeyError(field)
        return getattr(self, field)


@dataclasses.dataclass
class StoreStats:
    """What :meth:`PersistenceManager.stats` reports per store since the manager started:
    ``hits``/``misses`` (reads that found a value or not), ``saves``, ``deletes``, ``errors``
    (store errors of calls), ``log_appends`` (records appended to the store's logs through
    ``pm.log(...)``) and ``log_reads`` (reads of those logs: ``read``, ``tail``, ``last``, each
    page of an iteration)."""

    hits: int = 0
    misses: int = 0
    saves: int = 0
    deletes: int = 0
    errors: int = 0
    log_appends: int = 0
    log_reads: int = 0


class _DownStats(StoreStats):
    """The stats of a store that was found down (``store_down`` logged): the first success
    counted on them (a hit, miss, save, delete, log read or append) logs ``store_up`` and turns
    them back into plain :class:`StoreStats`. The class of the very object the routes hold is
    switched, so the hot paths (``entry.stats.saves += 1``) pay nothing while the store is up."""

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name != "errors" and name in StoreStats.__dataclass_fields__:
            self.__dict__["up"]()


class Entry(NamedTuple):
    """Where a call goes: the store, the category's TTL (None: the store's default), the
    store's stats, the store's name, and the store the front calls (``front``: the store
    itself on the synchronous front, its async face on the asyncio one; the rules and
    transactions always use ``store``)."""

    store: PersistenceStore
    ttl: float | None
    stats: StoreStats
    name: str
    front: Any


class Core:
    """Routing, TTL rules, stats and events over a set of named stores."""

    def __init__(self, config: Config, stores: Mapping[str, PersistenceStore]) -> None:
        self.config = config
        self.stats: dict[str, StoreStats] = {name: StoreStats() for name in stores}
        self.listeners: dict[str, list[Callable[[Event], Any]]] = {e: [] for e in EVENTS}
        # category -> Entry: routing costs one dict lookup; recently used keys -> Entry too.
        self._routes: dict[str, Entry] = {}
        self.key_routes: dict[str, Entry] = {}
        #: The commit journal (set by the manager's Lifecycle; None: commits are not recorded).
        self.journal: Any = None
        self.stores: StoreMap[PersistenceStore] = StoreMap(dict(stores), self._store_changed)
        #: The stores the front calls, by name (None: :attr:`stores` themselves; the asyncio
        #: manager sets its map of async faces here).
        self.fronts: Mapping[str, Any] | None = None
        self._health = threading.Lock()

    def replace_stores(self, stores: Mapping[str, PersistenceStore]) -> None:
        """Use ``stores`` from now on (``pm.stores = {...}``)."""
        for name, store in stores.items():
            self._check_store(name, store)
        self.stores = StoreMap(dict(stores), self._store_changed)
        self.forget_routes()

    def _check_store(self, name: str, store: Any) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"stores[{name!r}]: a store's name must be a non-empty str")
        if not isinstance(store, PersistenceStore):
            raise ConfigError(f"stores[{name!r}]: {store!r} is not a PersistenceStore")

    def _store_changed(self, name: str, store: PersistenceStore | None) -> PersistenceStore | None:
        """``pm.stores[name] = store`` (None: ``del``): checked, then routing forgets what it
        cached so the next call goes to the new store."""
        if store is None:
            users = [f"category {c!r}" for c, spec in self.config.categories.items()
                     if spec.store == name]
            if name == self.config.default_store:
                users.append("default_store")
            if users:
                raise ConfigError(f"del stores[{name!r}]: {', '.join(users)} routes to it; "
                                  f"assign another store instead")
        else:
            self._check_store(name, store)
        self._routes.clear()
        self.key_routes.clear()
        if store is not None:
            self.stats.setdefault(name, StoreStats())
        return store

    # -- routing ---------------------------------------------------------------------------------

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

    def _resolve(self, category: str) -> Entry:
        spec = self.config.categories.get(category)
        name = spec.store if spec is not None else self.config.default_store
        store = self.stores[name]
        entry = Entry(store, spec.ttl if spec is not None else None, self.stats[name], name,
                      store if self.fronts is None else self.fronts[name])
        if len(self._routes) >= _ROUTE_CACHE_SIZE:  # unconfigured categories are unbounded
            self._routes.clear()
        self._routes[category] = entry
        return entry

    def forget_routes(self) -> None:
        """Drop cached routes (after ``stores`` changed)."""
        self._routes.clear()
        self.key_routes.clear()
        for name in self.stores:
            self.stats.setdefault(name, StoreStats())

    def named(self, store: str) -> Entry:
        """The entry of the store called ``store`` (a call's ``store=`` argument)."""
        st = self.stores.get(store)
        if st is None:
            raise ConfigError(f"store={store!r}: unknown store (known: {', '.join(self.stores)})")
        return Entry(st, None, self.stats[store], store,
                     st if self.fronts is None else self.fronts[store])

    def entry(self, key: str, store: str | None = None) -> Entry:
        """Where a call for ``key`` goes (``store`` overrides routing); cached per category."""
        if store is not None:
            return self.named(store)
        try:
            i = key.find(":")
        except AttributeError:
            raise InvalidKeyError(f"key must be a non-empty str, got {key!r}") from None
        category = key[:i] if i > 0 else ""  # "" never names a category: default_store
        entry = self._routes.get(category) or self._resolve(category)
        # Remember the key itself too: a hit then costs one lookup of an already-hashed str.
        if len(self.key_routes) >= _KEY_CACHE_SIZE:
            self.key_routes.clear()
        self.key_routes[key] = entry
        return entry

    def store_names_for_prefix(self, prefix: str, store: str | None = None) -> list[str]:
        """The stores that can hold keys starting with ``prefix``: the named one, the one
        category's store when the prefix contains ``:`` (every such key has that category),
        else every store."""
        if store is not None:
            return [self.named(store).name]
        if not isinstance(prefix, str):
            raise InvalidKeyError(f"prefix must be a str, got {prefix!r}")
        if ":" in prefix:
            return [self.entry(prefix).name]
        return list(self.stores)

    # -- batches -------------------------------------------------------------------------------

    def group_keys(self, keys: Iterable[str], store: str | None = None
                   ) -> list[tuple[Entry, list[str]]]:
        """The keys grouped by the store they route to (each key checked), in first-seen order."""
        groups: dict[str, tuple[Entry, list[str]]] = {}
        for key in keys:
            entry = self.entry(key, store)
            entry.store.check_key(key)
            groups.setdefault(entry.name, (entry, []))[1].append(key)
        return list(groups.values())

    def plan_save_many(self, items: Mapping[str, Any], ttl: Any, store: str | None = None
                       ) -> list[tuple[Entry, float | None, list[tuple[str, Any]]]]:
        """``save_many`` as batches ``(entry, seconds, [(key, blob)])``: one per store and
        TTL (each key's category TTL unless ``ttl`` is given). Every key is checked and every
        value encoded here, before anything is written."""
        if not isinstance(items, Mapping):
            raise InvalidArgumentError(f"save_many: items must be a mapping, got {items!r}")
        batches: dict[tuple[str, Any], tuple[Entry, float | None, list[tuple[str, Any]]]] = {}
        for key, value in items.items():
            entry = self.entry(key, store)
            st = entry.store
            st.check_key(key)
            seconds = st.resolve_ttl(self.ttl_arg(entry, ttl))
            batch = batches.setdefault((entry.name, seconds), (entry, seconds, []))
            batch[2].append((key, st.encode(key, value)))
        return list(batches.values())

    # -- TTL rules ------------------------------------------------------------------------------

    @staticmethod
    def ttl_arg(entry: Entry, ttl: Any) -> Any:
        """The TTL to pass to a store's ``save``-like call: the call's, else the category's
        (None then means the store's own default)."""
        return ttl if ttl is not None else entry.ttl

    @staticmethod
    def new_key_ttl(entry: Entry) -> float | None:
        """Seconds a key created by ``incr``/``update``/``append`` lives: the category's TTL,
        else the store's ``ttl_default``."""
        return entry.ttl if entry.ttl is not None else entry.store.ttl_default

    def ttl_for(self, key: str, store_name: str) -> float | None:
        """The category TTL of ``key`` if it routes to ``store_name`` (else None: the store's
        default), for writes staged with ``store=``."""
        entry = self.entry(key)
        return entry.ttl if entry.name == store_name else None

    # -- stats and events --------------------------------------------------------------------------

    def on(self, event: str, callback: Callable[[Event], Any]) -> Callable[[Event], Any]:
        if event not in self.listeners:
            raise ConfigError(f"on({event!r}): unknown event (known: {', '.join(EVENTS)})")
        if not callable(callback):
            raise ConfigError(f"on({event!r}): callback must be callable")
        self.listeners[event].append(callback)
        return callback

    def off(self, event: str, callback: Callable[[Event], Any]) -> None:
        if callback in self.listeners.get(event, []):
            self.listeners[event].remove(callback)

    @staticmethod
    def emit(listeners: list[Callable[[Event], Any]], event: Event) -> None:
        for callback in list(listeners):
            try:
                callback(event)
            except Exception:  # a listener's bug must not break the application's write
                pass

    def emit_error(self, op: str, store: str, exc: BaseException, key: str | None = None) -> None:
        """Tell the ``error`` listeners (without counting: background jobs use this)."""
        listeners = self.listeners["error"]
        if listeners:
            self.emit(listeners, Event("error", key, store, None, 0.0, exc, op))

    def failed(self, op: str, entry: Entry, exc: BaseException, key: str | None = None) -> None:
        """Count an error of a call on ``entry``'s store and tell the listeners; a store found
        unavailable is logged (``store_down``) until a call succeeds on it again."""
        stats = entry.stats
        stats.errors += 1
        # (A store serving from its fallback logs its outage itself: kvstore.fallback.)
        if (isinstance(exc, StoreUnavailableError) and type(stats) is StoreStats
                and not getattr(entry.store, "using_fallback", False)):
            with self._health:
                down = type(stats) is StoreStats
                if down:
                    stats.__dict__["up"] = lambda: self._store_up(entry.name, stats)
                    stats.__class__ = _DownStats
            if down:
                observe.signal("store_down", store=entry.name, operation=op, error=exc)
        self.emit_error(op, entry.name, exc, key)

    def _store_up(self, name: str, stats: StoreStats) -> None:
        with self._health:
            up = type(stats) is _DownStats
            if up:
                stats.__class__ = StoreStats
                del stats.__dict__["up"]
        if up:
            observe.signal("store_up", store=name)

    def saved(self, entry: Entry, keys: list[str], start: float = 0.0,
              size: int | None = None) -> None:
        entry.stats.saves += len(keys)
        listeners = self.listeners["save"]
        if listeners:
            took = time.perf_counter() - start if start else 0.0
            for key in keys:
                self.emit(listeners, Event("save", key, entry.name, size, took))

    def loaded(self, entry: Entry, hits: list[str], misses: int = 0, start: float = 0.0) -> None:
        entry.stats.hits += len(hits)
        entry.stats.misses += misses
        listeners = self.listeners["load"]
        if listeners:
            took = time.perf_counter() - start if start else 0.0
            for key in hits:
                self.emit(listeners, Event("load", key, entry.name, None, took))

    def deleted(self, entry: Entry, keys: list[str], count: int | None = None) -> None:
        entry.stats.deletes += len(keys) if count is None else count
        listeners = self.listeners["delete"]
        if listeners:
            for key in keys:
                self.emit(listeners, Event("delete", key, entry.name))

    def committed(self, name: str, ops: list[tuple[str, Any, Any]]) -> None:
        """Count and report a transaction's writes to store ``name``."""
        entry = self.named(name)
        self.saved(entry, [k for k, b, _ in ops if b is not MISSING])
        self.deleted(entry, [k for k, b, _ in ops if b is MISSING])

    @staticmethod
    def counted_log(entry: Entry, name: str) -> Any:
        """The log ``name`` of ``entry``'s store, counting its appends and reads in the
        store's stats."""
        log = entry.front.log(name)
        log.counts = entry.stats
        return log

    def filler(self, entry: Entry, key: str, factory: Callable[[], Any]) -> "Fill":
        """``get_or_set``'s factory, wrapped to count a miss (it ran) or a hit afterwards."""
        return Fill(self, entry, key, factory)

    def stats_report(self) -> dict[str, dict[str, int]]:
        report = {name: dataclasses.asdict(s) for name, s in self.stats.items()}
        for name, store in self.stores.items():  # a near cache's own hits and misses
            report.get(name, {}).update(near_stats(store))
        return report


def near_stats(store: Any) -> dict[str, int]:
    """``near_hits`` / ``near_misses`` of the near cache in ``store``'s layers (none: {})."""
    from . import registry

    for layer in registry.unwrapped(store):
        report = getattr(layer, "near_stats", None)
        if report is not None:
            return dict(report())
    return {}


class Fill:
    """A ``get_or_set`` factory that remembers whether it ran; :meth:`count` then records a
    miss and a save, or a hit."""

    def __init__(self, core: Core, entry: Entry, key: str, factory: Callable[[], Any]) -> None:
        if not callable(factory):
            raise InvalidArgumentError(f"get_or_set {key!r}: factory must be callable")
        self.core, self.entry, self.key, self.factory = core, entry, key, factory
        self.ran = False

    def __call__(self) -> Any:
        self.ran = True
        return self.factory()

    def count(self) -> None:
        if self.ran:
            self.entry.stats.misses += 1
            self.core.saved(self.entry, [self.key])
        else:
            self.core.loaded(self.entry, [self.key])


# -- memoization keys (``cached``, on both fronts) ------------------------------------------------


def memo_keys(category: str, ttl: Any, key: Callable[..., str] | None
              ) -> Callable[[Callable[..., Any]], Callable[..., str]]:
    """Check ``cached``'s settings; return ``for_function(fn) -> cache_key(*args, **kwargs)``.

    The key is ``<category>:<module>.<qualname>:<sha256 of the arguments as canonical JSON>``
    (``self``/``cls`` left out, so instances share results), or ``...:<key(*args, **kwargs)>``.
    """
    if not isinstance(category, str) or not category or ":" in category:
        raise InvalidArgumentError(f"cached: category must be a non-empty str without ':', "
                                   f"got {category!r}")
    if key is not None and not callable(key):
        raise InvalidArgumentError(f"cached: key must be callable, got {key!r}")
    if ttl is not None:
        parse_ttl(ttl)

    def for_function(fn: Callable[..., Any]) -> Callable[..., str]:
        if not callable(fn):
            raise InvalidArgumentError(f"cached: {fn!r} is not callable")
        prefix = f"{category}:{fn.__module__}.{fn.__qualname__}:"
        params = list(inspect.signature(fn).parameters)
        skip = 1 if params and params[0] in ("self", "cls") else 0

        def cache_key(*args: Any, **kwargs: Any) -> str:
            if key is not None:
                return prefix + str(key(*args, **kwargs))
            text = json.dumps([args[skip:], kwargs], sort_keys=True, default=_canonical,
                              separators=(",", ":"))
            return prefix + hashlib.sha256(text.encode()).hexdigest()[:32]

        return cache_key

    return for_function


def _canonical(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, bytes):
        return {"bytes": obj.hex()}
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return f"{type(obj).__qualname__}:{obj!r}"
