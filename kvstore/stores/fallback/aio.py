"""AsyncFallbackStore: the async face of a :class:`~kvstore.stores.fallback.FallbackStore`.

The same routing flows as the synchronous wrapper (``FallbackStore.route``), run over the async
faces of the stores it wraps: a Redis primary keeps its ``redis.asyncio`` client, the fallback
runs as its own face does (a thread pool for SQLite and files, inline for memory). Only the
write-back after an outage runs on the synchronous stores, in a worker thread. A transaction's
commit runs on the synchronous wrapper in a worker thread, as for every store.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from ...astore import AsyncStore, arun
from ...store import PersistenceStore
from .store import FallbackStore, Targets

__all__ = ["AsyncFallbackStore"]


class AsyncFallbackStore(AsyncStore):
    """``FallbackStore`` awaited. ``face(store)`` builds the async face of a wrapped store
    (:func:`kvstore.aio.async_store` passes itself)."""

    sync: FallbackStore

    def __init__(self, sync: FallbackStore, face: Callable[[PersistenceStore], AsyncStore]
                 ) -> None:
        self._faces(sync, face(sync.primary), face(sync.fallback))

    def _faces(self, sync: FallbackStore, primary: AsyncStore, fallback: AsyncStore) -> None:
        super().__init__(sync)
        self.primary, self.fallback = primary, fallback
        records = fallback.meta if sync.writes_back else None
        self._to = Targets(primary, fallback, records, asyncio.to_thread)

    async def _route(self, method: str, *args: Any) -> Any:
        return await arun(self, self.sync.route(self._to, method, args))

    async def ping(self) -> None:
        await self.primary.ping()  # the primary itself, as FallbackStore.ping

    async def raw_get(self, key: str) -> Any:
        return await self._route("raw_get", key)

    async def raw_exists(self, key: str) -> bool:
        return bool(await self._route("raw_exists", key))

    async def raw_keys(self, prefix: str) -> list[str]:
        return await self._route("raw_keys", prefix)

    async def raw_ttl(self, key: str) -> float | None:
        return await self._route("raw_ttl", key)

    async def raw_get_many(self, keys: list[str]) -> dict[str, Any]:
        return await self._route("raw_get_many", keys)

    async def raw_set(self, key: str, blob: Any, ttl: float | None) -> None:
        await self._route("raw_set", key, blob, ttl)

    async def raw_delete(self, key: str) -> bool:
        return bool(await self._route("raw_delete", key))

    async def raw_set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        await self._route("raw_set_many", items, ttl)

    async def raw_delete_many(self, keys: list[str]) -> int:
        return int(await self._route("raw_delete_many", keys))

    async def raw_incr(self, key: str, amount: int, ttl: float | None) -> int:
        return int(await self._route("raw_incr", key, amount, ttl))

    async def raw_add(self, key: str, blob: Any, ttl: float | None) -> bool:
        return bool(await self._route("raw_add", key, blob, ttl))

    async def raw_cas(self, key: str, expected: Any, new: Any, ttl: Any) -> bool:
        return bool(await self._route("raw_cas", key, expected, new, ttl))

    async def raw_touch(self, key: str, ttl: float | None) -> bool:
        return bool(await self._route("raw_touch", key, ttl))

    async def raw_clear(self, prefix: str) -> int:
        return int(await arun(self, self.sync.clearing(self._to, prefix)))

    # Logs stay on the primary, as in FallbackStore (its numbering cannot be split).
    async def raw_log_append(self, name: str, blob: Any) -> int:
        return await self.primary.raw_log_append(name, blob)

    async def raw_log_read(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        return await self.primary.raw_log_read(name, after, limit)

    async def raw_log_read_desc(self, name: str, after: int, limit: int | None
                                ) -> list[tuple[int, Any]]:
        return await self.primary.raw_log_read_desc(name, after, limit)

    async def raw_log_len(self, name: str) -> int:
        return await self.primary.raw_log_len(name)

    async def raw_log_delete(self, name: str) -> bool:
        return await self.primary.raw_log_delete(name)

    async def raw_log_names(self, prefix: str) -> list[str]:
        return await self.primary.raw_log_names(prefix)

    def open_meta(self) -> "AsyncFallbackStore":
        meta = AsyncFallbackStore.__new__(AsyncFallbackStore)
        meta._faces(self.sync.meta, self.primary.meta, self.fallback.meta)
        return meta

    async def close(self) -> None:
        await self.primary.close()
        await self.fallback.close()
