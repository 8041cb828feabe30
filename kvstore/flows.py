"""The read-modify-write algorithms, written once for every store and for both fronts.

A flow is a generator that yields *requests* and is sent their results; it never touches a
connection, a file or a socket itself ("sans-I/O"). :func:`run` drives a flow against a
synchronous store; the asyncio front drives the very same flows with an awaiting driver. So
``update``, ``append``, ``get_or_set`` and locks behave identically on every store, sync or async.

Requests:

- :class:`Call` ``(space, method, args)``: call a byte-level method (``_get``, ``_add``,
  ``_cas``, ``_set``) of the store (``DATA``) or of its lock namespace (``META``, see
  :attr:`PersistenceStore.meta`).
- :class:`Sleep` ``(seconds)``: wait before trying again.
- :class:`Compute` ``(fn)``: call the user's factory (awaited by the async driver if it is a
  coroutine function).

Only two atomic primitives are needed underneath: set-if-absent (``_add``) and compare-and-swap
of the stored blob (``_cas``, which also deletes-if-equal). Everything here is optimistic: read,
compute, then write only if nothing changed; a lost race retries after a short random backoff.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import time
from typing import Any, Callable, Generator, NamedTuple

from ._marks import KEEP, MISSING
from .errors import LockTimeout, NotAListError

__all__ = ["DATA", "META", "Call", "Sleep", "Compute", "Flow", "run", "backoff", "new_token",
           "update", "append", "touch", "get_or_set", "acquire", "lookup", "release", "extend"]

DATA, META = 0, 1


class Call(NamedTuple):
    space: int
    method: str
    args: tuple[Any, ...]


class Sleep(NamedTuple):
    seconds: float


class Compute(NamedTuple):
    fn: Callable[[], Any]


Flow = Generator[Any, Any, Any]

_HOST = socket.gethostname()


def new_token() -> bytes:
    """A lock owner's token: unique, and readable when a person looks at a held lock."""
    return f"{_HOST}:{os.getpid()}:{os.urandom(8).hex()}".encode()


def backoff(attempt: int, cap: float = 0.05) -> float:
    """Seconds to wait before retry ``attempt`` (0, 1, ...): random, doubling from 1 ms to
    ``cap``, so contending writers spread out instead of colliding again in lockstep."""
    return random.uniform(0, min(0.001 * (2 ** min(attempt, 16)), cap))


def run(store: Any, flow: Flow) -> Any:
    """Drive ``flow`` against the synchronous ``store``; returns what the flow returns.

    An exception from a request is thrown into the flow, so its ``finally`` blocks (a lock's
    release) still run their own requests before the exception propagates.
    """
    try:
        request = next(flow)
        while True:
            try:
                kind = type(request)
                if kind is Call:
                    target = store if request.space == DATA else store.meta
                    result = getattr(target, request.method)(*request.args)
                elif kind is Sleep:
                    time.sleep(request.seconds)
                    result = None
                else:
                    result = request.fn()
            except BaseException as exc:
                request = flow.throw(exc)
                continue
            request = flow.send(result)
    except StopIteration as stop:
        return stop.value


# -- read-modify-write on the store's own keys ----------------------------------------------------


def update(store: Any, key: str, fn: Callable[[Any], Any], default: Any, ttl: Any,
           new_ttl: float | None) -> Flow:
    """``new = fn(current or default)``, written only if the key still holds what was read.

    ``ttl``: seconds, None (no expiry) or KEEP (keep the key's expiry); ``new_ttl`` is used
    instead when the key did not exist. ``fn`` may run more than once; an exception from it
    propagates and nothing is written. Returns ``new``.
    """
    for attempt in itertools.count():
        blob = yield Call(DATA, "raw_get", (key,))
        current = default if blob is MISSING else store.decode(key, blob)
        new = fn(current)
        new_blob = store.encode(key, new)
        if blob is MISSING:
            done = yield Call(DATA, "raw_add", (key, new_blob, new_ttl if ttl is KEEP else ttl))
        else:
            done = yield Call(DATA, "raw_cas", (key, blob, new_blob, ttl))
        if done:
            return new
        yield Sleep(backoff(attempt))


