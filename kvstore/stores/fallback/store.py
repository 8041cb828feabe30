"""FallbackStore: serve a tier from a second store while its server (Redis) is unavailable.

One rule decides what works during an outage: **an operation that does not depend on the value
Redis holds keeps working on the fallback store; one that does raises StoreUnavailableError**.

- Reads (``load``, ``exists``, ``ttl``, ``keys``, ``load_many``) are served by the fallback, which
  holds only what was written during the outage: a key written before it reads as missing.
- Blind writes (``save``, ``delete``, ``save_many``, ``delete_many``, a transaction that read
  nothing of this tier and writes only this tier) go to the fallback, and each is recorded with
  its bytes (:mod:`kvstore.stores.fallback.outage`). ``delete`` then says whether the *fallback* held
  the key.
- Everything else raises, as it would without a fallback: ``incr``, ``add``, ``update``,
  ``append``, ``touch``, ``get_or_set`` of a key not written during the outage, locks, a
  transaction that read a key of this tier or also writes another store (its undo needs the
  values Redis holds), ``clear``, logs, backups. Their answer would be computed from "missing"
  instead of from what Redis holds, and written back over it: a count or a list that is wrong.

Write-back: every call that writes to Redis (including ``incr``, ``add``, the compare-and-swap
steps of ``update``, a transaction's commit, a snapshot for backups or undo) first writes back
the outage writes still recorded for the keys it touches, so no write made directly to Redis is
ever overwritten by an older outage write; besides, each process writes back every record at
its first call after the outage and then at most every ``retry_after`` seconds, so reads from
Redis see outage writes within that time. An outage write is written back with a
compare-and-swap against what Redis held just before, so concurrent write-backs (several
processes) and writers never interleave wrongly (see :mod:`kvstore.stores.fallback.outage`).
"""

from __future__ import annotations

import functools
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, NamedTuple

from ... import flows, observe, registry
from ..._commit import Before
from ...errors import StoreUnavailableError
from ...store import MISSING, Check, Op, PersistenceStore
from .outage import OutageRecords, call, pending, recording

__all__ = ["FallbackStore", "Targets"]


class Targets(NamedTuple):
    """What a FallbackStore's routing flows run their requests on: the synchronous stores, or
    their async faces (kvstore.stores.fallback.aio)."""

    primary: Any
    fallback: Any
    #: The fallback's lock namespace, where the outage records are (None: no write-back).
    records: Any
    #: ``blocking(fn, *args)`` runs ``fn`` of the synchronous stores: at once, or in a thread.
    blocking: Callable[..., Any]


