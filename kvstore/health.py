"""Health: each store's status and round-trip time, within a bound (what a readiness probe asks).

``pm.health()`` (and ``await pm.health()`` on :class:`~kvstore.aio.AsyncPersistenceManager`)
times one round trip to every store (:meth:`~kvstore.PersistenceStore.ping`: a read of a key
nobody writes) at once, and waits at most ``timeout`` seconds for all of them: a Redis that
accepts connections but never answers is reported ``down`` after ``timeout``, it does not hang
the caller. ``kvstore health`` prints the result and exits non-zero when a *required* store is
down: every store is required except the ``cache`` tier when ``redis.fallback`` names a store
to serve it during an outage (the application keeps working, on the fallback).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Awaitable, Callable, Mapping

from .config import Config, mask_secrets
from .errors import InvalidArgumentError, KVStoreError

__all__ = ["Health", "DEFAULT_TIMEOUT", "is_required", "check_timeout", "probe", "probe_async"]

#: Seconds ``health()`` waits for the stores' answers by default.
DEFAULT_TIMEOUT = 2.0


@dataclass(frozen=True)
class Health:
    """One store's health: ``status`` is ``"ok"`` or ``"down"``; ``seconds`` the round trip (for
    a store that is down: how long until it failed, or the bound it did not answer within);
    ``error`` why it is down (secrets masked); ``required`` False when the application keeps
    working while it is down (the cache tier behind ``redis.fallback``)."""

    status: str
    seconds: float
    error: str | None = None
    required: bool = True

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_required(config: Config, store: str) -> bool:
    """Whether ``store`` being down makes the application unready (see the module docstring)."""
    return not (store == "cache" and config.redis is not None and bool(config.redis.fallback))


def check_timeout(timeout: Any) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise InvalidArgumentError(f"timeout: expected a positive number of seconds, got {timeout!r}")
    return float(timeout)


def _down(error: BaseException | str, seconds: float, required: bool) -> Health:
    text = (error if isinstance(error, str) else str(error) if isinstance(error, KVStoreError)
            else f"{type(error).__name__}: {error}")
    return Health("down", seconds, mask_secrets(text), required)


def probe(pings: Mapping[str, Callable[[], Any]], timeout: float,
          required: Mapping[str, bool]) -> dict[str, Health]:
    """Run every ``pings[name]()`` at once, each in a daemon thread (one that never returns is
    left behind, never waited for past ``timeout``)."""
    timeout = check_timeout(timeout)
    found: dict[str, Health] = {}
    lock = threading.Lock()

    def run(name: str) -> None:
        start = time.perf_counter()
        try:
            pings[name]()
            health = Health("ok", time.perf_counter() - start, None, required[name])
        except Exception as exc:
            health = _down(exc, time.perf_counter() - start, required[name])
        with lock:
            found.setdefault(name, health)

    threads = [threading.Thread(target=run, args=(name,), daemon=True, name=f"kvstore-health-{name}")
               for name in pings]
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    with lock:  # a late answer is not taken: the report says what was known at the bound
        for name in pings:
            found.setdefault(name, _down(f"no answer within {timeout:g} s", timeout,
                                         required[name]))
        return {name: found[name] for name in pings}


async def probe_async(pings: Mapping[str, Callable[[], Awaitable[Any]]], timeout: float,
                      required: Mapping[str, bool]) -> dict[str, Health]:
    """:func:`probe` on the event loop: every ``await pings[name]()`` at once, each cancelled
    after ``timeout``."""
    timeout = check_timeout(timeout)

    async def run(name: str) -> Health:
        start = time.perf_counter()
        try:
            await asyncio.wait_for(pings[name](), timeout)
        except asyncio.TimeoutError:
            return _down(f"no answer within {timeout:g} s", timeout, required[name])
        except Exception as exc:
            return _down(exc, time.perf_counter() - start, required[name])
        return Health("ok", time.perf_counter() - start, None, required[name])

    results = await asyncio.gather(*(run(name) for name in pings))
    return dict(zip(pings, results))
