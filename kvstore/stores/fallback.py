"""FallbackStore: serve a tier from a second store while its server (Redis) is unavailable."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from ..errors import StoreUnavailableError
from ..store import Check, Op, PersistenceStore

__all__ = ["FallbackStore"]


class FallbackStore(PersistenceStore):
    """Calls go to ``primary``; when it raises :class:`StoreUnavailableError`, the call and every
    call for the next ``retry_after`` seconds go to ``fallback``, then ``primary`` is tried again.

    Blobs are self-describing, so values written by the primary's serializer read back from the
    fallback store (and vice versa). ``on_error(exc)`` is told each time the primary fails.
    Keys written to the fallback while the primary was down stay there; they are not copied back.
    """

    def __init__(self, primary: PersistenceStore, fallback: PersistenceStore, *,
                 retry_after: float = 5.0,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        super().__init__(ttl_default=primary.ttl_default, serializer=None)
        self.serializer = primary.serializer
        self.primary = primary
        self.fallback = fallback
        self.retry_after = retry_after
        self.on_error = on_error
        self.durable = primary.durable
        self.optimistic = primary.optimistic
        self._down_until = 0.0
        self._lock = threading.Lock()

    @property
    def using_fallback(self) -> bool:
        return time.monotonic() < self._down_until

    def _call(self, method: str, *args: Any) -> Any:
        if self._down_until and time.monotonic() < self._down_until:
            return getattr(self.fallback, method)(*args)
        try:
            result = getattr(self.primary, method)(*args)
            if method == "_keys":
                result = list(result)  # errors surface here, not halfway through iteration
        except StoreUnavailableError as exc:
            with self._lock:
                self._down_until = time.monotonic() + self.retry_after
            if self.on_error is not None:
                try:
                    self.on_error(exc)
                except Exception:
                    pass
            return getattr(self.fallback, method)(*args)
        self._down_until = 0.0
        return result

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

    def _get_many(self, keys: list[str]) -> dict[str, Any]:
        return self._call("_get_many", keys)

    def _set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        self._call("_set_many", items, ttl)

    def _delete_many(self, keys: list[str]) -> int:
        return int(self._call("_delete_many", keys))

    @contextmanager
    def _committing(self, ops: list[Op], checks: list[Check]) -> Iterator[None]:
        # The store is chosen once, at the start; an outage during the commit fails it (and
        # sends the next one to the fallback).
        target = self.fallback if self.using_fallback else self.primary
        try:
            with target._committing(ops, checks):
                yield
        except StoreUnavailableError:
            if target is self.primary:
                with self._lock:
                    self._down_until = time.monotonic() + self.retry_after
            raise

    def _open_meta(self) -> "FallbackStore":
        return FallbackStore(self.primary._meta, self.fallback._meta, retry_after=self.retry_after)

    def _lock_id(self) -> str:
        return self.primary._lock_id()

    def _snapshot(self, keys: list[str]) -> list[tuple[str, Any, float | None]]:
        return self._call("_snapshot", keys)

    def close(self) -> None:
        self.primary.close()

    def _describe(self) -> str:
        return f"primary={self.primary!r}, fallback={type(self.fallback).__name__}"
