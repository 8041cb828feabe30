"""Operational signals: ``logging`` records to the ``kvstore`` logger, and a hook for telemetry.

kvstore writes a record (never a key's value; URLs masked, as ``kvstore.config.mask_secrets``
does) when something happens that an operator wants to know. Each signal, its logger and level:

- ``fallback`` (``kvstore.fallback``, WARNING): Redis failed, the fallback store serves (once per
  outage);
- ``recovered`` (``kvstore.fallback``, INFO): Redis answers again after an outage;
- ``written_back`` (``kvstore.fallback``, INFO): outage writes written back to Redis;
- ``store_down`` (``kvstore.store``, WARNING): a manager's call found a store unavailable (once,
  until it serves again; not for a store serving from its fallback);
- ``store_up`` (``kvstore.store``, INFO): that store served a call again;
- ``journal_repaired`` (``kvstore.journal``, INFO): interrupted transactions undone;
- ``lock_expired`` (``kvstore.lock``, WARNING): a lock expired before its holder released or
  extended it;
- ``near`` (no record): a near-cache hit or miss, reported by :func:`near`.

Each signal is also handed to the functions given to :func:`subscribe` (that is how
:mod:`kvstore.contrib.otel` counts fallbacks and near-cache hits), as ``fn(signal, attributes)``
with ``attributes`` a dict of short strings and numbers (a store's name or kind, a count).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

__all__ = ["logger", "subscribe", "unsubscribe", "signal", "near"]

#: The parent of kvstore's loggers (``kvstore.fallback``, ``kvstore.store``, ...).
logger = logging.getLogger("kvstore")

_subscribers: list[Callable[[str, dict[str, Any]], Any]] = []

#: signal -> (child logger, level, message: ``%`` formatted with the attributes).
_RECORDS: dict[str, tuple[logging.Logger, int, str]] = {
    "fallback": (logging.getLogger("kvstore.fallback"), logging.WARNING,
                 "%(store)s is unavailable: the fallback store serves reads and blind writes "
                 "(%(error)s)"),
    "recovered": (logging.getLogger("kvstore.fallback"), logging.INFO,
                  "%(store)s answers again: the fallback store is no longer used"),
    "written_back": (logging.getLogger("kvstore.fallback"), logging.INFO,
                     "%(store)s: %(count)s outage write(s) written back from the fallback store"),
    "store_down": (logging.getLogger("kvstore.store"), logging.WARNING,
                   "store %(store)r is unavailable (%(operation)s failed: %(error)s)"),
    "store_up": (logging.getLogger("kvstore.store"), logging.INFO,
                 "store %(store)r serves calls again"),
    "journal_repaired": (logging.getLogger("kvstore.journal"), logging.INFO,
                         "undid %(count)s interrupted transaction(s) recorded in %(journal)s"),
    "lock_expired": (logging.getLogger("kvstore.lock"), logging.WARNING,
                     "lock %(lock)r expired (ttl %(ttl)gs) before it was %(action)s; another "
                     "holder may have had it"),
}


def subscribe(fn: Callable[[str, dict[str, Any]], Any]) -> Callable[[str, dict[str, Any]], Any]:
    """Call ``fn(signal, attributes)`` for every signal from now on; returns ``fn``. A
    subscriber that raises is ignored (it never breaks kvstore's call)."""
    if fn not in _subscribers:
        _subscribers.append(fn)
    return fn


def unsubscribe(fn: Callable[[str, dict[str, Any]], Any]) -> None:
    """Stop calling ``fn``."""
    if fn in _subscribers:
        _subscribers.remove(fn)


def signal(name: str, **attributes: Any) -> None:
    """Report signal ``name``: its log record (if it has one), then every subscriber. An
    ``error`` attribute (an exception) is logged as its type and masked message."""
    from .config import mask_secrets  # (config imports the stores, which import this)

    error = attributes.get("error")
    if isinstance(error, BaseException):
        attributes["error"] = mask_secrets(f"{type(error).__name__}: {error}")
    record = _RECORDS.get(name)
    if record is not None:
        log, level, message = record
        if log.isEnabledFor(level):
            log.log(level, mask_secrets(message % attributes))
    for fn in list(_subscribers):
        try:
            fn(name, attributes)
        except Exception:  # telemetry must never break the application's call
            pass


def near(store: str, hit: bool) -> None:
    """For the near cache: one local read of store ``store`` (its name), a ``hit`` or a miss.
    Cheap when nothing subscribes."""
    if _subscribers:
        signal("near", store=store, hit=hit)
