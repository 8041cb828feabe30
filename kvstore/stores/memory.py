"""MemoryStore: a thread-safe dict with TTLs and optional least-recently-used eviction."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from ..keyrules import SHORT_KEY
from .._commit import Before
from ..rules import parse_ttl
from ..serializers import SerializerSpec
from ..store import (KEEP, MISSING, TTL, Check, Op, PersistenceStore, check_max_entries, conflict,
                     same_blob)

__all__ = ["MemoryStore"]


class MemoryStore(PersistenceStore):
    """Keys in this process's memory, lost when it exits (see the manager's ``snapshot``).

    Args:
        max_entries: evict the least recently used key past this many (None: no limit). The only
            store that ever drops data it was not told to drop.
        ttl_default: TTL for ``save`` without one (None: permanent).
        serializer: None (default) keeps the objects themselves, like a dict: fastest, and a
            stored object mutated by the caller changes what is stored. A format name or
            :class:`~kvstore.Serializer` stores encoded copies instead, exactly like the durable
            stores.
        clock: the time source for expiry (seconds, monotonic); inject one in tests.

    >>> store = MemoryStore(max_entries=2)
    >>> store.save("a", 1); store.save("b", 2); store.save("c", 3)
    True
    True
    True
    >>> sorted(store.keys())
    ['b', 'c']
    """

    durable = False

    def __init__(self, max_entries: int | None = None, ttl_default: TTL = None,
                 serializer: SerializerSpec | None = None, *, secret: bytes | str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(ttl_default=ttl_default, serializer=serializer, secret=secret)
        self.max_entries = check_max_entries(max_entries)
        self._clock = clock
        # key -> (value, expires_at or None). OrderedDict keeps recency for LRU eviction.
        self._data: OrderedDict[str, tuple[Any, float | None]] = OrderedDict()
        self._lock = threading.RLock()
        # Odd while a write of several keys (a commit, save_many, clear...) is under way; see load.
        self._seq = 0
        self._logs: dict[str, list[Any]] = {}

    def describe(self) -> str:
        return f"max_entries={self.max_entries!r}, entries={len(self._data)}"

    # Fast paths: the memory store is the hot tier, so `load` and `save` avoid the generic
    # indirections (the same rules, inline).
    def load(self, key: str, default: Any = None) -> Any:
        # The key rule (kvstore.keyrules) inline for the common short ASCII key; the rest calls it.
        if (type(key) is not str or not key.isascii() or "\x00" in key
                or not 0 < len(key) <= SHORT_KEY):
            self.check_key(key)
        # Without the lock when no LRU order is kept: an entry is a tuple that writers replace
        # whole, and one dict lookup is atomic, so a single-key write is seen entirely or not at
        # all. A write of several keys bumps _seq around its changes (odd while it runs), so a
        # read that overlaps one takes the lock and sees all of it or none of it, as before.
        seq = self._seq
        entry = self._data.get(key)
        if not seq & 1 and seq == self._seq and self.max_entries is None:
            if entry is None:
                return default
            value, expires = entry
            if expires is None or expires > self._clock():
                return value if self.serializer is None else self.decode(key, value)
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return default
            value, expires = entry
            if expires is not None and expires <= self._clock():
                del self._data[key]
                return default
            if self.max_entries is not None:
                self._data.move_to_end(key)
        if self.serializer is None:
            return value
        return self.decode(key, value)

    def save(self, key: str, value: Any, ttl: TTL = None) -> bool:
        """See :meth:`~kvstore.PersistenceStore.save`."""
        if (type(key) is not str or not key.isascii() or "\x00" in key
                or not 0 < len(key) <= SHORT_KEY):
            self.check_key(key)
        seconds = self.ttl_default if ttl is None else parse_ttl(ttl)
        blob = value if self.serializer is None else self.encode(key, value)
        with self._lock:
            if self.max_entries is None:
                self._data[key] = (blob, None if seconds is None else self._clock() + seconds)
            else:
                self._put(key, blob, None if seconds is None else self._clock() + seconds)
        return True

    plain_save = save  # it only encodes and writes: save_sized may measure the blob itself

    def _live(self, key: str, now: float) -> tuple[Any, float | None] | None:
        """The entry for key if live; drops it when expired. Caller holds the lock."""
        entry = self._data.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= now:
            del self._data[key]
            return None
        return entry

    def raw_get(self, key: str) -> Any:
        with self._lock:
            entry = self._live(key, self._clock())
            if entry is None:
                return MISSING
            if self.max_entries is not None:
                self._data.move_to_end(key)
            return entry[0]

    def raw_get_many(self, keys: list[str]) -> dict[str, Any]:
        with self._lock:  # one lock for the batch, not one per key
            now = self._clock()
            found = {}
            for key in keys:
                entry = self._live(key, now)
                if entry is not None:
                    found[key] = entry[0]
                    if self.max_entries is not None:
                        self._data.move_to_end(key)
            return found

    def _put(self, key: str, blob: Any, expires: float | None) -> None:
        # Caller holds the lock.
        data = self._data
        data[key] = (blob, expires)
        if self.max_entries is not None:
            data.move_to_end(key)
            while len(data) > self.max_entries:
                data.popitem(last=False)

    def raw_set(self, key: str, blob: Any, ttl: float | None) -> None:
        with self._lock:
            self._put(key, blob, None if ttl is None else self._clock() + ttl)

    def raw_set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        with self._lock:
            expires = None if ttl is None else self._clock() + ttl
            self._seq += 1  # several keys: see load
            try:
                for key, blob in items:
                    self._put(key, blob, expires)
            finally:
                self._seq += 1

    def raw_delete(self, key: str) -> bool:
        with self._lock:
            entry = self._live(key, self._clock())
            if entry is None:
                return False
            del self._data[key]
            return True

    def raw_delete_many(self, keys: list[str]) -> int:
        with self._lock:
            self._seq += 1  # several keys: see load
            try:
                return sum(1 for key in keys if self.raw_delete(key))
            finally:
                self._seq += 1

    def raw_exists(self, key: str) -> bool:
        with self._lock:
            return self._live(key, self._clock()) is not None

    def raw_keys(self, prefix: str) -> Iterator[str]:
        # A snapshot, so callers may modify the store while iterating.
        with self._lock:
            now = self._clock()
            found = [k for k, (_, exp) in self._data.items()
                     if k.startswith(prefix) and (exp is None or exp > now)]
        return iter(sorted(found))  # sorted, like every other store

    # -- logs: a list per name ------------------------------------------------------------------

    def raw_log_append(self, name: str, blob: Any) -> int:
        with self._lock:
            records = self._logs.setdefault(name, [])
            records.append(blob)
            return len(records)

    def raw_log_read(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        with self._lock:
            records = self._logs.get(name, [])
            end = len(records) if limit is None else after + limit
            return [(after + 1 + i, blob) for i, blob in enumerate(records[after:end])]

    def raw_log_read_desc(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        with self._lock:  # a slice from the end of the list
            records = self._logs.get(name, [])
            start = after if limit is None else max(after, len(records) - limit)
            return [(i + 1, records[i]) for i in range(len(records) - 1, start - 1, -1)]

    def raw_log_len(self, name: str) -> int:
        with self._lock:
            return len(self._logs.get(name, ()))

    def raw_log_delete(self, name: str) -> bool:
        with self._lock:
            return self._logs.pop(name, None) is not None

    def raw_log_names(self, prefix: str) -> list[str]:
        with self._lock:
            return sorted(n for n in self._logs if n.startswith(prefix))

    def raw_ttl(self, key: str) -> float | None:
        with self._lock:
            now = self._clock()
            entry = self._live(key, now)
            if entry is None or entry[1] is None:
                return None
            return max(entry[1] - now, 0.0)

    def raw_incr(self, key: str, amount: int, ttl: float | None) -> int:
        with self._lock:
            now = self._clock()
            entry = self._live(key, now)
            blob, expires = (MISSING, None) if entry is None else entry
            new, blob, expires = self._next_count(key, blob, expires, now, amount, ttl)
            self._put(key, blob, expires)
            return new

    def raw_add(self, key: str, blob: Any, ttl: float | None) -> bool:
        with self._lock:
            now = self._clock()
            if self._live(key, now) is not None:
                return False
            self._put(key, blob, None if ttl is None else now + ttl)
            return True

    def raw_cas(self, key: str, expected: Any, new: Any, ttl: Any) -> bool:
        with self._lock:
            now = self._clock()
            entry = self._live(key, now)
            if entry is None or not same_blob(entry[0], expected):
                return False
            self._write(key, new, ttl, entry, now)
            return True

    def _write(self, key: str, blob: Any, ttl: Any, entry: tuple[Any, float | None] | None,
               now: float) -> None:
        # Caller holds the lock; ``entry`` is the key's live entry (for KEEP).
        if blob is MISSING:
            self._data.pop(key, None)
        elif ttl is KEEP:
            self._put(key, blob, None if entry is None else entry[1])
        else:
            self._put(key, blob, None if ttl is None else now + ttl)

    def raw_touch(self, key: str, ttl: float | None) -> bool:
        with self._lock:
            now = self._clock()
            entry = self._live(key, now)
            if entry is None:
                return False
            self._data[key] = (entry[0], None if ttl is None else now + ttl)
            return True

    def raw_clear(self, prefix: str) -> int:
        with self._lock:
            now = self._clock()
            doomed = [k for k in self._data if k.startswith(prefix)]
            removed = 0
            self._seq += 1  # several keys: see load
            try:
                for k in doomed:
                    exp = self._data.pop(k)[1]
                    removed += exp is None or exp > now
            finally:
                self._seq += 1
            return removed

    @contextmanager
    def raw_commit(self, ops: list[Op], checks: list[Check],
                    before: Before | None = None) -> Iterator[None]:
        # Everything under the store's lock; nothing can fail once the checks pass, so the
        # writes are made after the block (the other stores of a transaction) succeeded.
        with self._lock:
            now = self._clock()
            for key, expected in checks:
                entry = self._live(key, now)
                if not same_blob(MISSING if entry is None else entry[0], expected):
                    raise conflict(key)
            if before is not None:  # the lock is held until the writes are made
                before.images = self.raw_snapshot(list(dict.fromkeys(k for k, _, _ in ops)))
            yield
            now = self._clock()
            self._seq += 1  # several keys: see load
            try:
                for key, blob, ttl in ops:
                    self._write(key, blob, ttl, self._live(key, now), now)
            finally:
                self._seq += 1

    def open_meta(self) -> "MemoryStore":
        return MemoryStore(clock=self._clock)

    def raw_snapshot(self, keys: list[str]) -> list[tuple[str, Any, float | None]]:
        with self._lock:
            now = self._clock()
            out: list[tuple[str, Any, float | None]] = []
            for key in keys:
                entry = self._live(key, now)
                if entry is None:
                    out.append((key, MISSING, None))
                else:
                    out.append((key, entry[0], None if entry[1] is None else entry[1] - now))
            return out

    def items_with_ttl(self) -> list[tuple[str, Any, float | None]]:
        """Every live ``(key, stored value, seconds left)``; used by the manager's snapshots."""
        with self._lock:
            now = self._clock()
            return [(k, v, None if e is None else e - now)
                    for k, (v, e) in self._data.items() if e is None or e > now]

    def close(self) -> None:
        """Nothing to release; the data stays usable (a memory store has no connection)."""
