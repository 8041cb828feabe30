"""OpenTelemetry for kvstore: a span and metrics for each store operation and transaction commit.

Install the extra (``pip install kvstore[otel]``: the OpenTelemetry API; your application brings
the SDK and its exporters), then, once at start-up::

    from kvstore.contrib.otel import instrument
    instrument()                      # the global tracer and meter providers
    instrument(tracer_provider=tp, meter_provider=mp)   # or your own
    ...
    uninstrument()                    # back to no telemetry

From then on every operation of a :class:`~kvstore.PersistenceManager`, of a
:class:`~kvstore.aio.AsyncPersistenceManager`, of a plain store (synchronous or async) and of a
log, and every transaction commit, is one ``CLIENT`` span named ``kvstore.<operation>``
(``kvstore.save``, ``kvstore.load_many``, ``kvstore.commit``, ``kvstore.log_append``...). A
manager's call is one span: the store calls it makes inside are not spans of their own. Not
traced: the listings read lazily (``keys()``, ``items()``, ``logs()``: the ``load_many`` calls of
``items()`` are), locks, backups and restores.

Span and metric attributes (never a key, a value, a log record or a URL):

- ``kvstore.operation``: the call (``save``, ``load``, ``incr``, ``commit``...);
- ``kvstore.store``: the manager's name of the store (``cache``, ``database``...), when the call
  goes to one store; ``kvstore.store.kind``: its backend (``redis``, ``sqlite``, ``fallback``...);
- ``kvstore.category``: the key's category, when it is a configured one (a manager's call);
- ``kvstore.outcome``: ``ok``, ``miss`` (``load`` found nothing; ``exists``, ``delete`` or
  ``touch`` answered False) or the error's type (``StoreUnavailableError``...); an error also
  sets the span's status to ERROR, described by its type alone (messages name keys);
- ``kvstore.keys``: how many keys a batch call (``*_many``) was given.

Metrics (meter ``kvstore``): ``kvstore.operations`` (counter), ``kvstore.errors`` (counter),
``kvstore.operation.duration`` (histogram, seconds), ``kvstore.fallbacks`` (counter: a Redis
outage began and the fallback store serves), ``kvstore.near_cache`` (counter, ``kvstore.result``
``hit`` or ``miss``: what the near cache reports through :func:`kvstore.observe.near`).

Instrumenting wraps the public methods of kvstore's classes (as OpenTelemetry's own
instrumentations do for their libraries), so managers and stores made before or after the call
are both traced; :func:`uninstrument` puts the methods back.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import time
import weakref
from typing import Any, Callable, Iterable

from opentelemetry import context, metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import __version__, observe, registry

__all__ = ["instrument", "uninstrument", "is_instrumented"]

#: The manager's single-key operations: the position of their ``store`` argument (after self).
_MANAGER_OPS = {"save": 3, "load": 2, "delete": 1, "exists": 1, "ttl": 1, "touch": 2,
                "incr": 2, "add": 3, "update": 4, "append": 3, "get_or_set": 3}
#: Batch operations (their first argument: keys, or a mapping of items) and ``clear``.
_MANAGER_BATCHES = {"load_many": 1, "save_many": 2, "delete_many": 1}
_STORE_OPS = ("save", "load", "delete", "exists", "ttl", "touch", "incr", "add", "update",
              "append", "get_or_set", "load_many", "save_many", "delete_many", "clear")
#: Operations whose False answer is a "miss".
_FALSE_IS_MISS = ("exists", "delete", "touch")

_inside = contextvars.ContextVar("kvstore_otel_inside", default=False)
_MISS = object()


class _Telemetry:
    """The tracer and instruments of one :func:`instrument` call."""

    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        self.tracer = trace.get_tracer("kvstore", __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter("kvstore", __version__, meter_provider=meter_provider)
        self.operations = meter.create_counter(
            "kvstore.operations", unit="{operation}", description="kvstore operations")
        self.errors = meter.create_counter(
            "kvstore.errors", unit="{error}", description="kvstore operations that raised")
        self.duration = meter.create_histogram(
            "kvstore.operation.duration", unit="s", description="kvstore operation latency")
        self.fallbacks = meter.create_counter(
            "kvstore.fallbacks", unit="{outage}",
            description="Redis outages during which the fallback store served")
        self.near_cache = meter.create_counter(
            "kvstore.near_cache", unit="{read}", description="near-cache hits and misses")

    def signal(self, name: str, attributes: dict[str, Any]) -> None:
        """An :mod:`kvstore.observe` signal: the counters that are not operations."""
        if name == "fallback":
            self.fallbacks.add(1, {"kvstore.store.kind": str(attributes.get("kind", ""))})
        elif name == "near":
            self.near_cache.add(1, {"kvstore.store": str(attributes.get("store", "")),
                                    "kvstore.result": "hit" if attributes.get("hit") else "miss"})

    def start(self, operation: str, attributes: dict[str, Any]) -> tuple[Any, Any, float]:
        span = self.tracer.start_span(f"kvstore.{operation}", kind=SpanKind.CLIENT,
                                      attributes=attributes)
        # Current while it runs: spans made inside (a driver's, a factory's calls) are its children.
        token = (_inside.set(True), context.attach(trace.set_span_in_context(span)))
        return span, token, time.perf_counter()

    def end(self, started: tuple[Any, Any, float], attributes: dict[str, Any],
            outcome: str, error: BaseException | None = None) -> None:
        span, (inside, current), start = started
        context.detach(current)
        _inside.reset(inside)
        took = time.perf_counter() - start
        attributes["kvstore.outcome"] = outcome
        span.set_attribute("kvstore.outcome", outcome)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            self.errors.add(1, attributes)
        span.end()
        self.operations.add(1, attributes)
        self.duration.record(took, attributes)


_state: dict[str, Any] = {"telemetry": None, "patched": []}


def _kind(store: Any) -> str:
    store = getattr(store, "sync", store)  # an async face: its synchronous twin's backend
    backend = registry.for_store(store)
    return backend.name if backend is not None else type(store).__name__


def _outcome(operation: str, result: Any) -> str:
    if result is _MISS or (result is False and operation in _FALSE_IS_MISS):
        return "miss"
    return "ok"


# -- what a call is about (attributes), per kind of object --------------------------------------


def _manager_attributes(pm: Any, operation: str, args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> dict[str, Any]:
    """Store name, kind and category of a manager's call, from its arguments and the
    manager's routing rules (a category's store, else ``default_store``)."""
    attributes: dict[str, Any] = {"kvstore.operation": operation}
    position = _MANAGER_OPS.get(operation) or _MANAGER_BATCHES.get(operation) or 1
    store = kwargs.get("store", args[position] if len(args) > position else None)
    if operation in _MANAGER_BATCHES:
        keys = list(args[0]) if args else []
        attributes["kvstore.keys"] = len(keys)
    elif operation == "clear":  # a prefix with ':' is in one category; else every store
        keys = [args[0]] if args and isinstance(args[0], str) and ":" in args[0] else []
    else:
        keys = list(args[:1])
    categories = frozenset(key.partition(":")[0] if ":" in key else "" for key in keys
                           if isinstance(key, str))
    attributes.update(_routed(pm, categories, store if isinstance(store, str) else None))
    return attributes


#: manager -> {(categories, store argument): (the store, its attributes)}: routing attributes
#: are worked out once per category (checked against ``pm.stores``, which may be reassigned).
_routes: "weakref.WeakKeyDictionary[Any, dict[Any, tuple[Any, dict[str, Any]]]]" = \
    weakref.WeakKeyDictionary()


def _routed(pm: Any, categories: frozenset[str], store: str | None) -> dict[str, Any]:
    cache = _routes.get(pm)
    if cache is None:
        cache = _routes.setdefault(pm, {})
    found = cache.get((categories, store))
    if found is not None:
        name = found[1].get("kvstore.store")
        if name is None or pm.stores.get(name) is found[0]:
            return found[1]
    config = pm.config
    attributes: dict[str, Any] = {}
    if len(categories) == 1 and categories <= config.categories.keys():
        attributes["kvstore.category"] = next(iter(categories))
    if store is None and categories:
        routed = {config.categories[c].store if c in config.categories
                  else config.default_store for c in categories}
        store = routed.pop() if len(routed) == 1 else None
    target = pm.stores.get(store) if store is not None else None
    if target is not None:
        attributes["kvstore.store"] = store
        attributes["kvstore.store.kind"] = _kind(target)
    if len(cache) >= 1024:  # unconfigured categories are unbounded
        cache.clear()
    cache[(categories, store)] = (target, attributes)
    return attributes


def _store_attributes(store: Any, operation: str, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {"kvstore.operation": operation, "kvstore.store.kind": _kind(store)}
    if operation in ("load_many", "save_many", "delete_many"):
        attributes["kvstore.keys"] = len(args[0]) if args else 0
    return attributes


def _log_attributes(log: Any, operation: str, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"kvstore.operation": operation, "kvstore.store.kind": _kind(log.store)}


def _commit_attributes(tx: Any, operation: str, args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"kvstore.operation": "commit"}


#: The calls that are not traced inside another traced call.
_NESTED_QUIET = (_store_attributes, _log_attributes)


# -- wrapping -------------------------------------------------------------------------------------


def _prepared(operation: str, args: tuple[Any, ...], kwargs: dict[str, Any]
              ) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
    """The call's arguments, with a batch's keys read once into a list (a generator is read by
    the attributes and the call alike) and ``load``'s default replaced by a marker, so that a
    miss is told from a stored value; and the caller's default."""
    if operation in ("load_many", "delete_many") and args and not isinstance(args[0], list):
        args = (list(args[0]),) + args[1:]
    default = None
    if operation == "load":
        if len(args) >= 2:
            default, args = args[1], (args[0], _MISS) + args[2:]
        else:
            default = kwargs.get("default")
            kwargs = {**kwargs, "default": _MISS}
    return args, kwargs, default


