"""AsyncRedisStore: the Redis store on ``redis.asyncio`` (single node, Cluster, Sentinel).

Built from a synchronous :class:`~kvstore.RedisStore` (its twin), which gives it the URL and
settings, the key prefix, the reserved lock namespace, the Lua scripts' arguments and the error
mapping; only the round trips are awaited. A transaction's commit runs on the twin in a worker
thread (see :mod:`kvstore.aio.manager`). The commands and scripts are :mod:`.scripts`, shared
with the twin.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from typing import Any, AsyncIterator

from ..._marks import MISSING
from ...astore import AsyncStore
from ...errors import NotAnIntegerError
from .scripts import (COMMIT, LOG_TAIL, RESERVED, SCAN_COUNT, TOUCH, commit_args, glob_escape,
                      log_tail_args, log_tail_rows, ms, name_str, snapshot_rows)
from .store import RedisStore

__all__ = ["AsyncRedisStore"]


class AsyncRedisStore(AsyncStore):
    """Redis without blocking the event loop. ``client=`` takes an existing ``redis.asyncio``
    client (e.g. ``fakeredis.FakeAsyncRedis``)."""

    sync: RedisStore

    def __init__(self, sync: RedisStore, client: Any = None) -> None:
        super().__init__(sync)
        self._client = client if client is not None else sync.connect_async()
        self._commit_script = self._client.register_script(COMMIT)
        self._touch_script = self._client.register_script(TOUCH)
        self._tail_script = self._client.register_script(LOG_TAIL)
        self._errors = sync.unavailable_errors
        from redis.exceptions import RedisClusterException, ResponseError

        self._cluster_error = RedisClusterException
        self._response_error = ResponseError
        self._prefix = sync.key_prefix
        self._pending: list[tuple[str, asyncio.Future[Any]]] = []  # reads of this loop turn
        self._flushing: set[asyncio.Task[None]] = set()
        self._initialized = not sync.cluster
        self._init_lock: asyncio.Lock | None = None
        # redis.asyncio's cluster pools raise when full instead of waiting: at most
        # max_connections commands run at once, the others wait up to pool_timeout (a single
        # node or Sentinel client waits in its own blocking pool; see .connect).
        self._gate = asyncio.Semaphore(sync.max_connections) if sync.cluster else None

    async def _ready(self) -> None:
        """A cluster client discovers its nodes once, before any command: tasks that arrive
        together wait for that instead of each starting it (which makes nodes drop
        connections under them)."""
        if self._initialized:
            return
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if not self._initialized:
                if self.sync.cluster:
                    try:
                        await self._client.initialize()
                    except self._errors + (self._cluster_error,) as exc:
                        raise self.sync.unavailable(exc) from exc
                self._initialized = True

    async def _do(self, coro: Any) -> Any:
        """Await a redis-py call; connection failures become StoreUnavailableError."""
        try:
            if not self._initialized:
                await self._ready()
            if self._gate is not None:
                return await self._gated(coro)
            return await coro
        except self._errors as exc:
            raise self.sync.unavailable(exc) from exc
        except self._cluster_error as exc:
            raise self.sync.unavailable(exc) from exc

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """One of the cluster's ``max_connections`` command slots, waited for up to
        ``pool_timeout`` (a no-op on a single node or Sentinel)."""
        gate = self._gate
        if gate is None:
            yield
            return
        try:
            await asyncio.wait_for(gate.acquire(), self.sync.pool_timeout)
        except asyncio.TimeoutError:
            raise self.sync.pool_exhausted() from None
        try:
            yield
        finally:
            gate.release()

    async def _gated(self, coro: Any) -> Any:
        try:
            async with self._slot():
                return await coro
        finally:
            coro.close()  # a no-op once awaited; a command never sent is dropped quietly

    def _k(self, key: str) -> str:
        return self._prefix + key

    async def raw_get(self, key: str) -> Any:
        """Reads requested in the same turn of the event loop go out together, as one MGET
        (per slot on a cluster): 64 tasks loading cost one round trip, not 64."""
        future = asyncio.get_running_loop().create_future()
        pending = self._pending
        pending.append((self._prefix + key, future))
        if len(pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        blob = await future
        return MISSING if blob is None else blob

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._mget(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _mget(self, batch: list[tuple[str, asyncio.Future[Any]]]) -> None:
        names = [name for name, _ in batch]
        try:
            if not self._initialized:
                await self._ready()
            r = self._client
            call = (r.get(names[0]) if len(names) == 1 else
                    r.mget_nonatomic(names) if self.sync.cluster else r.mget(names))
            found = await (call if self._gate is None else self._gated(call))
            blobs = [found] if len(names) == 1 else found
        except BaseException as exc:
            error: BaseException = exc
            if isinstance(exc, self._errors + (self._cluster_error,)):
                error = self.sync.unavailable(exc)
                error.__cause__ = exc
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), blob in zip(batch, blobs):
            if not future.done():
                future.set_result(blob)

    async def raw_set(self, key: str, blob: Any, ttl: float | None) -> None:
        if self._gate is not None:
            await self._do(self._client.set(self._prefix + key, blob,
                                            px=None if ttl is None else ms(ttl)))
            return
        try:
            await self._client.set(self._prefix + key, blob, px=None if ttl is None else ms(ttl))
        except self._errors as exc:
            raise self.sync.unavailable(exc) from exc
        except self._cluster_error as exc:
            raise self.sync.unavailable(exc) from exc

    async def raw_get_many(self, keys: list[str]) -> dict[str, Any]:
        names = [self._k(k) for k in keys]
        r = self._client
        blobs = await self._do(r.mget_nonatomic(names) if self.sync.cluster else r.mget(names))
        return {k: b for k, b in zip(keys, blobs) if b is not None}

    async def raw_set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        await self._ready()  # a cluster pipeline built before discovery goes to a dead node
        pipe = self._client.pipeline(transaction=not self.sync.cluster)
        px = None if ttl is None else ms(ttl)
        for key, blob in items:
            pipe.set(self._k(key), blob, px=px)
        await self._do(pipe.execute())

    async def raw_delete(self, key: str) -> bool:
        return bool(await self._do(self._client.delete(self._k(key))))

    async def raw_delete_many(self, keys: list[str]) -> int:
        return await self._remove([self._k(k) for k in keys], "delete")

    async def _remove(self, names: list[str], command: str) -> int:
        # redis.asyncio's cluster client splits DEL/UNLINK across slots by itself.
        return int(await self._do(getattr(self._client, command)(*names)))

    async def raw_exists(self, key: str) -> bool:
        return bool(await self._do(self._client.exists(self._k(key))))

    async def raw_ttl(self, key: str) -> float | None:
        ms = await self._do(self._client.pttl(self._k(key)))
        return None if ms is None or ms < 0 else ms / 1000.0

    async def raw_incr(self, key: str, amount: int, ttl: float | None) -> int:
        name = self._k(key)
        try:
            if ttl is None:
                return int(await self._do(self._client.incrby(name, amount)))
            await self._ready()  # see _set_many
            pipe = self._client.pipeline(transaction=True)  # see RedisStore.raw_incr
            pipe.set(name, 0, nx=True, px=ms(ttl))
            pipe.incrby(name, amount)
            return int((await self._do(pipe.execute()))[1])
        except self._response_error as exc:
            if "not an integer" in str(exc) or "out of range" in str(exc):
                raise NotAnIntegerError(f"incr {key!r}: stored value is not an integer") from exc
            raise

    async def _scan(self, prefix: str) -> list[str]:
        pattern = glob_escape(self._prefix + prefix) + "*"
        names = []
        await self._ready()
        try:
            async with self._slot():
                async for name in self._client.scan_iter(match=pattern, count=SCAN_COUNT):
                    name = name_str(name)
                    if not (self.sync.reserved_guard and name.startswith(RESERVED)):
                        names.append(name)
        except self._errors + (self._cluster_error,) as exc:
            raise self.sync.unavailable(exc) from exc
        return names

    async def raw_keys(self, prefix: str) -> list[str]:
        n = len(self._prefix)
        return sorted(name[n:] for name in await self._scan(prefix))

    async def raw_clear(self, prefix: str) -> int:
        names = await self._scan(prefix)
        removed = 0
        for i in range(0, len(names), 500):
            removed += await self._remove(names[i:i + 500], "unlink")
        return removed

    async def raw_add(self, key: str, blob: Any, ttl: float | None) -> bool:
        return bool(await self._do(self._client.set(self._k(key), blob, nx=True,
                                                    px=None if ttl is None else ms(ttl))))

    async def raw_cas(self, key: str, expected: Any, new: Any, ttl: Any) -> bool:
        names, args = commit_args(self._prefix, [(key, expected)], [(key, new, ttl)])
        return int(await self._do(self._commit_script(keys=names, args=args))) == 0

    async def raw_touch(self, key: str, ttl: float | None) -> bool:
        if ttl is not None:
            return bool(await self._do(self._client.pexpire(self._k(key), ms(ttl))))
        return bool(await self._do(self._touch_script(keys=[self._k(key)], args=[""])))

    async def raw_snapshot(self, keys: list[str]) -> list[tuple[str, Any, float | None]]:
        """As RedisStore's: GET and PTTL of each key in one pipeline (one round trip)."""
        await self._ready()  # see raw_set_many
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.get(self._k(key))
            pipe.pttl(self._k(key))
        return snapshot_rows(keys, await self._do(pipe.execute()))

    # Logs: the same Redis lists as RedisStore's (see there), awaited.
    async def raw_log_append(self, name: str, blob: Any) -> int:
        return int(await self._do(self._client.rpush(self.sync.log_key(name), blob)))

    async def raw_log_read(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        end = -1 if limit is None else after + limit - 1
        blobs = await self._do(self._client.lrange(self.sync.log_key(name), after, end))
        return [(after + 1 + i, blob) for i, blob in enumerate(blobs)]

    async def raw_log_read_desc(self, name: str, after: int, limit: int | None
                                ) -> list[tuple[int, Any]]:
        return log_tail_rows(await self._do(self._tail_script(
            keys=[self.sync.log_key(name)], args=log_tail_args(after, limit))))

    async def raw_log_len(self, name: str) -> int:
        return int(await self._do(self._client.llen(self.sync.log_key(name))))

    def open_meta(self) -> "AsyncRedisStore":
        meta = copy.copy(self)
        meta.take_twin(self.sync.meta)
        meta._prefix = meta.sync.key_prefix
        meta._pending, meta._flushing = [], set()
        meta._init_lock = None  # the client is shared: so is its initialization

        return meta

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except Exception:  # closing a dead connection must not raise
            pass
