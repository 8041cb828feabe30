"""PersistenceManager: one object that routes each key to the right store with the right TTL.

>>> pm = PersistenceManager.from_config({"persistence": {
...     "categories": {"session": {"store": "memory", "ttl": "15m"}}}})   # doctest: +SKIP
>>> pm.save("session:42", {"user": "ann"})                                  # doctest: +SKIP
>>> pm.route("session:42").store                                           # doctest: +SKIP
'memory'
"""

from __future__ import annotations

import functools
import heapq
import itertools
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, MutableMapping, TypeVar, overload

from . import flows
from .astype import from_dict
from .config import Config, default_data_dir, load_config, mask_secrets, parse_config
from .core import EVENTS, Core, Entry, Event, Route, StoreStats, memo_keys
from .errors import ConflictError, KVStoreError, LockTimeout
from .locking import Lock
from .logs import Log
from .store import MISSING, TTL, PersistenceStore, check_paging
from .lifecycle import Lifecycle
from .stores.opening import open_stores
from .transaction import Transaction, attempts

__all__ = ["PersistenceManager", "Route", "Event", "StoreStats", "default_data_dir", "from_dict",
           "EVENTS"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: Errors that say something about the caller's situation, not about a store's health: not
#: counted in ``stats()["errors"]`` nor sent to ``error`` listeners.
_NOT_STORE_ERRORS = (ConflictError, LockTimeout)


class PersistenceManager:
    """Routes keys by category to the ``memory``, ``cache``, ``database`` and ``file`` stores.

    ``PersistenceManager()`` is the embedded default: no server, files under
    :func:`default_data_dir`. Use :meth:`from_yaml` / :meth:`from_config` for the rest.

    Routing, TTL rules, statistics and events live in :class:`~kvstore.core.Core`, shared with
    transactions and the asyncio front; this class adds the synchronous calls.
    """

    def __init__(self, config: Config | None = None, *,
                 stores: Mapping[str, PersistenceStore] | None = None) -> None:
        self.config = config if config is not None else Config()
        self._core = core = Core(self.config, stores if stores else open_stores(
            self.config, lambda exc: self._emit_error("fallback", "cache", exc)))
        self._key_routes = core.key_routes
        self._on_save = core.listeners["save"]  # the same lists, without a dict lookup per call
        self._on_load = core.listeners["load"]
        self._life = Lifecycle(core)
        self._life.start()

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> "PersistenceManager":
        """Read, check and apply a YAML file (see ``config.example.yaml``)."""
        return cls(load_config(path))

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | Config) -> "PersistenceManager":
        """The same structure as the YAML, as a dict (with or without ``persistence:``)."""
        return cls(data if isinstance(data, Config) else parse_config(data))

    @property
    def stores(self) -> MutableMapping[str, PersistenceStore]:
        """The stores by name: ``memory``, ``cache``, ``database``, ``file``. It reads like a
        dict; ``pm.stores["cache"] = other`` takes effect for the very next call (the old store
        is not closed: close it yourself)."""
        return self._core.stores

    @stores.setter
    def stores(self, stores: Mapping[str, PersistenceStore]) -> None:
        self._core.replace_stores(stores)

    # -- routing -------------------------------------------------------------------------------------

    def route(self, key: str) -> Route:
        """Which store and TTL ``key`` goes to, and why."""
        return self._core.route(key)

    def _fail(self, op: str, entry: Entry, exc: KVStoreError, key: str | None = None) -> None:
        if not isinstance(exc, _NOT_STORE_ERRORS):
            self._core.failed(op, entry, exc, key)

    # -- the key-value interface --------------------------------------------------------------------

    def save(self, key: str, value: Any, ttl: TTL = None, store: str | None = None) -> bool:
        """Store ``value`` where ``key`` routes (or in ``store``), with ``ttl`` or the category's."""
        # The per-key route cache is looked up inline here and in load(), the hot paths of every
        # application; Core.entry() fills it on a miss.
        if store is None and type(key) is str:
            entry = self._key_routes.get(key) or self._core.entry(key)
        else:
            entry = self._core.entry(key, store)
        st = entry.store
        listeners = self._on_save
        start = time.perf_counter() if listeners else 0.0
        try:
            if listeners:  # measure the blob written, rather than encoding the value again
                size = st.save_sized(key, value, ttl if ttl is not None else entry.ttl)
            else:
                st.save(key, value, ttl if ttl is not None else entry.ttl)
        except KVStoreError as exc:
            self._fail("save", entry, exc, key)
            raise
        entry.stats.saves += 1
        if listeners:
            self._core.emit(listeners, Event("save", key, entry.name, size,
                                             time.perf_counter() - start))
        return True

    @overload
    def load(self, key: str, default: Any = None, store: str | None = None,
             as_type: None = None) -> Any: ...

    @overload
    def load(self, key: str, default: Any = None, store: str | None = None, *,
             as_type: type[T]) -> T: ...

    def load(self, key: str, default: Any = None, store: str | None = None,
             as_type: Any = None) -> Any:
        """The value of ``key`` or ``default``; ``as_type=SomeDataclass`` rebuilds the object."""
        if store is None and type(key) is str:
            entry = self._key_routes.get(key) or self._core.entry(key)
        else:
            entry = self._core.entry(key, store)
        listeners = self._on_load
        start = time.perf_counter() if listeners else 0.0
        try:
            value = entry.store.load(key, MISSING)
        except KVStoreError as exc:
            self._fail("load", entry, exc, key)
            raise
        if value is MISSING:
            entry.stats.misses += 1
            value = default
        else:
            entry.stats.hits += 1
            if as_type is not None:
                value = from_dict(as_type, value)
        if listeners:
            self._core.emit(listeners, Event("load", key, entry.name, None,
                                             time.perf_counter() - start))
        return value

    def delete(self, key: str, store: str | None = None) -> bool:
        """Remove ``key``; True when it existed."""
        entry = self._core.entry(key, store)
        existed = self._call("delete", entry, key, entry.store.delete, key)
        self._core.deleted(entry, [key])
        return bool(existed)

    def exists(self, key: str, store: str | None = None) -> bool:
        """True when ``key`` holds a live value."""
        entry = self._core.entry(key, store)
        return bool(self._call("exists", entry, key, entry.store.exists, key))

    def _call(self, op: str, entry: Entry, key: str | None, fn: Callable[..., T],
              *args: Any) -> T:
        """``fn(*args)``, counting and reporting a store error."""
        try:
            return fn(*args)
        except KVStoreError as exc:
            self._fail(op, entry, exc, key)
            raise

    def keys(self, prefix: str = "", store: str | None = None, start_after: str | None = None,
             limit: int | None = None) -> Iterator[str]:
        """Live keys starting with ``prefix``, each once, sorted: in ``store``; in the
        category's store when ``prefix`` contains ``:`` (``"session:"``, ``"session:ann"``);
        else in every store (merged). Pages: ``start_after`` and ``limit``."""
        names = self._core.store_names_for_prefix(prefix, store)
        check_paging(start_after, limit)
        sources = [self._store_keys(name, prefix, start_after) for name in names]
        merged = (key for key, _ in itertools.groupby(heapq.merge(*sources)))  # each key once
        return merged if limit is None else itertools.islice(merged, limit)

    def _store_keys(self, name: str, prefix: str, start_after: str | None) -> Iterator[str]:
        entry = self._core.named(name)
        try:
            yield from entry.store.keys(prefix, start_after)
        except KVStoreError as exc:  # from the store, as the keys are read
            self._fail("keys", entry, exc)
            raise

    def items(self, prefix: str = "", store: str | None = None, start_after: str | None = None,
              limit: int | None = None, batch: int = 500) -> Iterator[tuple[str, Any]]:
        """``(key, value)`` for :meth:`keys`, sorted, loaded ``batch`` keys at a time."""
        keys = self.keys(prefix, store, start_after, limit)
        while True:
            chunk = list(itertools.islice(keys, batch))
            if not chunk:
                return
            found = self.load_many(chunk, store)
            yield from ((key, found[key]) for key in chunk if key in found)

    # -- logs ------------------------------------------------------------------------------------

    def log(self, name: str, store: str | None = None) -> Log:
        """The append-only log ``name``, in the store its category routes to (see
        :class:`~kvstore.logs.Log`): ``pm.log("transcript:t1").append({...}) -> seq``."""
        return self._core.entry(name, store).store.log(name)

    def logs(self, prefix: str = "", store: str | None = None) -> Iterator[str]:
        """Names of the logs starting with ``prefix``, sorted (category prefixes ask one store)."""
        names = [self._core.named(n) for n in self._core.store_names_for_prefix(prefix, store)]
        return (name for name, _ in itertools.groupby(heapq.merge(
            *[self._call("logs", e, None, lambda e=e: list(e.store.logs(prefix))) for e in names])))

    def clear(self, prefix: str = "", store: str | None = None) -> int:
        """Remove the keys starting with ``prefix`` from the stores that can hold them (see
        :meth:`keys`; ``clear()`` with no prefix empties every store). Returns how many."""
        removed = 0
        for name in self._core.store_names_for_prefix(prefix, store):
            entry = self._core.named(name)
            count = self._call("clear", entry, None, entry.store.clear, prefix)
            self._core.deleted(entry, [], count)
            removed += count
        return removed

    # -- batches (grouped per store: one round trip / one transaction per store) ------------------

    def save_many(self, items: Mapping[str, Any], ttl: TTL = None,
                  store: str | None = None) -> None:
        """Save every item where its key routes, with ``ttl`` or each key's category TTL.

        Every key is checked and every value encoded before anything is written; each store's
        share is written in one round trip / one transaction. Several stores are written one
        after the other: for all-or-nothing across stores, use :meth:`transaction`.
        """
        for entry, seconds, encoded in self._core.plan_save_many(items, ttl, store):
            start = time.perf_counter()
            self._call("save_many", entry, None, entry.store.raw_set_many, encoded, seconds)
            self._core.saved(entry, [k for k, _ in encoded], start)

    def load_many(self, keys: Iterable[str], store: str | None = None) -> dict[str, Any]:
        """``{key: value}`` for the keys found, each store asked once for its keys."""
        found: dict[str, Any] = {}
        wanted = list(dict.fromkeys(keys))
        for entry, group in self._core.group_keys(wanted, store):
            start = time.perf_counter()
            values = self._call("load_many", entry, None, entry.store.load_many, group)
            self._core.loaded(entry, list(values), len(group) - len(values), start)
            found.update(values)
        return {key: found[key] for key in wanted if key in found}

    def delete_many(self, keys: Iterable[str], store: str | None = None) -> int:
        """Delete the keys, each store asked once; returns how many existed."""
        removed = 0
        for entry, group in self._core.group_keys(list(dict.fromkeys(keys)), store):
            count = self._call("delete_many", entry, None, entry.store.delete_many, group)
            self._core.deleted(entry, group, count)
            removed += count
        return removed

    # -- expiry ------------------------------------------------------------------------------------

    def ttl(self, key: str, store: str | None = None) -> float | None:
        """Seconds before ``key`` expires; None when it has no expiry or does not exist."""
        entry = self._core.entry(key, store)
        return self._call("ttl", entry, key, entry.store.ttl, key)

    def touch(self, key: str, ttl: TTL = None, store: str | None = None) -> bool:
        """Give an existing key a new TTL (None: its category's, else its store's default);
        False when the key is missing."""
        entry = self._core.entry(key, store)
        return bool(self._call("touch", entry, key, entry.store.touch, key,
                               self._core.ttl_arg(entry, ttl)))

    # -- atomic operations (see the store methods of the same names) ------------------------------

    def incr(self, key: str, amount: int = 1, store: str | None = None) -> int:
        """Add ``amount`` to the integer at ``key`` atomically; a missing key starts at 0 and
        gets its category's TTL (else the store's default)."""
        entry = self._core.entry(key, store)
        st = entry.store
        st.check_key(key)
        st.check_amount(key, amount)
        value = self._call("incr", entry, key, st.raw_incr, key, amount,
                           self._core.new_key_ttl(entry))
        self._core.saved(entry, [key])
        return value

    def add(self, key: str, value: Any, ttl: TTL = None, store: str | None = None) -> bool:
        """Save ``value`` only if ``key`` is missing; True when it was written."""
        entry = self._core.entry(key, store)
        added = self._call("add", entry, key, entry.store.add, key, value,
                           self._core.ttl_arg(entry, ttl))
        if added:
            self._core.saved(entry, [key])
        return bool(added)

    def update(self, key: str, fn: Callable[[Any], Any], default: Any = None, ttl: TTL = None,
               store: str | None = None) -> Any:
        """Atomically ``new = fn(current or default)``, saved and returned (``fn`` may run more
        than once: keep it pure). ``ttl=None`` keeps the key's TTL; a new key gets its
        category's."""
        entry = self._core.entry(key, store)
        new = self._call("update", entry, key, entry.store._update, key, fn, default, ttl,
                         self._core.new_key_ttl(entry))
        self._core.saved(entry, [key])
        return new

    def append(self, key: str, item: Any, ttl: TTL = None, store: str | None = None) -> int:
        """Atomically append ``item`` to the list at ``key``; returns the new length."""
        entry = self._core.entry(key, store)
        length = self._call("append", entry, key, entry.store._append, key, item, ttl,
                            self._core.new_key_ttl(entry))
        self._core.saved(entry, [key])
        return int(length)

    def get_or_set(self, key: str, factory: Callable[[], T], ttl: TTL = None,
                   store: str | None = None, *, lock_ttl: float | str = 30.0,
                   timeout: float | None = None) -> T:
        """The value at ``key``; when missing, ``factory()`` runs once among concurrent callers
        (threads, processes, machines), its result is saved with ``ttl`` (default: the
        category's) and every caller gets it. See :meth:`PersistenceStore.get_or_set`."""
        entry = self._core.entry(key, store)
        fill = self._core.filler(entry, key, factory)
        value = self._call("get_or_set", entry, key, lambda: entry.store.get_or_set(
            key, fill, self._core.ttl_arg(entry, ttl), lock_ttl=lock_ttl, timeout=timeout))
        fill.count()
        return value

    def lock(self, name: str, ttl: float | str = 30.0, timeout: float | None = None,
             store: str | None = None) -> Lock:
        """A lock shared by every user of the store ``name`` routes to (by its category, like a
        key): ``with pm.lock("jobs:nightly", ttl=60, timeout=5): ...``."""
        return self._core.entry(name, store).store.lock(name, ttl, timeout)

    def cached(self, category: str = "memo", ttl: TTL = None,
               key: Callable[..., str] | None = None) -> Callable[[F], F]:
        """Memoize a function by its arguments, through :meth:`get_or_set` (concurrent first
        calls compute once)::

            @pm.cached(category="memo", ttl="10m")
            def report(day: str) -> dict: ...

        The key is ``<category>:<module>.<function>:<hash of the arguments>`` (``self`` and
        ``cls`` of methods left out), or ``<category>:<module>.<function>:<key(*args,
        **kwargs)>``. Arguments are hashed by value: numbers, strings, lists, dicts, tuples,
        sets, dates...; other objects by ``repr``. ``fn.invalidate(*args, **kwargs)`` forgets
        one result; ``fn.cache_key(*args, **kwargs)`` tells its key.
        """
        key_maker = memo_keys(category, ttl, key)

        def decorate(fn: F) -> F:
            cache_key = key_maker(fn)

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return self.get_or_set(cache_key(*args, **kwargs), lambda: fn(*args, **kwargs),
                                       ttl)

            def invalidate(*args: Any, **kwargs: Any) -> bool:
                return self.delete(cache_key(*args, **kwargs))

            wrapper.cache_key = cache_key  # type: ignore[attr-defined]
            wrapper.invalidate = invalidate  # type: ignore[attr-defined]
            return wrapper  # type: ignore[return-value]

        return decorate

    # -- transactions -------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Stage writes; commit them all on normal exit, none on an exception (re-raised).

        Keys read through ``tx.load``/``tx.exists`` are checked at commit: if another writer
        changed one since, :class:`ConflictError` is raised and nothing is written.
        """
        tx = Transaction(self._core)
        try:
            yield tx
        except BaseException:
            tx.discard()
            raise
        tx.commit()

    def atomic(self, fn: Callable[[Transaction], T], retries: int = 10) -> T:
        """Run ``fn(tx)`` in a transaction and return what it returns; on
        :class:`ConflictError` run it again (up to ``retries`` more times, after a short random
        wait), so a read-modify-write across keys and stores never loses a concurrent write.
        ``fn`` may run more than once: keep side effects out of it."""
        for attempt in attempts(fn, retries):
            try:
                with self.transaction() as tx:
                    result = fn(tx)
                return result
            except ConflictError:
                if attempt == retries:
                    raise
                time.sleep(flows.backoff(attempt))
        raise AssertionError("unreachable")

    # -- events and stats ------------------------------------------------------------------------------

    def on(self, event: str, callback: Callable[[Event], Any]) -> Callable[[Event], Any]:
        """Call ``callback(Event)`` after each ``save``/``load``/``delete``, or on an ``error``.

        A callback that raises does not break the operation. Returns ``callback``.
        """
        return self._core.on(event, callback)

    def off(self, event: str, callback: Callable[[Event], Any]) -> None:
        """Stop calling ``callback`` for ``event``."""
        self._core.off(event, callback)

    def _emit_error(self, op: str, store: str, exc: BaseException, key: str | None = None) -> None:
        self._core.emit_error(op, store, exc, key)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per store: hits, misses, saves, deletes, errors since the manager started."""
        return self._core.stats_report()

    # -- backups ------------------------------------------------------------------------------------

    def backup(self, dest: str | os.PathLike[str] | None = None, *,
               progress: Callable[[int], Any] | None = None,
               skip_unavailable: bool = False) -> Path:
        """Write a new backup of every durable store inside folder ``dest`` and return its path.

        Without ``dest`` the configured ``backup.path`` (default: the user data folder's
        ``backups``) is used, and older backups there beyond ``backup.retention`` are deleted.
        ``progress(keys so far)`` is called as it goes. An unavailable store (Redis down) fails
        the backup, naming it, unless ``skip_unavailable`` leaves it out.
        """
        return self._life.backup(dest, progress, skip_unavailable)

    def restore(self, path: str | os.PathLike[str], *,
                progress: Callable[[int], Any] | None = None) -> dict[str, int]:
        """Replace the durable stores' contents with backup ``path`` (verified first: a damaged
        or partial backup raises ``CorruptDataError`` and nothing changes). Returns keys per store."""
        from .restore import restore_backup

        return restore_backup(self._core, path, progress=progress)

    # -- memory snapshots and closing ---------------------------------------------------------------

    def save_snapshot(self) -> int:
        """Write the memory store's live keys (with remaining TTLs) to ``memory.snapshot``
        atomically. Returns how many keys were written. Done every ``autosave`` and on close."""
        return self._life.save_snapshot()

    def close(self) -> None:
        """Stop background work, save the memory snapshot, close every store. Safe twice."""
        self._life.close()

    def __enter__(self) -> "PersistenceManager":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}={store!r}" for name, store in self.stores.items())
        return mask_secrets(f"PersistenceManager({parts})")