def append(store: Any, key: str, item: Any, ttl: Any, new_ttl: float | None) -> Flow:
    """Append ``item`` to the list at ``key`` (missing: ``[]``); returns the new length."""

    def add_item(current: Any) -> list[Any]:
        if current is MISSING:
            return [item]
        if not isinstance(current, list):
            raise NotAListError(f"append {key!r}: stored value is a {type(current).__name__}, "
                                "not a list; it was left unchanged")
        return [*current, item]

    new = yield from update(store, key, add_item, MISSING, ttl, new_ttl)
    return len(new)


def touch(key: str, ttl: float | None) -> Flow:
    """Give a live key a new expiry (None: none); False when it is missing. For stores without a
    native expire command."""
    for attempt in itertools.count():
        blob = yield Call(DATA, "raw_get", (key,))
        if blob is MISSING:
            return False
        if (yield Call(DATA, "raw_cas", (key, blob, blob, ttl))):
            return True
        yield Sleep(backoff(attempt))


def get_or_set(store: Any, key: str, factory: Callable[[], Any], ttl: float | None,
               lock_ttl: float, timeout: float) -> Flow:
    """The value at ``key``; when missing, one caller (among threads, processes, machines) runs
    ``factory`` and saves its result while the others wait up to ``timeout`` seconds and read it.

    The caller that computes holds the lock ``fill:<key>`` in the lock namespace for at most
    ``lock_ttl`` seconds: if it dies, a waiter takes over once that expires. Raises
    :class:`LockTimeout` when neither the value nor the lock came within ``timeout``.
    """
    blob = yield Call(DATA, "raw_get", (key,))
    if blob is not MISSING:
        return store.decode(key, blob)
    name, token = "fill:" + key, new_token()
    deadline = time.monotonic() + timeout
    for attempt in itertools.count():
        if (yield Call(META, "raw_add", (name, token, lock_ttl))):
            try:
                blob = yield Call(DATA, "raw_get", (key,))  # filled while we took the lock?
                if blob is not MISSING:
                    return store.decode(key, blob)
                value = yield Compute(factory)
                yield Call(DATA, "raw_set", (key, store.encode(key, value), ttl))
                return value
            finally:
                yield Call(META, "raw_cas", (name, token, MISSING, None))
        left = deadline - time.monotonic()
        if left <= 0:
            raise LockTimeout(f"get_or_set {key!r}: another caller has been computing the value "
                              f"for more than {timeout:g}s")
        yield Sleep(min(_poll(attempt), left))
        blob = yield Call(DATA, "raw_get", (key,))
        if blob is not MISSING:
            return store.decode(key, blob)


# -- locks (in the store's lock namespace) ----------------------------------------------------------


def _poll(attempt: int) -> float:
    """How long a waiter sleeps between tries: 1 ms doubling to 50 ms, with jitter."""
    return min(0.001 * (2 ** min(attempt, 6)), 0.05) * random.uniform(0.5, 1.0)


def acquire(name: str, token: bytes, ttl: float, timeout: float | None, blocking: bool) -> Flow:
    """Take lock ``name`` for ``ttl`` seconds; True when taken, False after ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for attempt in itertools.count():
        if (yield Call(META, "raw_add", (name, token, ttl))):
            return True
        if not blocking:
            return False
        wait = _poll(attempt)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            wait = min(wait, left)
        yield Sleep(wait)


def lookup(name: str) -> Flow:
    """True when lock ``name`` is held by anyone."""
    return (yield Call(META, "raw_get", (name,))) is not MISSING


def release(name: str, token: bytes) -> Flow:
    """Delete lock ``name`` only if ``token`` still holds it; True when it did."""
    return (yield Call(META, "raw_cas", (name, token, MISSING, None)))


def extend(name: str, token: bytes, ttl: float) -> Flow:
    """Reset lock ``name`` to expire ``ttl`` seconds from now, if ``token`` still holds it."""
    return (yield Call(META, "raw_cas", (name, token, token, ttl)))
