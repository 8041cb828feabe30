"""AsyncNearStore: the async face of a :class:`~kvstore.stores.near.NearStore`.

The same flows as the synchronous wrapper (``NearStore.route``, ``filling``, ``clearing``), run
over the async face of the wrapped store (the ``redis.asyncio`` driver), and the very same
local copies and invalidation channel as its synchronous twin: the channel is read by threads,
so a loop of local hits on the event loop (which never awaits anything) cannot starve it. A
transaction's commit runs on the synchronous twin in a worker thread, as for every store.
"""

from __future__ import annotations

from typing import Any, Callable

from ...astore import AsyncStore, arun
from ...store import MISSING, PersistenceStore
from .local import NOVALUE
from .store import NearStore

__all__ = ["AsyncNearStore"]


class AsyncNearStore(AsyncStore):
    """``NearStore`` awaited. ``face(store)`` builds the async face of the wrapped store
    (:func:`kvstore.aio.async_store` passes itself)."""

    sync: NearStore

    def __init__(self, sync: NearStore, face: Callable[[PersistenceStore], AsyncStore]) -> None:
        super().__init__(sync)
        self.inner: Any = face(sync.inner)  # the Redis driver (its raw_snapshot too)
        self.near = sync.near

    async def _route(self, method: str, *args: Any) -> Any:
        return await arun(self, self.sync.route(self.inner, method, args))

    # -- reads -------------------------------------------------------------------------------------

    async def load(self, key: str, default: Any = None) -> Any:
        value = self.sync.local_value(key, default)  # never awaits: a hit costs no loop turn
        if value is not NOVALUE:
            return value
        self.check_key(key)
        blob = await arun(self, self.sync.filling(self.inner, key))
        return default if blob is MISSING else self.decode(key, blob)

    async def raw_get(self, key: str) -> Any:
        blob = self.near.get(key)
        if blob is not NOVALUE:
            return blob
        return await arun(self, self.sync.filling(self.inner, key))

    async def raw_get_many(self, keys: list[str]) -> dict[str, Any]:
        return await arun(self, self.sync.filling_many(self.inner, keys))

    async def raw_exists(self, key: str) -> bool:
        blob = self.near.get(key)
        if blob is not NOVALUE:
            return blob is not MISSING
        return await self.inner.raw_exists(key)

    async def raw_keys(self, prefix: str) -> list[str]:
        return await self.inner.raw_keys(prefix)

    async def raw_ttl(self, key: str) -> float | None:
        return await self.inner.raw_ttl(key)

    async def raw_snapshot(self, keys: list[str]) -> list[tuple[str, Any, float | None]]:
        return await self.inner.raw_snapshot(keys)

    # -- writes ------------------------------------------------------------------------------------

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
        return int(await arun(self, self.sync.clearing(self.inner, prefix)))

    # -- logs and locks: the wrapped store's -------------------------------------------------------

    async def raw_log_append(self, name: str, blob: Any) -> int:
        return await self.inner.raw_log_append(name, blob)

    async def raw_log_read(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        return await self.inner.raw_log_read(name, after, limit)

    async def raw_log_read_desc(self, name: str, after: int, limit: int | None
                                ) -> list[tuple[int, Any]]:
        return await self.inner.raw_log_read_desc(name, after, limit)

    async def raw_log_len(self, name: str) -> int:
        return await self.inner.raw_log_len(name)

    async def raw_log_delete(self, name: str) -> bool:
        return await self.inner.raw_log_delete(name)

    async def raw_log_names(self, prefix: str) -> list[str]:
        return await self.inner.raw_log_names(prefix)

    def open_meta(self) -> AsyncStore:
        return self.inner.meta

    async def close(self) -> None:
        await self.inner.close()
