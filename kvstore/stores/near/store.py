"""NearStore: a per-process near cache in front of a RedisStore, kept coherent by Redis.

Reads of covered keys are served from :class:`~.local.NearCache` when it holds a live copy;
otherwise the value and its TTL are read in one round trip (``GET`` + ``PTTL``, the wrapped
store's ``raw_snapshot``) and kept, under the token rule of :mod:`.local`. Every write through
this store (``save``, ``delete``, ``incr``, ``add``, ``update``'s compare-and-swap, ``touch``,
``clear``, a transaction's commit, bulk writes, restores) drops the local copies of the keys it
writes **before it is sent and again after its reply** (also when it fails): a read of this
process in flight across the write can then never keep the value from before it, and a read
after the write goes to Redis. Writes by other processes arrive as invalidations
(:mod:`.tracking`).

Each byte-level call is a flow (:mod:`kvstore.flows`) over the wrapped store, driven here on
the synchronous RedisStore and by :class:`~.aio.AsyncNearStore` on its asyncio driver: one
definition for both fronts, as the Redis fallback does.
"""

from __future__ import annotations

import functools
import marshal
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from ... import flows
from ..._commit import Before
from ...store import MISSING, Check, Op, PersistenceStore
from .local import NOVALUE, NearCache, NearSettings
from .tracking import Tracker

__all__ = ["NearStore"]


def call(target: Any, method: str, *args: Any) -> flows.Compute:
    """A flow's request to call ``target.method(*args)`` (awaited on the async front)."""
    return flows.Compute(functools.partial(getattr(target, method), *args))


#: Values a local copy may hand out as they are, decoded once.
_IMMUTABLE = frozenset({int, str, float, bool, bytes, type(None)})
#: A local entry's value slot: decode the blob on every hit (not marshal-able: datetimes...).
_DECODE: Any = object()


