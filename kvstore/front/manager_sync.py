# Generated from kvstore/front/manager_async.py by tools/async_to_sync.py: do not edit, edit that file.
"""The manager's operations, written once.

The asyncio class is the source; the synchronous class is generated from it by
``tools/async_to_sync.py`` (never edit the generated file). :class:`~kvstore.PersistenceManager`
is the synchronous class plus what only that front has (its ``stores`` property, opening the
stores); :class:`~kvstore.aio.AsyncPersistenceManager` is the asyncio class plus what only
asyncio has (its thread pool, the stores' async faces).

A front calls ``_start(core)``: each :class:`~kvstore.core.Core` entry's ``front`` is the store
to call (the store itself, or its async face); asyncio also sets ``_executor`` and ``stores``.
"""

from __future__ import annotations

import functools
import os
import time
from contextlib import contextmanager
from typing import (TYPE_CHECKING, Any, Iterator, Callable, Iterable, Mapping, TypeVar,
                    overload)
import heapq
import itertools

from .. import flows
from .._marks import MISSING
from ..astype import from_dict
from ..config import Config, load_config, mask_secrets, parse_config
from ..core import Core, Entry, Event, Route, memo_keys
from ..errors import ConflictError, KVStoreError, LockTimeout
from ..lifecycle import Lifecycle
from ..store import TTL, check_paging
from ..transaction import attempts
from .operate_sync import OperateOps
from .transaction_sync import Transaction

if TYPE_CHECKING:
    from ..locking import Lock
    from ..logs import Log

__all__ = ["ManagerOps"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound="ManagerOps")

#: Errors that say something about the caller's situation, not about a store's health: not
#: counted in ``stats()["errors"]`` nor sent to ``error`` listeners.
_NOT_STORE_ERRORS = (ConflictError, LockTimeout)


