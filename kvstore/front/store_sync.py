# Generated from kvstore/front/store_async.py by tools/async_to_sync.py: do not edit, edit that file.
"""The store's public operations, written once (the asyncio source of ``store_sync.py``).

Each operation checks its arguments, applies the rules (key check, TTL, encoding: the store's
own methods, bound from the synchronous twin on the async front) and calls the backend
contract's byte-level methods (``raw_get``, ``raw_set``, ``raw_add``, ``raw_cas``...; see
:mod:`kvstore.backend`), awaited here and called directly in the generated synchronous twin.
``load`` and ``save`` are written as the direct code they were on the synchronous store: the
generated ``StoreOps.load`` is that same code, with no call added on the hot path.
"""

from __future__ import annotations

import inspect
import itertools
import time
from typing import Any, Iterator, Callable, Iterable, Mapping

from .._marks import KEEP, MISSING
from ..errors import InvalidArgumentError, LockTimeout, NotAListError
from ..rules import (TTL, backoff, blob_size, check_batch, check_paging, check_timeout,
                     new_token, parse_ttl, poll)
from ..locking import Lock
from ..logs import Log

__all__ = ["StoreOps", "PING_KEY"]

#: The key :meth:`StoreOps.ping` reads (read only: never written by kvstore).
PING_KEY = "kvstore-health-ping"


