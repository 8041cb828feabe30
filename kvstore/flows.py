"""Sans-I/O flows: one generator, run on the synchronous store or awaited on the async one.

The store's own operations are written once as asyncio code, with the synchronous twin
generated (:mod:`kvstore.front`); a flow is for code *outside* the store that must offer both
faces from one definition without a generator step of its own: the Django adapter's cache
methods (``get`` / ``aget``...) and the Redis fallback's routing (:mod:`kvstore.stores.fallback`,
:mod:`kvstore.stores.fallback.aio`) are flows.

A flow yields :class:`Call` requests (a store method, by name, with its arguments) or
:class:`Compute` requests (a function to call; on the async runner its result is awaited when it
is awaitable) and is sent their results. :func:`run` drives a flow against a synchronous store;
:func:`kvstore.aio.store.arun` against an async one, awaiting each call. An exception from a
call is thrown into the flow, so its ``finally`` blocks still run their own calls.
"""

from __future__ import annotations

from typing import Any, Callable, Generator, NamedTuple

from .rules import backoff, new_token

__all__ = ["DATA", "META", "Call", "Compute", "Flow", "run", "backoff", "new_token"]

#: Where a :class:`Call` goes: the store itself, or its lock namespace (``store.meta``).
DATA, META = 0, 1


class Call(NamedTuple):
    space: int
    method: str
    args: tuple[Any, ...]


class Compute(NamedTuple):
    fn: Callable[[], Any]


Flow = Generator[Any, Any, Any]


def run(store: Any, flow: Flow) -> Any:
    """Drive ``flow`` against the synchronous ``store``; returns what the flow returns."""
    try:
        request = next(flow)
        while True:
            try:
                if type(request) is Compute:
                    result = request.fn()
                else:
                    target = store if request.space == DATA else store.meta
                    result = getattr(target, request.method)(*request.args)
            except BaseException as exc:
                request = flow.throw(exc)
                continue
            request = flow.send(result)
    except StopIteration as stop:
        return stop.value