class ManagerOps(OperateOps):
    """The operations of the manager (see :class:`~kvstore.PersistenceManager` for each one's
    semantics: the same on both fronts, on the same data)."""

    _core: Core
    _life: Lifecycle

    def _start(self, core: Core) -> None:
        """Take ``core`` and start the background work (the front's constructor calls this)."""
        self._core = core
        self._key_routes = core.key_routes
        self._on_save = core.listeners["save"]  # the same lists, without a dict lookup per call
        self._on_load = core.listeners["load"]
        self._life = Lifecycle(core)
        self._life.start()

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls: type[M], path: str | os.PathLike[str], **options: Any) -> M:
        """Read, check and apply a YAML file (see ``config.example.yaml``); ``options`` go to
        the constructor."""
        return cls(load_config(path), **options)  # type: ignore[call-arg]

    @classmethod
    def from_config(cls: type[M], data: Mapping[str, Any] | Config, **options: Any) -> M:
        """The same structure as the YAML, as a dict (with or without ``persistence:``)."""
        return cls(data if isinstance(data, Config) else parse_config(data),  # type: ignore[call-arg]
                   **options)

    # -- plumbing ------------------------------------------------------------------------------------

    def _fail(self, op: str, entry: Entry, exc: KVStoreError, key: str | None = None) -> None:
        if not isinstance(exc, _NOT_STORE_ERRORS):
            self._core.failed(op, entry, exc, key)

    def _call(self, op: str, entry: Entry, key: str | None, fn: Callable[..., Any],
              *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` (awaited on asyncio), counting and reporting a store error."""
        try:
            return fn(*args, **kwargs)
        except KVStoreError as exc:
            self._fail(op, entry, exc, key)
            raise

    # -- the key-value interface --------------------------------------------------------------------

    def route(self, key: str) -> Route:
        """Which store and TTL ``key`` goes to, and why."""
        return self._core.route(key)

    def save(self, key: str, value: Any, ttl: TTL = None, store: str | None = None) -> bool:
        """Store ``value`` where ``key`` routes (or in ``store``), with ``ttl`` or the category's."""
        # The per-key route cache is looked up inline here and in load(), the hot paths.
        if store is None and type(key) is str:
            entry = self._key_routes.get(key) or self._core.entry(key)
        else:
            entry = self._core.entry(key, store)
        st = entry.front
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
            value = entry.front.load(key, MISSING)
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
        existed = self._call("delete", entry, key, entry.front.delete, key)
        self._core.deleted(entry, [key])
        return bool(existed)

    def exists(self, key: str, store: str | None = None) -> bool:
        """True when ``key`` holds a live value."""
        entry = self._core.entry(key, store)
        return bool(self._call("exists", entry, key, entry.front.exists, key))

    def keys(self, prefix: str = "", store: str | None = None, start_after: str | None = None,
             limit: int | None = None, reverse: bool = False) -> Iterator[str]:
        """Live keys starting with ``prefix``, each once, sorted (``reverse``: descending): in
        ``store``; in the category's store when ``prefix`` contains ``:`` (``"session:"``);
        else in every store (their pages merged in that order). Pages: ``start_after`` and
        ``limit``. The arguments are checked by the call; the stores read as keys are iterated."""
        names = self._core.store_names_for_prefix(prefix, store)
        check_paging(start_after, limit, reverse)
        sources = [self._store_keys(name, prefix, start_after, limit, reverse) for name in names]
        merged = (key for key, _ in itertools.groupby(heapq.merge(*sources, reverse=reverse)))
        return merged if limit is None else itertools.islice(merged, limit)

    def _store_keys(self, name: str, prefix: str, start_after: str | None,
                    limit: int | None, reverse: bool) -> Iterator[str]:
        entry = self._core.named(name)  # the merge's first ``limit`` are in each's first ``limit``
        try:
            for key in entry.front.keys(prefix, start_after, limit, reverse):
                yield key
        except KVStoreError as exc:  # from the store, as the keys are read
            self._fail("keys", entry, exc)
            raise

    def items(self, prefix: str = "", store: str | None = None,
              start_after: str | None = None, limit: int | None = None,
              batch: int = 500, reverse: bool = False) -> Iterator[tuple[str, Any]]:
        """``(key, value)`` for :meth:`keys`, in its order, loaded ``batch`` keys at a time."""
        keys = self.keys(prefix, store, start_after, limit, reverse)
        chunks = iter(lambda: list(itertools.islice(keys, batch)), [])
        for chunk in chunks:
            found = self.load_many(chunk, store)
            for key in chunk:
                if key in found:
                    yield key, found[key]

    # -- logs ------------------------------------------------------------------------------------

    def log(self, name: str, store: str | None = None) -> Log:
        """The append-only log ``name``, in the store its category routes to (see
        :class:`~kvstore.logs.Log`): ``pm.log("transcript:t1").append({...}) -> seq``."""
        return self._core.counted_log(self._core.entry(name, store), name)

    def logs(self, prefix: str = "", store: str | None = None) -> Iterator[str]:
        """Names of the logs starting with ``prefix``, sorted (category prefixes ask one store).
        The arguments are checked by the call, the stores asked as the names are read."""
        entries = [self._core.named(n) for n in self._core.store_names_for_prefix(prefix, store)]
        for entry in entries:
            entry.store.check_prefix(prefix)
        return self._log_names(prefix, entries)

    def _log_names(self, prefix: str, entries: list[Entry]) -> Iterator[str]:
        found: set[str] = set()
        for entry in entries:
            found.update(self._call("logs", entry, None, entry.front.raw_log_names, prefix))
        for name in sorted(found):
            yield name

    def clear(self, prefix: str = "", store: str | None = None) -> int:
        """Remove the keys starting with ``prefix`` from the stores that can hold them (see
        :meth:`keys`; ``clear()`` with no prefix empties every store). Returns how many."""
        removed = 0
        for name in self._core.store_names_for_prefix(prefix, store):
            entry = self._core.named(name)
            count = self._call("clear", entry, None, entry.front.clear, prefix)
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
            self._call("save_many", entry, None, entry.front.raw_set_many, encoded, seconds)
            self._core.saved(entry, [k for k, _ in encoded], start)

    def load_many(self, keys: Iterable[str], store: str | None = None) -> dict[str, Any]:
        """``{key: value}`` for the keys found, each store asked once for its keys."""
        found: dict[str, Any] = {}
        wanted = list(dict.fromkeys(keys))
        for entry, group in self._core.group_keys(wanted, store):
            start = time.perf_counter()
            values = self._call("load_many", entry, None, entry.front.load_many, group)
            self._core.loaded(entry, list(values), len(group) - len(values), start)
            found.update(values)
        return {key: found[key] for key in wanted if key in found}

    def delete_many(self, keys: Iterable[str], store: str | None = None) -> int:
        """Delete the keys, each store asked once; returns how many existed."""
        removed = 0
        for entry, group in self._core.group_keys(list(dict.fromkeys(keys)), store):
            count = self._call("delete_many", entry, None, entry.front.delete_many, group)
            self._core.deleted(entry, group, count)
            removed += count
        return removed

    # -- expiry ------------------------------------------------------------------------------------

    def ttl(self, key: str, store: str | None = None) -> float | None:
        """Seconds before ``key`` expires; None when it has no expiry or does not exist."""
        entry = self._core.entry(key, store)
        return self._call("ttl", entry, key, entry.front.ttl, key)

    def touch(self, key: str, ttl: TTL = None, store: str | None = None) -> bool:
        """Give an existing key a new TTL (None: its category's, else its store's default);
        False when the key is missing."""
        entry = self._core.entry(key, store)
        return bool(self._call("touch", entry, key, entry.front.touch, key,
                                     self._core.ttl_arg(entry, ttl)))

    # -- atomic operations (see the store methods of the same names) ------------------------------

    def incr(self, key: str, amount: int = 1, store: str | None = None) -> int:
        """Add ``amount`` to the integer at ``key`` atomically; a missing key starts at 0 and
        gets its category's TTL (else the store's default)."""
        entry = self._core.entry(key, store)
        entry.store.check_key(key)
        entry.store.check_amount(key, amount)
        value = self._call("incr", entry, key, entry.front.raw_incr, key, amount,
                                 self._core.new_key_ttl(entry))
        self._core.saved(entry, [key])
        return int(value)

    def add(self, key: str, value: Any, ttl: TTL = None, store: str | None = None) -> bool:
        """Save ``value`` only if ``key`` is missing; True when it was written."""
        entry = self._core.entry(key, store)
        added = self._call("add", entry, key, entry.front.add, key, value,
                                 self._core.ttl_arg(entry, ttl))
        if added:
            self._core.saved(entry, [key])
        return bool(added)

    def update(self, key: str, fn: Callable[[Any], Any], default: Any = None,
               ttl: TTL = None, store: str | None = None) -> Any:
        """Atomically ``new = fn(current or default)``, saved and returned (``fn`` may run more
        than once: keep it pure). ``ttl=None`` keeps the key's TTL; a new key gets its
        category's."""
        entry = self._core.entry(key, store)
        new = self._call("update", entry, key, entry.front.update_with, key, fn, default, ttl,
                               self._core.new_key_ttl(entry))
        self._core.saved(entry, [key])
        return new

    def append(self, key: str, item: Any, ttl: TTL = None, store: str | None = None) -> int:
        """Atomically append ``item`` to the list at ``key``; returns the new length."""
        entry = self._core.entry(key, store)
        length = self._call("append", entry, key, entry.front.append_with, key, item, ttl,
                                  self._core.new_key_ttl(entry))
        self._core.saved(entry, [key])
        return int(length)

    def get_or_set(self, key: str, factory: Callable[[], Any], ttl: TTL = None,
                   store: str | None = None, *, lock_ttl: float | str = 30.0,
                   timeout: float | None = None) -> Any:
        """The value at ``key``; when missing, ``factory()`` runs once among concurrent callers
        (threads, processes, machines), its result is saved with ``ttl`` (default: the
        category's) and every caller gets it. See :meth:`PersistenceStore.get_or_set`. On
        asyncio ``factory`` may be a coroutine function."""
        entry = self._core.entry(key, store)
        fill = self._core.filler(entry, key, factory)
        value = self._call("get_or_set", entry, key, entry.front.get_or_set, key, fill,
                                 self._core.ttl_arg(entry, ttl), lock_ttl=lock_ttl,
                                 timeout=timeout)
        fill.count()
        return value

    def lock(self, name: str, ttl: float | str = 30.0, timeout: float | None = None,
             store: str | None = None) -> Lock:
        """A lock shared by every user of the store ``name`` routes to (by its category, like a
        key): ``with pm.lock("jobs:nightly", ttl=60, timeout=5): ...``."""
        return self._core.entry(name, store).front.lock(name, ttl, timeout)

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
                return self.get_or_set(cache_key(*args, **kwargs),
                                             lambda: fn(*args, **kwargs), ttl)

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
        tx = Transaction(self._core, self._blocking)
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
        ``fn`` may run more than once: keep side effects out of it. On asyncio ``fn`` may be a
        coroutine function."""
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

    # -- closing ---------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop background work, save the memory snapshot, close every store. Safe twice."""
        if self._life.closed:
            return
        self._blocking(self._life.close)

    def __enter__(self: M) -> M:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}={store!r}" for name, store in self._core.stores.items())
        return mask_secrets(f"{type(self).__name__}({parts})")