class _Call:
    """One traced call: its (prepared) arguments, attributes and open span."""

    def __init__(self, telemetry: _Telemetry, operation: str, describe: Callable[..., Any],
                 obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.telemetry, self.operation = telemetry, operation
        self.args, self.kwargs, self.default = _prepared(operation, args, kwargs)
        self.attributes = describe(obj, operation, self.args, self.kwargs)
        self.started = telemetry.start(operation, self.attributes)

    def failed(self, exc: BaseException) -> None:
        self.telemetry.end(self.started, self.attributes, type(exc).__name__, exc)

    def done(self, result: Any) -> Any:
        self.telemetry.end(self.started, self.attributes, _outcome(self.operation, result))
        return self.default if result is _MISS else result


def _begin(operation: str, describe: Callable[..., Any], obj: Any, args: tuple[Any, ...],
           kwargs: dict[str, Any]) -> _Call | None:
    """The traced call, or None when it is not traced: not instrumented, or a store's (or a
    log's) call made inside a traced call (a manager's call to its store). A manager's call is
    always traced, also from inside another one (``get_or_set``'s factory may load)."""
    telemetry = _state["telemetry"]
    if telemetry is None or (_inside.get() and describe in _NESTED_QUIET):
        return None
    return _Call(telemetry, operation, describe, obj, args, kwargs)


def _wrap(original: Callable[..., Any], operation: str,
          describe: Callable[..., dict[str, Any]]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(original):
        @functools.wraps(original)
        async def traced_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            call = _begin(operation, describe, self, args, kwargs)
            if call is None:
                return await original(self, *args, **kwargs)
            try:
                result = await original(self, *call.args, **call.kwargs)
            except BaseException as exc:
                call.failed(exc)
                raise
            return call.done(result)

        return traced_async

    @functools.wraps(original)
    def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = _begin(operation, describe, self, args, kwargs)
        if call is None:
            return original(self, *args, **kwargs)
        try:
            result = original(self, *call.args, **call.kwargs)
        except BaseException as exc:
            call.failed(exc)
            raise
        return call.done(result)

    return traced


def _targets() -> Iterable[tuple[type, str, str, Callable[..., dict[str, Any]]]]:
    """(class, method, operation, attributes) of everything traced."""
    from .. import PersistenceManager, PersistenceStore
    from ..aio import AsyncPersistenceManager, AsyncStore, AsyncTransaction
    from ..alocks import AsyncLog
    from ..front.transaction_sync import Transaction
    from ..logs import Log

    for manager in (PersistenceManager, AsyncPersistenceManager):
        for op in (*_MANAGER_OPS, *_MANAGER_BATCHES, "clear"):
            yield manager, op, op, _manager_attributes
    for base in (PersistenceStore, AsyncStore):
        for store in _with_subclasses(base):
            for op in _STORE_OPS:
                if store is base or op in store.__dict__:  # a store's own fast path (memory)
                    yield store, op, op, _store_attributes
    for log in (Log, AsyncLog):
        yield log, "append", "log_append", _log_attributes
        yield log, "read", "log_read", _log_attributes
    for tx in (Transaction, AsyncTransaction):
        yield tx, "commit", "commit", _commit_attributes


def _with_subclasses(cls: type) -> list[type]:
    found, todo = [], [cls]
    while todo:
        klass = todo.pop()
        if klass not in found:
            found.append(klass)
            todo.extend(klass.__subclasses__())
    return found


def instrument(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Trace and measure every kvstore operation from now on (see the module's documentation),
    with ``tracer_provider`` / ``meter_provider`` (None: OpenTelemetry's global ones). Calling
    it again switches to the new providers."""
    telemetry = _Telemetry(tracer_provider, meter_provider)
    old = _state["telemetry"]
    if old is not None:
        observe.unsubscribe(old.signal)
    _state["telemetry"] = telemetry
    observe.subscribe(telemetry.signal)
    if _state["patched"]:
        return
    for cls, method, operation, describe in _targets():
        own = cls.__dict__.get(method)
        _state["patched"].append((cls, method, own))
        setattr(cls, method, _wrap(getattr(cls, method), operation, describe))


def uninstrument() -> None:
    """Stop tracing: the wrapped methods are put back."""
    telemetry = _state["telemetry"]
    if telemetry is not None:
        observe.unsubscribe(telemetry.signal)
    _state["telemetry"] = None
    for cls, method, own in reversed(_state["patched"]):
        if own is None:
            delattr(cls, method)
        else:
            setattr(cls, method, own)
    _state["patched"] = []


def is_instrumented() -> bool:
    """Whether :func:`instrument` is in effect."""
    return _state["telemetry"] is not None
