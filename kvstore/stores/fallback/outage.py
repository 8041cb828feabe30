"""Outage records: the writes a :class:`~kvstore.stores.fallback.FallbackStore` took while its
primary (Redis) was down, and how they are written back.

Each blind write made to the fallback store during an outage is also recorded in the fallback's
lock namespace, one record per key (``outage:<key>``, the newest write wins), holding what was
written: a random token, "set" with the bytes and their expiry (wall-clock, so every process
sharing the fallback reads the same), or "delete". The record, not the fallback's copy, is what
is written back, so a copy changed or dropped meanwhile cannot mislead the write-back.

Writing back one key (:meth:`OutageRecords.settle`) is lock-free and safe against any number of
processes doing it at once, and against writers that wrote the key to the primary after seeing
no record:

1. read what the primary holds (``cur``), *then* the record;
2. compare-and-swap the primary from ``cur`` to the record's value: it fails if anything wrote
   the key after step 1 (then start again at 1);
3. delete the record if it is still the one read (a newer outage write keeps its own record),
   then the fallback's copy.

Because ``cur`` is read before the record, a write to the primary that followed the record's
removal (by another process's write-back) is always seen in step 2 and never overwritten.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Iterable

from ... import flows
from ...errors import CorruptDataError, StoreUnavailableError
from ...store import MISSING, PersistenceStore

__all__ = ["OutageRecords", "PREFIX", "call", "recording", "pending"]

PREFIX = "outage:"
_SET, _DELETE = b"S", b"D"
_ATTEMPTS = 1000  # a key rewritten this often while being written back: give up for now


def _record(blob: Any, ttl: float | None) -> bytes:
    """``token kind expiry blob``: unique per write, so a record is never mistaken for a newer
    one with the same contents."""
    token = os.urandom(8).hex().encode()
    if blob is MISSING:
        return b"%s %s - " % (token, _DELETE)
    if not isinstance(blob, (bytes, bytearray)):
        raise TypeError(f"outage records hold bytes, got {type(blob).__name__}")
    expires = b"-" if ttl is None else repr(time.time() + ttl).encode()
    return b"%s %s %s %s" % (token, _SET, expires, bytes(blob))


def _parse(name: str, record: Any) -> tuple[Any, float | None, bool]:
    """``(blob or MISSING, seconds left or None, expired)`` from a stored record."""
    try:
        _token, kind, expires, blob = bytes(record).split(b" ", 3)
        if kind == _DELETE:
            return MISSING, None, False
        if kind != _SET:
            raise ValueError(kind)
        left = None if expires == b"-" else float(expires) - time.time()
    except (TypeError, ValueError) as exc:
        raise CorruptDataError(f"outage record {name!r} is damaged: {record[:40]!r}") from exc
    return blob, left, left is not None and left <= 0


def call(target: Any, method: str, *args: Any) -> flows.Compute:
    """A flow's request to call ``target.method(*args)`` (a synchronous store or an async face:
    the async driver awaits what it returns)."""
    return flows.Compute(functools.partial(getattr(target, method), *args))


def recording(records: Any, writes: Iterable[tuple[str, Any, float | None]]) -> flows.Flow:
    """Record ``(key, blob or MISSING, ttl)`` writes just made to the fallback store in
    ``records`` (its lock namespace), after them: a write-back that runs in between then sees
    the older record, or none."""
    found = [(PREFIX + key, _record(blob, ttl)) for key, blob, ttl in writes]
    if len(found) == 1:
        yield call(records, "raw_set", found[0][0], found[0][1], None)
    elif found:
        yield call(records, "raw_set_many", found, None)


def pending(records: Any, keys: list[str]) -> flows.Flow:
    """Those of ``keys`` (at least one) that have an outage write not yet written back (in
    ``records``); StoreUnavailableError, saying nothing was written, if it cannot be read."""
    try:
        if len(keys) == 1:
            found = yield call(records, "raw_get", PREFIX + keys[0])
            return keys if found is not MISSING else []
        found = yield call(records, "raw_get_many", [PREFIX + key for key in keys])
    except StoreUnavailableError as exc:
        raise StoreUnavailableError(
            f"key {keys[0]!r}: the fallback store's outage records ({records!r}) cannot be read "
            f"to check for outage writes not yet written back to the primary; nothing was "
            f"written: {exc}") from exc
    return [key for key in keys if PREFIX + key in found]


class OutageRecords:
    """The outage records kept in ``registry`` (the fallback store's lock namespace)."""

    def __init__(self, registry: PersistenceStore) -> None:
        self.registry = registry

    def keys(self, prefix: str = "") -> list[str]:
        """Every key (starting with ``prefix``) with an outage write not yet written back."""
        return [name[len(PREFIX):] for name in self.registry.raw_keys(PREFIX + prefix)]

    def settle(self, key: str, primary: PersistenceStore, fallback: PersistenceStore) -> None:
        """Write ``key``'s outage write back to ``primary`` and drop it from ``fallback`` (see
        the module docstring); nothing to do when it has no record."""
        name = PREFIX + key
        for _ in range(_ATTEMPTS):
            current = primary.raw_get(key)         # first: see the module docstring
            record = self.registry.raw_get(name)
            if record is MISSING:
                return
            blob, left, expired = _parse(name, record)
            if blob is MISSING or expired:     # deleted, or expired, during the outage
                written = current is MISSING or primary.raw_cas(key, current, MISSING, None)
            elif current is MISSING:
                written = primary.raw_add(key, blob, left)
            else:
                written = primary.raw_cas(key, current, blob, left)
            if not written:
                continue  # the primary changed since it was read: read it again
            if self.registry.raw_cas(name, record, MISSING, None):
                fallback.raw_delete(key)  # the copy served during the outage: nothing stays behind
                return
            # A newer outage write replaced the record meanwhile: write that one back too.
        raise StoreUnavailableError(f"outage write of key {key!r} could not be written back: "
                                    f"the key changed {_ATTEMPTS} times while it was tried")

    def settle_all(self, primary: PersistenceStore, fallback: PersistenceStore,
                   prefix: str = "") -> int:
        """Write back every recorded key (starting with ``prefix``); how many there were."""
        keys = self.keys(prefix)
        for key in keys:
            self.settle(key, primary, fallback)
        return len(keys)
