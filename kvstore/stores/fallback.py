"""FallbackStore: serve a tier from a second store while its server (Redis) is unavailable.

Writes made while the primary is down go to the fallback store, and each written key is
recorded in the fallback's lock namespace (``outage:<key>``). Once the primary answers again,
the first call in any process that shares the fallback (at once in the process that saw the
outage end, within ``retry_after`` seconds in the others) writes those keys back to the primary
with their remaining TTLs (or deletes them there, for keys deleted or expired meanwhile), then
removes them from the fallback. So after recovery every write made during the outage is read
from the primary, and nothing stays behind in the fallback.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from .._commit import Before
from ..errors import StoreUnavailableError
from ..store import MISSING, Check, Op, PersistenceStore

__all__ = ["FallbackStore"]

_OUTAGE = "outage:"


def _written_keys(method: str, args: tuple[Any, ...]) -> list[str]:
    if method == "_set_many":
        return [key for key, _ in args[0]]
    if method == "_delete_many":
        return list(args[0])
    return [args[0]]


class FallbackStore(PersistenceStore):
    """Calls go to ``primary``; when it raises :class:`StoreUnavailableError`, the call and every
    call for the next ``retry_after`` seconds go to ``fallback``, then ``primary`` is tried again.

    Blobs are self-describing, so values written by the primary's serializer read back from the
    fallback store (and vice versa). ``on_error(exc)`` is told each time the primary fails.
    Keys written to the fallback while the primary was down are written back to the primary when
    it is reachable again (see the module docstring).
    """

    def __init__(self, primary: PersistenceStore, fallback: PersistenceStore, *,
                 retry_after: float = 5.0,
                 on_error: Callable[[BaseException], None] | None = None,
                 write_back: bool = True) -> None:
        super().__init__(ttl_default=primary.ttl_default, serializer=None)
        self.serializer = primary.serializer
        self.primary = primary
        self.fallback = fallback
        self.retry_after = retry_after
        self.on_error = on_error
        self.durable = primary.durable
        self.optimistic = primary.optimistic
        self.crash_atomic = primary.crash_atomic and fallback.crash_atomic
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._write_back = write_back
        self._next_check = 0.0  # when to look for outage writes to put back (monotonic)

    @property
    def using_fallback(self) -> bool:
        return time.monotonic() < self._down_until

    def _call(self, method: str, *args: Any) -> Any:
        if self._down_until and time.monotonic() < self._down_until:
            return self._on_fallback(method, args)
        try:
            if self._write_back and time.monotonic() >= self._next_check:
                self._put_back()
            result = getattr(self.primary, method)(*args)
            if method == "_keys":
                result = list(result)  # errors surface here, not halfway through iteration
        except StoreUnavailableError as exc:
            with self._lock:
                self._down_until = time.monotonic() + self.retry_after
                self._next_check = 0.0  # put back at the first call that succeeds again
            if self.on_error is not None:
                try:
                    self.on_error(exc)
                except Exception:
                    pass
            return self._on_fallback(method, args)
        self._down_until = 0.0
        return result

    _WRITES = frozenset({"_set", "_delete", "_incr", "_add", "_cas", "_touch", "_set_many",
                         "_delete_many"})

    def _on_fallback(self, method: str, args: tuple[Any, ...]) -> Any:
        if method == "_clear":
            raise StoreUnavailableError(
                f"clear() needs the primary store, which is unavailable ({self.primary!r}): the "
                "keys it holds cannot be seen from the fallback")
        result = getattr(self.fallback, method)(*args)
        if self._write_back and method in self._WRITES:
            self._mark(_written_keys(method, args))
        return result

    def _mark(self, keys: list[str]) -> None:
        """Record keys written to the fallback during an outage (to put back later)."""
        registry = self.fallback._meta
        for key in keys:
            registry._set(_OUTAGE + key, b"1", None)

    def _put_back(self) -> None:
        """Write the keys recorded during an outage back to the primary, then drop them from
        the fallback. Runs under a lock shared by every process using the fallback."""
        self._next_check = time.monotonic() + self.retry_after
        registry = self.fallback._meta
        marked = [k[len(_OUTAGE):] for k in registry._keys(_OUTAGE)]
        if not marked:
            return
        lock = self.fallback.lock("kvstore-fallback-put-back", ttl=60, timeout=30)
        with lock:
            for key in marked:
                blob = self.fallback._get(key)
                if blob is MISSING:  # deleted (or expired) during the outage
                    self.primary._delete(key)
                else:
                    ttl = self.fallback._ttl(key)
                    value = self.fallback._decode(key, blob)
                    self.primary._set(key, self.primary._encode(key, value), ttl)
                    self.fallback._cas(key, blob, MISSING, None)  # unless rewritten meanwhile
                registry._delete(_OUTAGE + key)

    def _check_key(self, key: Any) -> None:
        self.primary._check_key(key)

    def _get(self, key: str) -> Any:
        return self._call("_get", key)

    def _set(self, key: str, blob: Any, ttl: float | None) -> None:
        self._call("_set", key, blob, ttl)

    def _delete(self, key: str) -> bool:
        return bool(self._call("_delete", key))

    def _exists(self, key: str) -> bool:
        return bool(self._call("_exists", key))

    def _keys(self, prefix: str) -> Iterator[str]:
        return iter(self._call("_keys", prefix))

    def _ttl(self, key: str) -> float | None:
        return self._call("_ttl", key)

    def _incr(self, key: str, amount: int, ttl: float | None) -> int:
        return int(self._call("_incr", key, amount, ttl))

    def _add(self, key: str, blob: Any, ttl: float | None) -> bool:
        return bool(self._call("_add", key, blob, ttl))

    def _cas(self, key: str, expected: Any, new: Any, ttl: Any) -> bool:
        return bool(self._call("_cas", key, expected, new, ttl))

    def _touch(self, key: str, ttl: float | None) -> bool:
        return bool(self._call("_touch", key, ttl))

    def _clear(self, prefix: str) -> int:
        return int(self._call("_clear", prefix))

    # Logs stay on the primary (a log's numbering cannot be split between two stores): while
    # it is down they raise StoreUnavailableError.

    def _log_encode(self, name: str, record: Any) -> Any:
        return self.primary._log_encode(name, record)

    def _log_decode(self, name: str, blob: Any) -> Any:
        return self.primary._log_decode(name, blob)

    def _log_append(self, name: str, blob: Any) -> int:
        return self.primary._log_append(name, blob)

    def _log_read(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        return self.primary._log_read(name, after, limit)

    def _log_len(self, name: str) -> int:
        return self.primary._log_len(name)

    def _log_delete(self, name: str) -> bool:
        return self.primary._log_delete(name)

    def _log_names(self, prefix: str) -> list[str]:
        return self.primary._log_names(prefix)

    def _get_many(self, keys: list[str]) -> dict[str, Any]:
        return self._call("_get_many", keys)

    def _set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        self._call("_set_many", items, ttl)

    def _delete_many(self, keys: list[str]) -> int:
        return int(self._call("_delete_many", keys))

    @contextmanager
    def _committing(self, ops: list[Op], checks: list[Check],
                    before: Before | None = None) -> Iterator[None]:
        # The store is chosen once, at the start; an outage during the commit fails it (and
        # sends the next one to the fallback).
        target = self.fallback if self.using_fallback else self.primary
        try:
            with target._committing(ops, checks, before):
                yield
            if target is self.fallback and self._write_back:
                self._mark([key for key, _, _ in ops])
        except StoreUnavailableError:
            if target is self.primary:
                with self._lock:
                    self._down_until = time.monotonic() + self.retry_after
            raise

    def _open_meta(self) -> "FallbackStore":
        return FallbackStore(self.primary._meta, self.fallback._meta, retry_after=self.retry_after,
                             write_back=False)  # locks are not written back

    def _lock_id(self) -> str:
        return self.primary._lock_id()

    def _snapshot(self, keys: list[str]) -> list[tuple[str, Any, float | None]]:
        return self._call("_snapshot", keys)

    # Restores and log transfer need the primary: a restore into the fallback would be lost.
    def _replace_all(self, rows: Any, logs: Any) -> None:
        self.primary._replace_all(rows, logs)

    def _log_blobs(self, name: str, after: int = 0, limit: int | None = None) -> list[tuple[int, Any]]:
        return self.primary._log_blobs(name, after, limit)

    def _log_blob_in(self, name: str, blob: Any) -> Any:
        return self.primary._log_blob_in(name, blob)

    def _outcome(self, token: str, keys: list[str]) -> Any:
        # A marked commit only ever ran on the primary (the fallback holds locks instead).
        return self.primary._outcome(token, keys)

    def _forget(self, token: str) -> None:
        self.primary._forget(token)

    def close(self) -> None:
        self.primary.close()

    def _describe(self) -> str:
        return f"primary={self.primary!r}, fallback={type(self.fallback).__name__}"