def _now(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


#: The writes, each ``method: args -> (the keys it writes, what it writes when it is a blind
#: write the fallback may take during an outage, else None)``; every other method reads.
_WRITES: dict[str, Callable[..., tuple[list[str], list[Op] | None]]] = {
    "raw_set": lambda key, blob, ttl: ([key], [(key, blob, ttl)]),
    "raw_delete": lambda key: ([key], [(key, MISSING, None)]),
    "raw_set_many": lambda items, ttl: ([k for k, _ in items], [(k, b, ttl) for k, b in items]),
    "raw_delete_many": lambda keys: (keys, [(k, MISSING, None) for k in keys]),
    "raw_incr": lambda key, amount, ttl: ([key], None),
    "raw_add": lambda key, blob, ttl: ([key], None),
    "raw_cas": lambda key, expected, new, ttl: ([key], None),
    "raw_touch": lambda key, ttl: ([key], None),
    "raw_snapshot": lambda keys: (keys, None),
}


class _Outage:
    """When the primary may be tried again, shared by a FallbackStore and its lock namespace."""

    def __init__(self) -> None:
        self.down_until = 0.0   # monotonic; the primary failed, serve the fallback until then
        self.next_check = 0.0   # monotonic; when to write back every outage record again
        self.engaged = False    # an outage was logged and no call has reached the primary since
        self.lock = threading.Lock()


class FallbackStore(PersistenceStore):
    """Calls go to ``primary``; when it raises :class:`StoreUnavailableError`, the call and every
    call for the next ``retry_after`` seconds go to ``fallback`` (as the module docstring says:
    reads and blind writes are served, the rest raises), then ``primary`` is tried again.

    Blobs are self-describing, so values written by the primary's serializer read back from the
    fallback store. ``on_error(exc)`` is told each time the primary fails. With ``write_back``
    (the default) the writes made to the fallback are written back to the primary once it is
    reachable again, never over a newer write.
    """

    def __init__(self, primary: PersistenceStore, fallback: PersistenceStore, *,
                 retry_after: float = 5.0,
                 on_error: Callable[[BaseException], None] | None = None,
                 write_back: bool = True, _outage: _Outage | None = None) -> None:
        super().__init__(ttl_default=primary.ttl_default, serializer=None)
        self.serializer = primary.serializer
        self.primary = primary
        self.fallback = fallback
        self.retry_after = retry_after
        self.on_error = on_error
        self.durable = primary.durable
        self.optimistic = primary.optimistic
        self.crash_atomic = primary.crash_atomic and fallback.crash_atomic
        # A lock namespace (given its parent's outage) serves nothing from the fallback: a lock
        # taken in Redis before the outage cannot be seen there.
        self._strict = _outage is not None
        self._outage = _outage or _Outage()
        self._records = OutageRecords(fallback.meta) if write_back and not self._strict else None
        if not self._strict:  # opened now: _open_meta runs under the lock that opening takes
            self._spaces = (primary.meta, fallback.meta)
        records = self._records.registry if self._records is not None else None
        self._to = Targets(primary, fallback, records, _now)

    @property
    def writes_back(self) -> bool:
        """Whether outage writes are recorded, to be written back (not in the lock namespace)."""
        return self._records is not None

    @property
    def using_fallback(self) -> bool:
        return time.monotonic() < self._outage.down_until

    # -- routing ---------------------------------------------------------------------------------

    def _down(self, exc: StoreUnavailableError) -> None:
        outage = self._outage
        with outage.lock:
            outage.down_until = time.monotonic() + self.retry_after
            outage.next_check = 0.0  # write everything back at the first call that succeeds
            started, outage.engaged = not outage.engaged, True
        if started:
            backend = registry.for_store(self.primary)
            observe.signal("fallback", store=repr(self.primary), error=exc,
                           kind=backend.name if backend else type(self.primary).__name__)
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:
                pass

    def _reached(self) -> None:
        """A call reached the primary: the end of an outage, if one was logged."""
        outage = self._outage
        with outage.lock:
            ended, outage.engaged = outage.engaged, False
        if ended:
            observe.signal("recovered", store=repr(self.primary))

    def _refused(self, key: str) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"key {key!r}: the primary store is unavailable ({self.primary!r}); this "
            "operation depends on the value it holds (incr, add, update, append, touch, "
            "get_or_set, locks, transactions that read or also write another store), which the "
            "fallback store cannot know, so nothing was written. save and delete keep working "
            "on the fallback store during the outage.")

    # -- the routing, once for both fronts --------------------------------------------------
    # Each byte-level call is a flow (kvstore.flows) over `to`, the stores it runs on: the
    # synchronous ones here (flows.run), their async faces in kvstore.stores.fallback.aio (arun), so a
    # wrapped Redis keeps its asyncio client. The write-back itself runs on the synchronous
    # stores (`to.blocking`: in a worker thread on the async front); it runs after an outage.

    def route(self, to: Targets, method: str, args: tuple[Any, ...]) -> flows.Flow:
        """The flow of byte-level call ``method(*args)`` (a read, or a write of _WRITES)."""
        plan = _WRITES.get(method)
        if plan is None:
            return self._reading(to, method, args)
        keys, writes = plan(*args)
        return self._writing(to, method, keys, writes, args)

    def _route(self, method: str, *args: Any) -> Any:
        return flows.run(self, self.route(self._to, method, args))

    def _write_back_due(self) -> bool:
        """Every ``retry_after`` seconds (and at once after an outage): time to write back every
        outage record (:meth:`_write_back_all`), so reads from the primary see them."""
        outage = self._outage
        if self._records is None or time.monotonic() < outage.next_check:
            return False
        outage.next_check = time.monotonic() + self.retry_after
        return True

    def _write_back_all(self) -> None:
        """Best effort: a failure is seen by the call (and the next call tries again)."""
        assert self._records is not None
        try:
            count = self._records.settle_all(self.primary, self.fallback)
        except StoreUnavailableError:
            self._outage.next_check = 0.0
            return
        if count:
            observe.signal("written_back", store=repr(self.primary), count=count)

    def _settle(self, keys: list[str]) -> None:
        """Write back the outage writes of ``keys`` (from _pending) before the primary writes
        them."""
        assert self._records is not None
        for key in keys:
            self._records.settle(key, self.primary, self.fallback)

    def _reading(self, to: Targets, method: str, args: tuple[Any, ...]) -> flows.Flow:
        if not self.using_fallback:
            if self._write_back_due():
                yield flows.Compute(functools.partial(to.blocking, self._write_back_all))
            try:
                result = yield call(to.primary, method, *args)
                if method == "raw_keys":
                    result = list(result)  # errors surface here, not halfway through iteration
                if self._outage.engaged:
                    self._reached()
                return result
            except StoreUnavailableError as exc:
                self._down(exc)
                if self._strict:
                    raise
        elif self._strict:
            raise self._refused(str(args[0]))
        return (yield call(to.fallback, method, *args))

    def _writing(self, to: Targets, method: str, keys: list[str], writes: list[Op] | None,
                 args: tuple[Any, ...]) -> flows.Flow:
        """A write: to the primary after settling ``keys``. During an outage a blind write
        (``writes``: what it writes) goes to the fallback and is recorded; any other raises."""
        if not self.using_fallback:
            if self._write_back_due():
                yield flows.Compute(functools.partial(to.blocking, self._write_back_all))
            pending_keys = (yield from pending(to.records, keys)) if keys and self._records else []
            try:
                if pending_keys:
                    yield flows.Compute(functools.partial(to.blocking, self._settle, pending_keys))
                result = yield call(to.primary, method, *args)
                if self._outage.engaged:
                    self._reached()
                return result
            except StoreUnavailableError as exc:
                self._down(exc)
                if writes is None or self._strict:
                    raise
        elif writes is None or self._strict:
            raise self._refused(keys[0] if keys else "*")
        result = yield call(to.fallback, method, *args)
        if self._records is not None:
            yield from recording(to.records, writes)
        return result

    # -- the byte-level interface ---------------------------------------------------------------

    def check_key(self, key: Any) -> None:
        self.primary.check_key(key)

    def decode(self, key: str, blob: Any) -> Any:
        # Bytes are the primary's encoding (also as copied to the fallback); anything else is
        # the fallback's own form of a value it served (the file store's decoded JSON).
        if isinstance(blob, (bytes, bytearray)):
            return self.primary.decode(key, blob)
        return self.fallback.decode(key, blob)

    def decode_many(self, found: Any) -> dict[str, Any]:
        if all(isinstance(blob, (bytes, bytearray)) for blob in found.values()):
            return self.primary.decode_many(found)  # its batch decoder
        return {key: self.decode(key, blob) for key, blob in found.items()}

    def ping(self) -> None:
        """A round trip to the primary itself (the fallback serving reads is no answer from it)."""
        self.primary.ping()

    def raw_get(self, key: str) -> Any:
        return self._route("raw_get", key)

    def raw_exists(self, key: str) -> bool:
        return bool(self._route("raw_exists", key))

    def raw_keys(self, prefix: str) -> Iterator[str]:
        return iter(self._route("raw_keys", prefix))

    def raw_ttl(self, key: str) -> float | None:
        return self._route("raw_ttl", key)

    def raw_get_many(self, keys: list[str]) -> dict[str, Any]:
        return self._route("raw_get_many", keys)

    def raw_set(self, key: str, blob: Any, ttl: float | None) -> None:
        self._route("raw_set", key, blob, ttl)

    def raw_delete(self, key: str) -> bool:
        return bool(self._route("raw_delete", key))

    def raw_set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        self._route("raw_set_many", items, ttl)

    def raw_delete_many(self, keys: list[str]) -> int:
        return int(self._route("raw_delete_many", keys))

    def raw_incr(self, key: str, amount: int, ttl: float | None) -> int:
        return int(self._route("raw_incr", key, amount, ttl))

    def raw_add(self, key: str, blob: Any, ttl: float | None) -> bool:
        return bool(self._route("raw_add", key, blob, ttl))

    def raw_cas(self, key: str, expected: Any, new: Any, ttl: Any) -> bool:
        return bool(self._route("raw_cas", key, expected, new, ttl))

    def raw_touch(self, key: str, ttl: float | None) -> bool:
        return bool(self._route("raw_touch", key, ttl))

    def raw_snapshot(self, keys: list[str]) -> list[tuple[str, Any, float | None]]:
        # Before-images for an undo, and backups: what Redis holds, so not served by the fallback.
        return self._route("raw_snapshot", keys)

    def clearing(self, to: Targets, prefix: str) -> flows.Flow:
        """The flow of ``raw_clear(prefix)``: the primary's, after writing back its prefix."""
        if self.using_fallback:
            raise StoreUnavailableError(
                f"clear() needs the primary store, which is unavailable ({self.primary!r}): the "
                "keys it holds cannot be seen from the fallback")
        try:
            if self._records is not None:
                yield flows.Compute(functools.partial(to.blocking, self._records.settle_all,
                                                      self.primary, self.fallback, prefix))
        except StoreUnavailableError as exc:
            self._down(exc)
            raise
        return (yield from self._writing(to, "raw_clear", [], None, (prefix,)))

    def raw_clear(self, prefix: str) -> int:
        return int(flows.run(self, self.clearing(self._to, prefix)))

    @contextmanager
    def raw_commit(self, ops: list[Op], checks: list[Check],
                    before: Before | None = None) -> Iterator[None]:
        # The store is chosen once, at the start; an outage during the commit fails it (and
        # sends the next one to the fallback).
        if self.using_fallback:
            if checks or self._strict:
                raise self._refused((checks or ops)[0][0])
            with self.fallback.raw_commit(ops, [], before):
                yield
            if self._records is not None:
                flows.run(self, recording(self._to.records, ops))
            return
        touched = dict.fromkeys([k for k, _, _ in ops] + [k for k, _ in checks])
        pending_keys = (flows.run(self, pending(self._to.records, list(touched)))
                        if touched and self._records else [])
        inner = False  # an error from the block (another store's part) is not the primary's
        try:
            if pending_keys:
                self._settle(pending_keys)
            with self.primary.raw_commit(ops, checks, before):
                try:
                    yield
                except BaseException:
                    inner = True
                    raise
        except StoreUnavailableError as exc:
            if not inner:
                self._down(exc)
            raise

    # Logs stay on the primary (a log's numbering cannot be split between two stores): while
    # it is down they raise StoreUnavailableError.

    def encode_record(self, name: str, record: Any) -> Any:
        return self.primary.encode_record(name, record)

    def decode_record(self, name: str, blob: Any) -> Any:
        return self.primary.decode_record(name, blob)

    def raw_log_append(self, name: str, blob: Any) -> int:
        return self.primary.raw_log_append(name, blob)

    def raw_log_read(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        return self.primary.raw_log_read(name, after, limit)

    def raw_log_read_desc(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        return self.primary.raw_log_read_desc(name, after, limit)

    def raw_log_len(self, name: str) -> int:
        return self.primary.raw_log_len(name)

    def raw_log_delete(self, name: str) -> bool:
        return self.primary.raw_log_delete(name)

    def raw_log_names(self, prefix: str) -> list[str]:
        return self.primary.raw_log_names(prefix)

    def open_meta(self) -> "FallbackStore":
        primary, fallback = self._spaces
        return FallbackStore(primary, fallback, retry_after=self.retry_after, write_back=False,
                             _outage=self._outage)

    def lock_id(self) -> str:
        return self.primary.lock_id()

    # Restores and log transfer need the primary: a restore into the fallback would be lost.
    def raw_replace_all(self, rows: Any, logs: Any) -> None:
        self.primary.raw_replace_all(rows, logs)

    def raw_log_blobs(self, name: str, after: int = 0, limit: int | None = None) -> list[tuple[int, Any]]:
        return self.primary.raw_log_blobs(name, after, limit)

    def raw_log_blob_in(self, name: str, blob: Any) -> Any:
        return self.primary.raw_log_blob_in(name, blob)

    def raw_outcome(self, token: str, keys: list[str]) -> Any:
        # A marked commit only ever ran on the primary (the fallback holds locks instead).
        return self.primary.raw_outcome(token, keys)

    def raw_forget(self, token: str) -> None:
        self.primary.raw_forget(token)

    def close(self) -> None:
        self.primary.close()

    def describe(self) -> str:
        return f"primary={self.primary!r}, fallback={type(self.fallback).__name__}"