class _Fresh:
    """A decoded value of built-in types only, as ``marshal`` bytes: ``marshal.loads`` makes
    each reader its own copy (equal, same types) faster than decoding the blob again."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _kept(value: Any, shared: bool) -> Any:
    """What a local entry keeps of its decoded ``value`` for the next hits."""
    if shared or type(value) in _IMMUTABLE:
        return value  # handed out as it is
    try:
        return _Fresh(marshal.dumps(value))
    except ValueError:  # a type marshal does not know (datetime, UUID, a dataclass's dict...)
        return _DECODE

#: The writes: ``method: args -> the keys it writes``.
_WRITES: dict[str, Callable[..., list[str]]] = {
    "raw_set": lambda key, blob, ttl: [key],
    "raw_delete": lambda key: [key],
    "raw_set_many": lambda items, ttl: [k for k, _ in items],
    "raw_delete_many": lambda keys: list(keys),
    "raw_incr": lambda key, amount, ttl: [key],
    "raw_add": lambda key, blob, ttl: [key],
    "raw_cas": lambda key, expected, new, ttl: [key],
    "raw_touch": lambda key, ttl: [key],
    "raw_put_rows": lambda rows: [k for k, _, _ in rows],
    "raw_apply": lambda ops: [k for k, _, _ in ops],
}


class NearStore(PersistenceStore):
    """A near cache over ``inner`` (a :class:`~kvstore.RedisStore`): keys of ``categories``
    (``{category: NearSettings}``) and, with ``default``, every key, are kept in this process
    while Redis's client tracking says they are unchanged.

    ``heartbeat``: seconds without an answer from the invalidation channel before it counts as
    down (copies flushed, reads go to Redis). ``wait``: seconds the constructor waits for the
    channel to come up (reads go to Redis until it does).
    """

    def __init__(self, inner: PersistenceStore, default: NearSettings | None = None,
                 categories: dict[str, NearSettings] | None = None, *,
                 heartbeat: float = 1.0, wait: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(ttl_default=inner.ttl_default, serializer=None)
        self.serializer = inner.serializer
        self.inner = inner
        self.durable = inner.durable
        self.optimistic = inner.optimistic
        self.crash_atomic = inner.crash_atomic
        self.shares_data = inner.shares_data
        self.check_key = inner.check_key
        self._inner_meta = inner.meta  # now: open_meta runs under the lock that opening takes
        self.clock = clock
        # The serializer's shortcut for its own plain blobs (see PersistenceStore.decode_many).
        self._body = None if inner.serializer is None else inner.serializer.body_decoder()
        self.near = NearCache(default, categories, clock)
        self.tracker = Tracker(self.near, inner, heartbeat).start(wait)

    @property
    def tracking(self) -> bool:
        """Whether invalidations arrive (local copies are kept and served only then)."""
        return self.near.up

    def wait_tracking(self, timeout: float) -> bool:
        """Whether tracking is up, waiting up to ``timeout`` seconds for it."""
        return self.tracker.wait_up(timeout)

    def near_stats(self) -> dict[str, int]:
        """``near_hits`` / ``near_misses``: reads of covered keys served locally or not."""
        return self.near.stats()

    # -- the flows, once for both fronts -----------------------------------------------------------

    def route(self, inner: Any, method: str, args: tuple[Any, ...]) -> flows.Flow:
        """The flow of byte-level call ``method(*args)`` on ``inner`` (a write of _WRITES:
        local copies dropped around it; anything else goes through)."""
        plan = _WRITES.get(method)
        if plan is None:
            return (yield call(inner, method, *args))
        keys = plan(*args)
        near = self.near
        near.invalidate(keys)
        try:
            return (yield call(inner, method, *args))
        finally:
            near.invalidate(keys)

    def filling(self, inner: Any, key: str) -> flows.Flow:
        """The flow of a read of ``key`` with no local copy: from Redis with its TTL, kept
        when the token still holds."""
        near = self.near
        token = near.token(key)
        if token is None:
            return (yield call(inner, "raw_get", key))
        sent_at = self.clock()
        try:
            rows = yield call(inner, "raw_snapshot", [key])
        except BaseException:
            near.release(key, token)
            raise
        _, blob, ttl = rows[0]
        near.fill(key, token, blob, ttl, sent_at)
        return blob

    def filling_many(self, inner: Any, keys: list[str]) -> flows.Flow:
        """``raw_get_many``: local copies, the rest read with their TTLs in one round trip."""
        near = self.near
        found: dict[str, Any] = {}
        wanted = []
        for key in keys:
            blob = near.get(key)
            if blob is NOVALUE:
                wanted.append(key)
            elif blob is not MISSING:
                found[key] = blob
        if not wanted:
            return found
        tokens = {key: near.token(key) for key in wanted}
        if all(token is None for token in tokens.values()):
            found.update((yield call(inner, "raw_get_many", wanted)))
            return found
        sent_at = self.clock()
        try:
            rows = yield call(inner, "raw_snapshot", wanted)
        except BaseException:
            for key, token in tokens.items():
                near.release(key, token)
            raise
        for key, blob, ttl in rows:
            near.fill(key, tokens[key], blob, ttl, sent_at)
            if blob is not MISSING:
                found[key] = blob
        return found

    def clearing(self, inner: Any, prefix: str) -> flows.Flow:
        near = self.near
        near.invalidate_prefix(prefix)
        try:
            return (yield call(inner, "raw_clear", prefix))
        finally:
            near.invalidate_prefix(prefix)

    def _route(self, method: str, *args: Any) -> Any:
        return flows.run(self, self.route(self.inner, method, args))

    # -- reads -------------------------------------------------------------------------------------

    def local_value(self, key: Any, default: Any) -> Any:
        """``load``'s answer from the local copy (``default`` for a key known absent), or
        :data:`NOVALUE` when there is none (both fronts). A hit skips the key check: only
        checked keys were ever filled."""
        entry = self.near.entry(key) if type(key) is str else None
        if entry is None:
            return NOVALUE
        value = entry[2]
        if value is not NOVALUE:
            if type(value) is _Fresh:  # a new copy for each reader, faster than decoding
                return marshal.loads(value.data)
            if value is not _DECODE:
                return value
        blob = entry[0]
        if blob is MISSING:
            return default
        value = self._decode(key, blob)
        if entry[2] is NOVALUE:
            entry[2] = _kept(value, entry[3])
        return value

    def load(self, key: str, default: Any = None) -> Any:
        value = self.local_value(key, default)
        if value is not NOVALUE:
            return value
        self.check_key(key)
        blob = flows.run(self, self.filling(self.inner, key))
        return default if blob is MISSING else self._decode(key, blob)

    def _decode(self, key: str, blob: Any) -> Any:
        fast = self._body
        if fast is not None and blob[:3] == fast[0]:
            try:
                return fast[1](blob[3:])
            except Exception:
                pass  # decode says what is wrong
        return self.decode(key, blob)

    def raw_get(self, key: str) -> Any:
        blob = self.near.get(key)
        if blob is not NOVALUE:
            return blob
        return flows.run(self, self.filling(self.inner, key))

    def raw_get_many(self, keys: list[str]) -> dict[str, Any]:
        return flows.run(self, self.filling_many(self.inner, keys))

    def raw_exists(self, key: str) -> bool:
        blob = self.near.get(key)
        if blob is not NOVALUE:
            return blob is not MISSING
        return self.inner.raw_exists(key)

    def raw_keys(self, prefix: str) -> Iterator[str]:
        return self.inner.raw_keys(prefix)

    def raw_keys_after(self, prefix: str, start_after: str) -> Iterator[str]:
        return self.inner.raw_keys_after(prefix, start_after)

    def raw_keys_desc(self, prefix: str, start_before: str | None,
                      limit: int | None = None) -> Iterator[str]:
        return self.inner.raw_keys_desc(prefix, start_before, limit)

    def raw_ttl(self, key: str) -> float | None:
        return self.inner.raw_ttl(key)

    def raw_rows(self, prefix: str, after: str | None, limit: int) -> list[tuple[str, Any, float | None]]:
        return self.inner.raw_rows(prefix, after, limit)

    def raw_snapshot(self, keys: list[str]) -> list[tuple[str, Any, float | None]]:
        return self.inner.raw_snapshot(keys)

    # -- writes ------------------------------------------------------------------------------------

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

    def raw_put_rows(self, rows: list[tuple[str, Any, float | None]]) -> None:
        self._route("raw_put_rows", rows)

    def raw_apply(self, ops: list[Op]) -> None:
        self._route("raw_apply", ops)

    def raw_clear(self, prefix: str) -> int:
        return int(flows.run(self, self.clearing(self.inner, prefix)))

    @contextmanager
    def raw_commit(self, ops: list[Op], checks: list[Check],
                   before: Before | None = None) -> Iterator[None]:
        keys = [key for key, _, _ in ops]
        self.near.invalidate(keys)
        try:
            with self.inner.raw_commit(ops, checks, before):
                yield
        finally:
            self.near.invalidate(keys)

    def raw_replace_all(self, rows: Any, logs: Any) -> None:
        self.near.invalidate_prefix("")
        try:
            self.inner.raw_replace_all(rows, logs)
        finally:
            self.near.invalidate_prefix("")

    def raw_outcome(self, token: str, keys: list[str]) -> Any:
        return self.inner.raw_outcome(token, keys)

    def raw_forget(self, token: str) -> None:
        self.inner.raw_forget(token)

    # -- logs and locks stay on the wrapped store (never near-cached) ------------------------------

    def encode_record(self, name: str, record: Any) -> Any:
        return self.inner.encode_record(name, record)

    def decode_record(self, name: str, blob: Any) -> Any:
        return self.inner.decode_record(name, blob)

    def raw_log_append(self, name: str, blob: Any) -> int:
        return self.inner.raw_log_append(name, blob)

    def raw_log_read(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        return self.inner.raw_log_read(name, after, limit)

    def raw_log_read_desc(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        return self.inner.raw_log_read_desc(name, after, limit)

    def raw_log_len(self, name: str) -> int:
        return self.inner.raw_log_len(name)

    def raw_log_delete(self, name: str) -> bool:
        return self.inner.raw_log_delete(name)

    def raw_log_names(self, prefix: str) -> list[str]:
        return self.inner.raw_log_names(prefix)

    def raw_log_blobs(self, name: str, after: int = 0, limit: int | None = None) -> list[tuple[int, Any]]:
        return self.inner.raw_log_blobs(name, after, limit)

    def raw_log_blob_in(self, name: str, blob: Any) -> Any:
        return self.inner.raw_log_blob_in(name, blob)

    def open_meta(self) -> Any:
        return self._inner_meta

    def lock_id(self) -> str:
        return self.inner.lock_id()

    def shared_journal(self) -> Any:
        return self.inner.shared_journal()

    def close(self) -> None:
        self.tracker.close()
        self.inner.close()

    def describe(self) -> str:
        return f"inner={self.inner!r}, tracking={self.tracking}"
