"""The per-process copies of a near cache and the rules that keep them coherent (no I/O).

:class:`NearCache` holds, per rule (a category's ``near:`` settings, or the store's), a bounded
LRU of ``key -> (blob, expires)``; a blob may be ``MISSING`` (the key was read as absent: a
miss is kept too). Every copy is filled from a read reply only through a **token** taken before
the read was sent (:meth:`NearCache.token`): the fill is dropped when, since then, an
invalidation for that key arrived (the key's read generation moved), the cache was flushed or
tracking went down or came back (the epoch moved). So a reply that raced an invalidation on
the other connection is never kept (cashews' "stale for good" burst bug), and nothing is kept
while tracking is down.

Generations are kept only for keys with a read in flight (``_reads``: key -> [readers,
generation]), so memory stays bounded by the number of concurrent reads, not by the number of
keys written on the server.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable

__all__ = ["NearSettings", "NearCache", "NOVALUE", "Token"]

#: ``NearCache.get``: no local copy (a miss, an expired copy, a key no rule covers).
NOVALUE: Any = object()

#: Seconds of local hits between two hand-overs of the GIL (see NearCache.entry).
YIELD_EVERY = 0.001

#: ``(epoch, generation)`` of a read, taken before it is sent.
Token = tuple[int, int]


@dataclass(frozen=True)
class NearSettings:
    """One near-cache rule (``near: {max_entries: 10000, ttl: 1m}``)."""

    #: Copies kept at most (least recently used dropped first).
    max_entries: int = 10000
    #: Seconds a copy is kept at most (also never past the key's own TTL on the server).
    ttl: float = 60.0
    #: True: ``load`` hands every reader of this process the same decoded object (fastest;
    #: treat it as read-only, as with ``functools.lru_cache``: a change to it would be seen by
    #: the next reads here, not by Redis). False: each reader of a list, dict or set gets
    #: its own copy (immutable values are shared either way).
    shared: bool = False


class _Part:
    """The LRU of one rule."""

    __slots__ = ("settings", "data")

    def __init__(self, settings: NearSettings) -> None:
        self.settings = settings
        self.data: OrderedDict[str, list[Any]] = OrderedDict()


class NearCache:
    """Local copies for keys of ``categories`` (``{category: settings}``; the part of the key
    before its first ``:``) and, with ``default``, for every other key. ``clock`` is monotonic
    seconds (injectable for tests)."""

    def __init__(self, default: NearSettings | None = None,
                 categories: dict[str, NearSettings] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lock = threading.Lock()
        self.clock = clock
        self._default = _Part(default) if default is not None else None
        self._categories = {name: _Part(s) for name, s in (categories or {}).items()}
        self._parts = list(self._categories.values()) + (
            [self._default] if self._default is not None else [])
        #: Whether invalidations are being received: copies are kept only while True.
        self.up = False
        self.epoch = 0
        self._reads: dict[str, list[int]] = {}
        self.hits = 0
        self.misses = 0
        self.flushes = 0
        self._yield_at = 0.0

    def _part(self, key: str) -> _Part | None:
        i = key.find(":")
        if i > 0 and self._categories:
            part = self._categories.get(key[:i])
            if part is not None:
                return part
        return self._default

    def covers(self, key: str) -> bool:
        """Whether ``key`` is near-cached (a rule covers it)."""
        return self._part(key) is not None

    # -- reads --------------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        """The local blob of ``key`` (``MISSING``: known absent), or :data:`NOVALUE`."""
        entry = self.entry(key)
        return NOVALUE if entry is None else entry[0]

    def entry(self, key: str) -> list[Any] | None:
        """The live local entry of ``key``: ``[blob, expires, value, shared]``, where ``value``
        is :data:`NOVALUE` or the decoded value a reader put there (immutable, or ``shared``
        by the rule's settings; an entry is replaced, never changed otherwise); None when there
        is none."""
        part = self._part(key) if self._categories else self._default
        if part is None:
            return None
        now = self.clock()
        if now >= self._yield_at:
            self._let_the_listener_in(now)
        # No lock: each OrderedDict call is atomic under the GIL, and a copy dropped by an
        # invalidation between two of them was live when this read began.
        data = part.data
        entry = data.get(key)
        if entry is not None:
            if entry[1] > now:
                try:
                    data.move_to_end(key)
                except KeyError:
                    pass
                self.hits += 1  # a statistic: a lost increment between threads is tolerated
                return entry
            with self.lock:
                if data.get(key) is entry:
                    del data[key]
        self.misses += 1
        return None

    def _let_the_listener_in(self, now: float) -> None:
        # A thread looping on local hits never blocks, so the listener thread, woken by an
        # invalidation, would wait for the GIL until the interpreter's switch interval (5 ms)
        # forces a switch. A short sleep now and then hands it over at once: it bounds that
        # wait by YIELD_EVERY, for a few percent of the hits' time.
        self._yield_at = now + YIELD_EVERY
        time.sleep(0.00001)

    def token(self, key: str) -> Token | None:
        """Taken before a read of ``key`` is sent; None when nothing may be filled (tracking
        down, or no rule covers the key). Every token is given back by :meth:`fill` or
        :meth:`release`."""
        if self._part(key) is None:
            return None
        with self.lock:
            if not self.up:
                return None
            read = self._reads.get(key)
            if read is None:
                read = self._reads[key] = [0, 0]
            read[0] += 1
            return (self.epoch, read[1])

    def _give_back(self, key: str) -> int:
        read = self._reads[key]
        read[0] -= 1
        if read[0] == 0:
            del self._reads[key]
        return read[1]

    def release(self, key: str, token: Token | None) -> None:
        """The read failed: give ``token`` back without filling."""
        if token is not None:
            with self.lock:
                self._give_back(key)

    def fill(self, key: str, token: Token | None, blob: Any, server_ttl: float | None,
             sent_at: float) -> None:
        """Keep ``blob`` (MISSING: absent) as read by a request sent at ``sent_at`` (clock
        seconds) with ``token``, the key's TTL on the server then ``server_ttl`` seconds (None:
        none): kept until ``sent_at`` plus the rule's ttl, never past the server's expiry;
        dropped if an invalidation or a flush came since the token was taken."""
        if token is None:
            return
        part = self._part(key)
        assert part is not None  # a token is only given for a covered key
        settings = part.settings
        expires = sent_at + settings.ttl
        if server_ttl is not None:
            expires = min(expires, sent_at + server_ttl)
        with self.lock:
            generation = self._give_back(key)
            if not self.up or token != (self.epoch, generation):
                return
            data = part.data
            data[key] = [blob, expires, NOVALUE, settings.shared]
            data.move_to_end(key)
            while len(data) > settings.max_entries:
                data.popitem(last=False)

    # -- invalidations --------------------------------------------------------------------------

    def invalidate(self, keys: Iterable[str]) -> None:
        """Drop the copies of ``keys`` and make every read of them in flight unfillable (an
        invalidation from the server, or a write through this process)."""
        with self.lock:
            reads, parts = self._reads, self._parts
            for key in keys:
                read = reads.get(key)
                if read is not None:
                    read[1] += 1
                for part in parts:
                    part.data.pop(key, None)

    def invalidate_prefix(self, prefix: str) -> None:
        """Drop every copy of a key starting with ``prefix``; no read in flight may fill."""
        with self.lock:
            self.epoch += 1
            for part in self._parts:
                # list() copies in one C call: readers move keys without the lock (see entry)
                for key in list(part.data):
                    if key.startswith(prefix):
                        part.data.pop(key, None)

    def flush(self, up: bool) -> None:
        """Drop every copy and make every read in flight unfillable; ``up``: whether copies
        may be kept from now on (tracking is established)."""
        with self.lock:
            self.epoch += 1
            self.flushes += 1
            self.up = up
            for part in self._parts:
                part.data.clear()

    def __len__(self) -> int:
        return sum(len(part.data) for part in self._parts)

    def stats(self) -> dict[str, int]:
        return {"near_hits": self.hits, "near_misses": self.misses}
