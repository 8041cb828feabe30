"""The blocking facade: the synchronous test bodies, run on the async stores.

``Blocking(kvstore.aio.async_store(store))`` gives an :class:`~kvstore.aio.AsyncStore` the
synchronous interface by running each coroutine on one event loop in a background thread, so
the conformance suite's very test bodies (threads included) exercise the async stores. The
backend contract's byte-level methods (``raw_get``, ``raw_commit``...) and private attributes
are the synchronous twin's: the async front commits transactions through it.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

from kvstore.aio import AsyncLock

_LOOP: asyncio.AbstractEventLoop | None = None
_OWNER: contextvars.ContextVar[Any] = contextvars.ContextVar("owner", default=None)

_AWAITED = {"save", "load", "delete", "exists", "save_many", "load_many", "delete_many", "ttl",
            "incr", "clear", "add", "update", "append", "touch"}


_LOOP_LOCK = threading.Lock()


def loop() -> asyncio.AbstractEventLoop:
    global _LOOP
    with _LOOP_LOCK:  # threads of a test may ask first at the same moment: one loop only
        if _LOOP is None:
            _LOOP = asyncio.new_event_loop()
            threading.Thread(target=_LOOP.run_forever, name="aio-facade", daemon=True).start()
    return _LOOP


def run(coro: Any, owner: Any = None) -> Any:
    async def as_owner() -> Any:
        _OWNER.set(owner)
        return await coro

    return asyncio.run_coroutine_threadsafe(as_owner(), loop()).result(120)


class _ThreadOwnedLock(AsyncLock):
    """Held per calling thread (each facade call is its own task)."""

    def _owner(self) -> Any:
        return _OWNER.get()


class BlockingLock:
    def __init__(self, lock: AsyncLock) -> None:
        lock.__class__ = _ThreadOwnedLock
        self._lock = lock

    def _run(self, coro: Any) -> Any:
        return run(coro, threading.get_ident())

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        return bool(self._run(self._lock.acquire(*args, **kwargs)))

    def release(self) -> None:
        self._run(self._lock.release())

    def extend(self, ttl: Any = None) -> None:
        self._run(self._lock.extend(ttl))

    def locked(self) -> bool:
        return bool(self._run(self._lock.locked()))

    @property
    def owned(self) -> bool:
        return bool(self._run(self._lock.owned()))

    def __enter__(self) -> "BlockingLock":
        self._run(self._lock.__aenter__())
        return self

    def __exit__(self, *exc: Any) -> None:
        self._run(self._lock.__aexit__(*exc))


class BlockingLog:
    def __init__(self, log: Any) -> None:
        self._log = log
        self.name = log.name

    def append(self, record: Any) -> int:
        return int(run(self._log.append(record)))

    def read(self, after: Any = 0, limit: Any = None, reverse: Any = False) -> list[Any]:
        return list(run(self._log.read(after, limit, reverse)))

    def tail(self, n: Any) -> list[Any]:
        return list(run(self._log.tail(n)))

    def last(self) -> Any:
        return run(self._log.last())

    def __len__(self) -> int:
        return int(run(self._log.length()))

    def delete(self) -> bool:
        return bool(run(self._log.delete()))

    def __iter__(self) -> Any:
        async def collect() -> list[Any]:
            return [item async for item in self._log]

        return iter(run(collect()))


class Blocking:
    def __init__(self, astore: Any) -> None:
        self.astore = astore

    def __getattr__(self, name: str) -> Any:
        if name in _AWAITED:
            method = getattr(self.astore, name)
            return lambda *a, **k: run(method(*a, **k))
        if name.startswith(("_", "raw_")) or not hasattr(self.astore, name):
            return getattr(self.astore.sync, name)
        return getattr(self.astore, name)

    def get_or_set(self, key: str, factory: Any, *args: Any, **kwargs: Any) -> Any:
        # The test bodies' factories block (time.sleep, calls through this facade): run them in
        # a thread, as an asyncio program would run blocking work, so they block no one else.
        async def in_thread() -> Any:
            return await asyncio.to_thread(factory)

        target = in_thread if callable(factory) else factory
        return run(self.astore.get_or_set(key, target, *args, **kwargs))

    def keys(self, prefix: str = "", start_after: Any = None, limit: Any = None,
             reverse: Any = False) -> Any:
        async def collect() -> list[str]:
            return [k async for k in self.astore.keys(prefix, start_after, limit, reverse)]

        return iter(run(collect()))

    def items(self, *args: Any, **kwargs: Any) -> Any:
        async def collect() -> list[Any]:
            return [kv async for kv in self.astore.items(*args, **kwargs)]

        return iter(run(collect()))

    def logs(self, prefix: str = "") -> Any:
        async def collect() -> list[str]:
            return [n async for n in self.astore.logs(prefix)]

        return iter(run(collect()))

    def log(self, name: str) -> "BlockingLog":
        return BlockingLog(self.astore.log(name))

    def lock(self, *args: Any, **kwargs: Any) -> BlockingLock:
        return BlockingLock(self.astore.lock(*args, **kwargs))

    def close(self) -> None:
        run(self.astore.close())
        self.astore.sync.close()

    def __enter__(self) -> "Blocking":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self.astore)
