"""The argument rules and retry timing both fronts share (no I/O, no store).

Durations (:func:`parse_ttl`), paging and timeout checks, a blob's size, and the pauses and
tokens of optimistic retries and locks. The operations in :mod:`kvstore.front` use them on
either front; :mod:`kvstore.store` re-exports the historical names.
"""

from __future__ import annotations

import math
import os
import random
import re
import socket
from typing import Any, Union

from .errors import ConfigError, InvalidArgumentError, InvalidTTLError
from .keyrules import check_key_text

__all__ = ["TTL", "UNSET", "parse_ttl", "check_paging", "check_page", "check_batch",
           "check_timeout", "check_max_entries", "blob_size", "backoff", "poll", "new_token"]

TTL = Union[int, float, str, None]

#: "Not given" for an argument where None means something (a lock's ``timeout``).
UNSET: Any = object()

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_DURATION_FULL = re.compile(r"\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d|w)\s*)+", re.IGNORECASE)


def parse_ttl(ttl: int | float | str, setting: str = "ttl") -> float:
    """Seconds from a number or a duration string (``"90s"``, ``"15m"``, ``"1h30m"``, ``"7d"``).

    A bare number string (``"90"``) is seconds. Raises :class:`InvalidTTLError` (a ``ValueError``)
    for zero, negative, non-finite or unparsable values, naming ``setting``.
    """
    if (type(ttl) is int or type(ttl) is float) and 0 < ttl < math.inf:
        return float(ttl)  # the common case first: a positive, finite number of seconds
    if isinstance(ttl, bool):
        raise InvalidTTLError(f"{setting}: {ttl!r} is not a duration")
    if isinstance(ttl, (int, float)):
        seconds = float(ttl)
    elif isinstance(ttl, str):
        text = ttl.strip()
        try:
            seconds = float(text) if text and text.replace(".", "", 1).isdigit() else math.nan
        except ValueError:  # pragma: no cover - isdigit() guards it
            seconds = math.nan
        if math.isnan(seconds):
            if not _DURATION_FULL.fullmatch(ttl):
                raise InvalidTTLError(f"{setting}: {ttl!r} is not a duration "
                                      "(use seconds or e.g. '90s', '15m', '1h', '7d')")
            seconds = sum(float(n) * _UNITS[u.lower()] for n, u in _DURATION_PART.findall(ttl))
    else:
        raise InvalidTTLError(f"{setting}: {type(ttl).__name__} is not a duration")
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidTTLError(f"{setting}: {ttl!r} must be a positive, finite duration")
    return seconds


def check_reverse(reverse: Any) -> None:
    if not isinstance(reverse, bool):
        raise InvalidArgumentError(f"reverse must be a bool, got {reverse!r}")


def check_paging(start_after: Any, limit: Any, reverse: Any = False) -> None:
    """``keys()``' paging arguments: ``start_after`` a key text or None, ``limit`` None or >= 0,
    ``reverse`` a bool."""
    check_reverse(reverse)
    if start_after is not None:
        if not isinstance(start_after, str):
            raise InvalidArgumentError(f"start_after must be a str or None, got {start_after!r}")
        check_key_text(start_after, "start_after")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidArgumentError(f"limit must be None or an int >= 0, got {limit!r}")


def check_page(after: Any, limit: Any, reverse: Any = False) -> None:
    """A log read's paging arguments: ``after`` an int >= 0, ``limit`` None or an int >= 0,
    ``reverse`` a bool."""
    check_reverse(reverse)
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise InvalidArgumentError(f"after must be an int >= 0, got {after!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidArgumentError(f"limit must be None or an int >= 0, got {limit!r}")


def check_batch(batch: Any) -> None:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InvalidArgumentError(f"batch must be an int >= 1, got {batch!r}")


def check_timeout(timeout: Any, setting: str = "timeout") -> float | None:
    """``timeout`` as seconds (None: wait as long as it takes)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise InvalidArgumentError(f"{setting}: must be None or seconds >= 0, got {timeout!r}")
    return float(timeout)


def check_max_entries(value: Any) -> int | None:
    """``max_entries`` as given, or ConfigError: a positive int, or None for no bound."""
    if value is not None and (type(value) is not int or value < 1):
        raise ConfigError(f"max_entries: must be a positive int or None, got {value!r}")
    return value


def blob_size(store: Any, blob: Any) -> int | None:
    """Bytes ``blob`` (what ``store`` writes for a value) takes; None for a store that keeps
    objects as they are. A text blob (the file store's JSON) counts its UTF-8 bytes."""
    if store.serializer is None:
        return None
    if isinstance(blob, str) and not blob.isascii():
        return len(blob.encode())
    return len(blob)


_HOST = socket.gethostname()


def new_token() -> bytes:
    """A lock owner's token: unique, and readable when a person looks at a held lock."""
    return f"{_HOST}:{os.getpid()}:{os.urandom(8).hex()}".encode()


def backoff(attempt: int, cap: float = 0.05) -> float:
    """Seconds to wait before retry ``attempt`` (0, 1, ...): random, doubling from 1 ms to
    ``cap``, so contending writers spread out instead of colliding again in lockstep."""
    return random.uniform(0, min(0.001 * (2 ** min(attempt, 16)), cap))


def poll(attempt: int) -> float:
    """How long a lock's waiter sleeps between tries: 1 ms doubling to 50 ms, with jitter."""
    return min(0.001 * (2 ** min(attempt, 6)), 0.05) * random.uniform(0.5, 1.0)