class StoreOps:
    """The public interface of a store over the backend contract. See
    :class:`~kvstore.PersistenceStore` for the semantics: they are the same on both fronts."""

    # What the operations use, given by the class this is mixed into: the rules
    # (check_key, encode, decode, resolve_ttl, check_prefix, check_amount, checked_keys,
    # encoded_items, decode_many, encode_record, decode_record), ttl_default, serializer, meta,
    # and the byte-level raw_* methods.
    ttl_default: float | None
    serializer: Any
    meta: Any
    check_key: Any
    resolve_ttl: Any
    encode: Any
    decode: Any
    check_prefix: Any
    check_amount: Any
    checked_keys: Any
    encoded_items: Any
    decode_many: Any
    raw_get: Any
    raw_set: Any
    raw_delete: Any
    raw_exists: Any
    raw_keys: Any
    raw_keys_after: Any  # the synchronous front's
    raw_keys_desc: Any  # the synchronous front's
    _key_pages: Any  # the async front's (kvstore.aio.store.AsyncStore)
    raw_ttl: Any
    raw_incr: Any
    raw_clear: Any
    raw_add: Any
    raw_cas: Any
    raw_touch: Any
    raw_get_many: Any
    raw_set_many: Any
    raw_delete_many: Any
    raw_log_names: Any

    #: A store's own, faster ``save`` that only checks, encodes and writes as the one below does
    #: (the memory store's): ``save_sized`` then writes and measures the blob itself.
    plain_save: Any = None

    def ping(self) -> None:
        """One round trip to where the data lives (a read of a key nobody writes); raises
        :class:`~kvstore.StoreUnavailableError` when the store cannot be reached. What
        ``pm.health()`` times."""
        self.raw_get(PING_KEY)

    def save(self, key: str, value: Any, ttl: TTL = None) -> bool:
        """Store ``value`` under ``key`` (replacing any value) for ``ttl``. Returns True.

        Raises:
            InvalidKeyError / InvalidTTLError (both ``ValueError``), SerializationError (nothing
            is written), StoreUnavailableError.
        """
        self.check_key(key)
        seconds = self.resolve_ttl(ttl)
        self.raw_set(key, self.encode(key, value), seconds)
        return True

    def save_sized(self, key: str, value: Any, ttl: TTL = None) -> int | None:
        """:meth:`save`, returning the bytes written (None: the store keeps objects as they are),
        for a ``save`` event's ``size``: the value is encoded once, and what is measured is
        exactly what was written."""
        # A subclass's own save (not a faster plain one, see plain_save, nor one wrapped by
        # instrumentation, kvstore.contrib.otel): run it as is.
        own = inspect.unwrap(type(self).save)
        if own is not StoreOps.save and own is not type(self).plain_save:
            self.save(key, value, ttl)
            return None
        self.check_key(key)
        seconds = self.resolve_ttl(ttl)
        blob = self.encode(key, value)
        self.raw_set(key, blob, seconds)
        return blob_size(self, blob)

    def load(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default`` when it is missing or expired."""
        self.check_key(key)
        blob = self.raw_get(key)
        if blob is MISSING:
            return default
        return self.decode(key, blob)

    def delete(self, key: str) -> bool:
        """Remove ``key``; True when a live key existed."""
        self.check_key(key)
        return self.raw_delete(key)

    def exists(self, key: str) -> bool:
        """True when ``key`` holds a live (unexpired) value."""
        self.check_key(key)
        return self.raw_exists(key)

    def keys(self, prefix: str = "", start_after: str | None = None,
             limit: int | None = None, reverse: bool = False) -> Iterator[str]:
        """Live keys starting with ``prefix`` (matched literally: ``%``, ``*``... are plain),
        sorted (``reverse=True``: descending). Pages: ``start_after`` (the last key of the
        previous page, in that order) and ``limit``. Fetched a page at a time: stopping early
        does not list the rest."""
        self.check_prefix(prefix)
        check_paging(start_after, limit, reverse)
        # The fronts' listings differ: an iterator over the store's cursor, async pages.
        found = self.raw_keys_desc(prefix, start_after, limit) if reverse else (
            self.raw_keys(prefix) if start_after is None
            else self.raw_keys_after(prefix, start_after))
        return found if limit is None else itertools.islice(found, limit)

    def items(self, prefix: str = "", start_after: str | None = None,
              limit: int | None = None, batch: int = 500, reverse: bool = False
              ) -> Iterator[tuple[str, Any]]:
        """``(key, value)`` for the live keys starting with ``prefix``, sorted by key, loaded
        ``batch`` at a time (one round trip each); paged like :meth:`keys`."""
        check_batch(batch)
        keys = self.keys(prefix, start_after, limit, reverse)
        while chunk := list(itertools.islice(keys, batch)):
            found = self.decode_many(self.raw_get_many(chunk))
            for key in chunk:
                if key in found:  # deleted or expired meanwhile: left out
                    yield key, found[key]

    def save_many(self, items: Mapping[str, Any], ttl: TTL = None) -> None:
        """Store every item in one round trip / one transaction, all with the same ``ttl``.

        Every key is checked and every value encoded before anything is written.
        """
        encoded, seconds = self.encoded_items(items, ttl)
        if encoded:
            self.raw_set_many(encoded, seconds)

    def load_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """``{key: value}`` for the keys found (missing and expired keys are left out)."""
        wanted = self.checked_keys(keys)
        return self.decode_many(self.raw_get_many(wanted)) if wanted else {}

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete the keys; returns how many live keys existed."""
        wanted = self.checked_keys(keys)
        return self.raw_delete_many(wanted) if wanted else 0

    def ttl(self, key: str) -> float | None:
        """Seconds left before ``key`` expires; None when it has no expiry or does not exist."""
        self.check_key(key)
        return self.raw_ttl(key)

    def incr(self, key: str, amount: int = 1) -> int:
        """Add ``amount`` to the integer at ``key`` atomically (also across processes).

        A missing key starts at 0 and gets the store's ``ttl_default``; an existing key keeps its
        TTL. Raises :class:`NotAnIntegerError` when the stored value is not an integer.
        """
        self.check_key(key)  # _increment's body, inline: incr is a hot path
        self.check_amount(key, amount)
        return self.raw_incr(key, amount, self.ttl_default)

    def _increment(self, key: str, amount: int, new_ttl: float | None) -> int:
        """:meth:`incr`, a new key expiring ``new_ttl`` seconds from now (the manager's TTL)."""
        self.check_key(key)
        self.check_amount(key, amount)
        return self.raw_incr(key, amount, new_ttl)

    def clear(self, prefix: str = "") -> int:
        """Remove every key starting with ``prefix``; returns how many live keys were removed."""
        self.check_prefix(prefix)
        return self.raw_clear(prefix)

    # -- atomic operations (safe across threads, processes and, on servers, machines) -----------

    def add(self, key: str, value: Any, ttl: TTL = None) -> bool:
        """Store ``value`` only if ``key`` is missing (an expired key is missing).

        Returns True when it was written, False when the key already held a value.
        """
        self.check_key(key)
        seconds = self.resolve_ttl(ttl)
        return bool(self.raw_add(key, self.encode(key, value), seconds))

    def update(self, key: str, fn: Callable[[Any], Any], default: Any = None,
               ttl: TTL = None) -> Any:
        """Atomically replace the value with ``fn(current)`` (``fn(default)`` when missing) and
        return the new value. No concurrent write is ever lost.

        ``fn`` may run more than once (another writer got there first: it is called again with
        the newer value), so keep it pure and do not modify its argument in place. ``fn``
        raising writes nothing and propagates. ``ttl=None`` keeps the key's remaining TTL (a new
        key gets ``ttl_default``).

        >>> store.update("visits:ann", lambda v: v + 1, default=0)     # doctest: +SKIP
        """
        return self.update_with(key, fn, default, ttl, self.ttl_default)

    def update_with(self, key: str, fn: Callable[[Any], Any], default: Any, ttl: TTL,
                new_ttl: float | None) -> Any:
        """:meth:`update`, a new key expiring ``new_ttl`` seconds from now (``None``: never)
        rather than after ``ttl_default`` (the manager passes the category's TTL).

        Optimistic: read, compute, then write only if the key still holds what was read
        (set-if-absent for a missing key, compare-and-swap otherwise); a lost race retries
        after a short random backoff.
        """
        self.check_key(key)
        if not callable(fn):
            raise InvalidArgumentError(f"update {key!r}: fn must be callable, got {fn!r}")
        seconds = KEEP if ttl is None else parse_ttl(ttl)
        for attempt in itertools.count():
            blob = self.raw_get(key)
            new = fn(default if blob is MISSING else self.decode(key, blob))
            new_blob = self.encode(key, new)
            if blob is MISSING:
                done = self.raw_add(key, new_blob, new_ttl if seconds is KEEP else seconds)
            else:
                done = self.raw_cas(key, blob, new_blob, seconds)
            if done:
                return new
            time.sleep(backoff(attempt))

    def append(self, key: str, item: Any, ttl: TTL = None) -> int:
        """Atomically append ``item`` to the list at ``key`` (missing: ``[]``); returns the new
        length. A value that is not a list raises :class:`NotAListError` and is left unchanged.
        ``ttl=None`` keeps the key's remaining TTL (a new key gets ``ttl_default``).

        The whole list is rewritten each time; for long append-only records use a log.
        """
        return self.append_with(key, item, ttl, self.ttl_default)

    def append_with(self, key: str, item: Any, ttl: TTL, new_ttl: float | None) -> int:
        """:meth:`append`, a new key expiring ``new_ttl`` seconds from now (``None``: never)."""
        def add_item(current: Any) -> list[Any]:
            if current is MISSING:
                return [item]
            if not isinstance(current, list):
                raise NotAListError(f"append {key!r}: stored value is a "
                                    f"{type(current).__name__}, not a list; it was left unchanged")
            return [*current, item]

        return len(self.update_with(key, add_item, MISSING, ttl, new_ttl))

    def touch(self, key: str, ttl: TTL = None) -> bool:
        """Give an existing key a new TTL (``None``: the store's ``ttl_default``, which may be
        "no expiry"); False when the key is missing."""
        self.check_key(key)
        return bool(self.raw_touch(key, self.resolve_ttl(ttl)))

    def get_or_set(self, key: str, factory: Callable[[], Any], ttl: TTL = None, *,
                   lock_ttl: float | str = 30.0, timeout: float | None = None) -> Any:
        """The value at ``key``; when missing, ``factory()`` computes it, it is saved with
        ``ttl``, and returned. Among concurrent callers of one key (threads, processes,
        machines) the factory runs once: the others wait and read its result (no stampede).

        Args:
            lock_ttl: the computing caller holds a lock this long at most; if it dies, a waiter
                computes instead once it expires.
            timeout: how long a waiter waits for the value (default: ``lock_ttl``), then
                :class:`LockTimeout`.

        A factory that raises saves nothing and propagates; a waiter then computes in turn.
        On the async front ``factory`` may be a coroutine function.
        """
        self.check_key(key)
        if not callable(factory):
            raise InvalidArgumentError(f"get_or_set {key!r}: factory must be callable")
        hold = parse_ttl(lock_ttl, "lock_ttl")
        wait = check_timeout(timeout)
        wait = hold if wait is None else wait
        seconds = self.resolve_ttl(ttl)
        blob = self.raw_get(key)
        if blob is not MISSING:
            return self.decode(key, blob)
        # The computing caller holds fill:<key> in the lock namespace for at most lock_ttl.
        meta, name, token = self.meta, "fill:" + key, new_token()
        deadline = time.monotonic() + wait
        for attempt in itertools.count():
            if meta.raw_add(name, token, hold):
                try:
                    blob = self.raw_get(key)  # filled while we took the lock?
                    if blob is not MISSING:
                        return self.decode(key, blob)
                    value = factory()
                    self.raw_set(key, self.encode(key, value), seconds)
                    return value
                finally:
                    meta.raw_cas(name, token, MISSING, None)
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockTimeout(f"get_or_set {key!r}: another caller has been computing the "
                                  f"value for more than {wait:g}s")
            time.sleep(min(poll(attempt), left))
            blob = self.raw_get(key)
            if blob is not MISSING:
                return self.decode(key, blob)

    def lock(self, name: str, ttl: float | str = 30.0, timeout: float | None = None
             ) -> Lock:
        """A lock named ``name``, shared by everyone using this store::

            with store.lock("nightly-report", ttl=60, timeout=5):
                ...

        ``ttl``: it expires by itself after this long (a crashed holder blocks no one for
        longer). ``timeout``: ``with`` waits this long, then raises :class:`LockTimeout`
        (None: as long as it takes). Locks live apart from the keys: ``keys()`` and ``clear()``
        never see them, and a lock may share its name with a key.
        """
        self.check_key(name)
        return Lock(self, name, parse_ttl(ttl, "lock ttl"), check_timeout(timeout))

    # -- logs (append-only records; see kvstore.logs) ----------------------------------------------

    def log(self, name: str) -> Log:
        """The append-only log ``name``: ``log.append(record) -> seq``, ``log.read(after,
        limit)``, its length, ``log.delete()``. Logs live apart from the keys."""
        return Log(self, name)

    def logs(self, prefix: str = "") -> Iterator[str]:
        """Names of the logs starting with ``prefix``, sorted."""
        self.check_prefix(prefix)
        return _listed(self.raw_log_names, prefix)

    def _log_names_checked(self, prefix: str) -> list[str]:
        self.check_prefix(prefix)
        return self.raw_log_names(prefix)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release connections and files. Safe to call twice."""


def _listed(fn: Callable[..., Any], *args: Any) -> Iterator[Any]:
    """What ``fn(*args)`` lists, one by one (called on the first step)."""
    for item in fn(*args):
        yield item
