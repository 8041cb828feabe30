"""AsyncPostgresStore: the PostgreSQL store on psycopg's asyncio connection pool.

Built from a synchronous :class:`~kvstore.PostgresStore` (its twin): every operation is the
twin's :class:`~.statements.Query` (the same statement, parameters and reading of
the result), executed on an ``AsyncConnectionPool``. The table is created through the twin
(in a worker thread) before the first query; a transaction's commit runs on the twin in a
worker thread (see :mod:`kvstore.aio.manager`).
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any, AsyncIterator

from ...astore import AsyncStore
from ...errors import StoreUnavailableError
from .statements import PAGE, Query
from .store import PostgresStore, mask_dsn

__all__ = ["AsyncPostgresStore"]


class AsyncPostgresStore(AsyncStore):
    """PostgreSQL without blocking the event loop. ``pool_size``: most connections."""

    sync: PostgresStore

    def __init__(self, sync: PostgresStore, pool_size: int = 10) -> None:
        super().__init__(sync)
        self._pool_size = pool_size
        self._shared: dict[str, Any] = {"pool": None}  # shared with the lock namespace
        self._ready = False

    async def _pool(self) -> Any:
        pool = self._shared["pool"]
        if pool is None:
            from psycopg_pool import AsyncConnectionPool

            sync = self.sync
            pool = AsyncConnectionPool(
                sync.dsn, min_size=1, max_size=self._pool_size, open=False,
                timeout=sync.connect_timeout,
                kwargs={"autocommit": True, "connect_timeout": max(1, int(sync.connect_timeout)),
                        "application_name": f"kvstore:{sync.table}"},
                name=f"kvstore-aio-{sync.table}")
            self._shared["pool"] = pool
            await pool.open(wait=False)
        if not self._ready:  # CREATE TABLE, through the twin, off the loop
            await asyncio.get_running_loop().run_in_executor(None, self.sync.ensure_table)
            self._ready = True
        return pool

    def _unavailable(self, exc: BaseException, why: str = "") -> StoreUnavailableError:
        error = StoreUnavailableError(
            f"PostgreSQL at {mask_dsn(self.sync.dsn)} is unavailable: {why or exc}".strip())
        error.__cause__ = exc
        return error

    async def _run(self, q: Query) -> Any:
        sync = self.sync
        pool = await self._pool()
        try:
            async with pool.connection() as conn:
                try:
                    cur = await conn.execute(q.sql, q.params)
                except sync.data_errors as exc:
                    raise q.data_error(exc) if q.data_error else exc
                if q.fetch == "one":
                    rows = await cur.fetchone()
                else:
                    rows = await cur.fetchall() if q.fetch else None
        except sync.pool_timeout_error as exc:
            raise self._unavailable(exc, f"no connection within {sync.connect_timeout:g}s")
        except sync.connection_errors as exc:
            raise self._unavailable(exc)
        return q.result(rows)

    async def raw_get(self, key: str) -> Any:
        return await self._run(self.sync.queries.get(key))

    async def raw_get_many(self, keys: list[str]) -> dict[str, Any]:
        return await self._run(self.sync.queries.get_many(keys))

    async def raw_set(self, key: str, blob: Any, ttl: float | None) -> None:
        await self._run(self.sync.queries.set(key, blob, ttl))
        purge = self.sync.queries.purge()
        if purge is not None:
            await self._run(purge)

    async def raw_set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        await self._run(self.sync.queries.set_many(items, ttl))

    async def raw_delete(self, key: str) -> bool:
        return await self.raw_delete_many([key]) == 1

    async def raw_delete_many(self, keys: list[str]) -> int:
        return int(await self._run(self.sync.queries.delete_many(keys)))

    async def raw_exists(self, key: str) -> bool:
        return bool(await self._run(self.sync.queries.exists(key)))

    async def raw_ttl(self, key: str) -> float | None:
        return await self._run(self.sync.queries.ttl(key))

    async def raw_incr(self, key: str, amount: int, ttl: float | None) -> int:
        return int(await self._run(self.sync.queries.incr(key, amount, ttl)))

    async def raw_keys(self, prefix: str) -> list[str]:
        return [key async for page in self._key_pages(prefix, None) for key in page]

    async def _key_pages(self, prefix: str, start_after: str | None, reverse: bool = False,
                         limit: int | None = None) -> AsyncIterator[list[str]]:
        # One ordered query per page, starting after the last key seen (as the sync twin;
        # ``reverse``: ORDER BY key DESC before it, no page longer than ``limit``).
        after, queries = start_after, self.sync.queries
        size = PAGE if limit is None or not reverse else min(max(limit, 1), PAGE)
        while True:
            page = await self._run(queries.keys_desc(prefix, after, size) if reverse
                                   else queries.keys(prefix, after or ""))
            if page:
                yield page
                after = page[-1]
            if len(page) < size:
                return
            size = PAGE

    async def raw_clear(self, prefix: str) -> int:
        return int(await self._run(self.sync.queries.clear(prefix)))

    async def raw_add(self, key: str, blob: Any, ttl: float | None) -> bool:
        return bool(await self._run(self.sync.queries.add(key, blob, ttl)))

    async def raw_cas(self, key: str, expected: Any, new: Any, ttl: Any) -> bool:
        return bool(await self._run(self.sync.queries.cas(key, expected, new, ttl)))

    async def raw_touch(self, key: str, ttl: float | None) -> bool:
        return bool(await self._run(self.sync.queries.touch(key, ttl)))

    def open_meta(self) -> "AsyncPostgresStore":
        meta = copy.copy(self)  # the same pool, the twin's lock table
        meta.take_twin(self.sync.meta)
        meta._ready = False
        return meta

    async def close(self) -> None:
        pool, self._shared["pool"] = self._shared["pool"], None
        if pool is not None:
            await pool.close()
