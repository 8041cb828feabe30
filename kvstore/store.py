"""The store interface: :class:`PersistenceStore`, and the TTL and key rules every store shares.

Stores move bytes; this base does the rest. The public methods validate keys, resolve TTLs,
serialize, and call a few small byte-level methods that each store implements:

- ``_get``, ``_set``, ``_delete``, ``_keys``, ``_ttl``, ``_incr``, ``_clear``;
- ``_committing(ops, checks)``: apply writes atomically if the checked keys still hold the
  expected blobs (transactions, and the default ``_add`` / ``_cas``);
- ``_open_meta()``: the store's lock namespace, a sibling store invisible to ``keys()``.

and may replace defaults with native versions: ``_add`` (set-if-absent), ``_cas``
(compare-and-swap, also delete-if-equal), ``_touch``, ``_exists``, and the batch methods
``_get_many``, ``_set_many``, ``_delete_many``. ``update``, ``append``, ``get_or_set`` and locks
are written once, in :mod:`kvstore.flows`, on top of ``_get``, ``_add`` and ``_cas``.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Union

from . import flows
from ._marks import KEEP, MISSING, Check, Op
from .errors import (ConfigError, ConflictError, CorruptDataError, InvalidArgumentError,
                     InvalidTTLError, NotAnIntegerError, SerializationError)
from .keyrules import check_key, check_key_text
from .locking import Lock, check_timeout

if TYPE_CHECKING:
    from ._commit import Before
    from .logs import Log
from .serializers import HEADER_BYTE, Serializer, SerializerSpec

__all__ = ["PersistenceStore", "parse_ttl", "TTL", "MISSING", "KEEP", "Op", "Check",
           "prefix_upper_bound", "decode_stored", "conflict", "same_blob"]

TTL = Union[int, float, str, None]

_META_LOCK = threading.Lock()

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_DURATION_FULL = re.compile(r"\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d|w)\s*)+", re.IGNORECASE)


def parse_ttl(ttl: int | float | str, setting: str = "ttl") -> float:
    """Seconds from a number or a duration string (``"90s"``, ``"15m"``, ``"1h30m"``, ``"7d"``).

    A bare number string (``"90"``) is seconds. Raises :class:`InvalidTTLError` (a ``ValueError``)
    for zero, negative, non-finite or unparsable values, naming ``setting``.
    """
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


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None: no bound).

    Lets a literal prefix match use a primary-key range (``key >= p AND key < bound``) instead of
    ``LIKE``, where ``%`` and ``_`` would be wildcards.
    """
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # skip surrogates: they cannot be stored as UTF-8
                nxt = 0xE000
            return prefix[:-1] + chr(nxt)
        prefix = prefix[:-1]
    return None


def decode_stored(key: str, blob: Any, serializer: Serializer) -> Any:
    """The value of a stored blob: a headered serializer blob, or an integer counter's digits."""
    if blob[:1] == HEADER_BYTE:
        try:
            return serializer.deserialize(blob)
        except CorruptDataError as exc:
            raise CorruptDataError(f"key {key!r}: {exc}") from exc
        except SerializationError as exc:
            raise SerializationError(f"key {key!r}: {exc}") from exc
    try:
        text = blob.decode("ascii") if isinstance(blob, (bytes, bytearray)) else str(blob)
        if text.lstrip("-").isdigit():
            return int(text)
    except (UnicodeDecodeError, ValueError):
        pass
    raise CorruptDataError(f"key {key!r}: stored data has no kvstore header and is not an "
                           "integer counter")


def check_paging(start_after: Any, limit: Any) -> None:
    if start_after is not None:
        if not isinstance(start_after, str):
            raise InvalidArgumentError(f"start_after must be a str or None, got {start_after!r}")
        check_key_text(start_after, "start_after")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidArgumentError(f"limit must be None or an int >= 0, got {limit!r}")


def check_max_entries(value: Any) -> int | None:
    """``max_entries`` as given, or ConfigError: a positive int, or None for no bound."""
    if value is not None and (type(value) is not int or value < 1):
        raise ConfigError(f"max_entries: must be a positive int or None, got {value!r}")
    return value


def conflict(key: str) -> ConflictError:
    """The error a commit raises when a checked key no longer holds what was read."""
    return ConflictError(f"key {key!r} was changed by another writer since it was read; "
                         "nothing was written")


def same_blob(current: Any, expected: Any) -> bool:
    """Whether ``current`` (what a key holds now) is still the blob ``expected`` that was read.

    Bytes are compared by value; anything else (a MemoryStore without serializer stores the
    objects themselves) by identity, since the store only ever replaces an object, never
    changes it.
    """
    if current is expected:
        return True
    return isinstance(expected, _BYTES) and isinstance(current, _BYTES) and current == expected


_BYTES = (bytes, bytearray, memoryview, str)


def blob_size(store: "PersistenceStore", blob: Any) -> int | None:
    """Bytes ``blob`` (what ``store`` writes for a value) takes; None for a store that keeps
    objects as they are. A text blob (the file store's JSON) counts its UTF-8 bytes."""
    if store.serializer is None:
        return None
    if isinstance(blob, str) and not blob.isascii():
        return len(blob.encode())
    return len(blob)


class PersistenceStore(ABC):
    """A key-value store with TTLs. Every store has the same methods and semantics.

    Keys are non-empty ``str``; values are anything the store's serializer encodes. ``ttl`` is
    seconds or a duration string; ``None`` means the store's ``ttl_default`` (itself ``None`` =
    permanent). Use as a context manager to close it::

        with SQLiteStore(path="app.db") as store:
            store.save("session:1", {"user": "ann"}, ttl="15m")
    """

    #: Whether data survives a restart of the process (backups, snapshots use it).
    durable: bool = True

    def __init__(self, *, ttl_default: TTL = None, serializer: SerializerSpec | None = "json",
                 secret: bytes | str | None = None) -> None:
        self.ttl_default: float | None = (
            None if ttl_default is None else parse_ttl(ttl_default, "ttl_default"))
        self.serializer: Serializer | None = (
            None if serializer is None else Serializer.resolve(serializer, secret))

    # -- helpers shared by every store ---------------------------------------------------------

    #: True for a store that encodes values its own way (overrides ``encode`` and ``decode``:
    #: the file store's plain JSON files): the batch paths then go value by value through them.
    own_encoding = False

    #: Raise InvalidKeyError unless every store can hold ``key`` (the rule of kvstore.keyrules);
    #: a store with limits of its own (the file store's paths) calls it first, then adds them.
    check_key = staticmethod(check_key)

    def resolve_ttl(self, ttl: TTL) -> float | None:
        if ttl is None:
            return self.ttl_default
        return parse_ttl(ttl)

    def encode(self, key: str, value: Any) -> Any:
        """The bytes stored for ``value``. Integers are stored as ASCII digits, so that ``incr``
        is one native operation everywhere (``INCRBY``, one SQL statement)."""
        serializer = self.serializer
        if serializer is None:
            return value
        if type(value) is int:
            return b"%d" % value
        try:
            return serializer.serialize(value)
        except SerializationError as exc:
            raise SerializationError(f"key {key!r}: {exc}; nothing was written") from exc.__cause__

    def decode(self, key: str, blob: Any) -> Any:
        serializer = self.serializer
        if serializer is None:
            return blob
        return decode_stored(key, blob, serializer)

    def check_amount(self, key: str, amount: Any) -> None:
        if type(amount) is not int:
            raise NotAnIntegerError(f"incr {key!r}: amount must be an int, got {amount!r}")

    def _next_count(self, key: str, blob: Any, expires: float | None, now: float,
                    amount: int, ttl: float | None) -> tuple[int, Any, float | None]:
        """The read-modify-write step of ``incr`` for stores that hold a lock around it:
        ``(new value, its blob, expiry)`` from the current blob (MISSING: start at 0, expiring
        ``ttl`` seconds from now; an existing key keeps its expiry)."""
        if blob is MISSING:
            current = 0
            expires = None if ttl is None else now + ttl
        else:
            current = self.decode(key, blob)
            if type(current) is not int:
                raise NotAnIntegerError(f"incr {key!r}: stored value is a "
                                        f"{type(current).__name__}, not an int")
        new = current + amount
        return new, self.encode(key, new), expires

    def check_prefix(self, prefix: Any) -> None:
        check_key_text(prefix, "prefix")

    # -- the public interface ------------------------------------------------------------------

    def save(self, key: str, value: Any, ttl: TTL = None) -> bool:
        """Store ``value`` under ``key`` (replacing any value) for ``ttl``. Returns True.

        Raises:
            InvalidKeyError / InvalidTTLError (both ``ValueError``), SerializationError (nothing
            is written), StoreUnavailableError.
        """
        self.check_key(key)
        seconds = self.resolve_ttl(ttl)
        self.raw_set(key, self.encode(key, value), seconds)
        return True

    def save_sized(self, key: str, value: Any, ttl: TTL = None) -> int | None:
        """:meth:`save`, returning the bytes written (None: the store keeps objects as they are),
        for a ``save`` event's ``size``: the value is encoded once, and what is measured is
        exactly what was written."""
        if type(self).save is not PersistenceStore.save:  # a subclass's own save: run it as is
            self.save(key, value, ttl)
            return None
        self.check_key(key)
        seconds = self.resolve_ttl(ttl)
        blob = self.encode(key, value)
        self.raw_set(key, blob, seconds)
        return blob_size(self, blob)

    def load(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default`` when it is missing or expired."""
        self.check_key(key)
        blob = self.raw_get(key)
        if blob is MISSING:
            return default
        return self.decode(key, blob)

    def delete(self, key: str) -> bool:
        """Remove ``key``; True when a live key existed."""
        self.check_key(key)
        return self.raw_delete(key)

    def exists(self, key: str) -> bool:
        """True when ``key`` holds a live (unexpired) value."""
        self.check_key(key)
        return self.raw_exists(key)

    def keys(self, prefix: str = "", start_after: str | None = None,
             limit: int | None = None) -> Iterator[str]:
        """Live keys starting with ``prefix`` (matched literally: ``%``, ``*``... are plain),
        sorted. Pages: ``start_after`` (the last key of the previous page) and ``limit``."""
        self.check_prefix(prefix)
        check_paging(start_after, limit)
        found = self.raw_keys(prefix) if start_after is None else self.raw_keys_after(prefix, start_after)
        return found if limit is None else itertools.islice(found, limit)

    def items(self, prefix: str = "", start_after: str | None = None, limit: int | None = None,
              batch: int = 500) -> Iterator[tuple[str, Any]]:
        """``(key, value)`` for the live keys starting with ``prefix``, sorted by key, loaded
        ``batch`` at a time (one round trip each); paged like :meth:`keys`."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InvalidArgumentError(f"batch must be an int >= 1, got {batch!r}")
        keys = self.keys(prefix, start_after, limit)
        while True:
            chunk = list(itertools.islice(keys, batch))
            if not chunk:
                return
            found = self.decode_many(self.raw_get_many(chunk))
            for key in chunk:
                if key in found:  # deleted or expired meanwhile: left out
                    yield key, found[key]

    def raw_rows(self, prefix: str, after: str | None, limit: int) -> list[tuple[str, Any, float | None]]:
        """One page of stored rows, sorted by key: ``(key, blob, ttl)`` for up to ``limit`` keys
        with ``prefix`` after ``after``; a row whose blob is MISSING (expired, deleted) still
        moves the page on. Exports, backups and migrations stream through this; stores that
        can read key and value in one query do."""
        keys = list(itertools.islice(
            self.raw_keys(prefix) if after is None else self.raw_keys_after(prefix, after), limit))
        return self.raw_snapshot(keys)

    raw_rows.lists_every_key = True  # type: ignore[attr-defined]  # see kvstore.rows.iter_rows

    def raw_put_rows(self, rows: list[tuple[str, Any, float | None]]) -> None:
        """Bulk write ``(key, blob, ttl)`` rows atomically (imports, migrations, restores);
        stores with a faster bulk path than a transaction (PostgreSQL's COPY) override it."""
        self.raw_apply(rows)

    def raw_keys_after(self, prefix: str, start_after: str) -> Iterator[str]:
        """Live keys with ``prefix`` sorting after ``start_after`` (stores that page by key
        start there instead of skipping)."""
        return itertools.dropwhile(lambda k: k <= start_after, self.raw_keys(prefix))

    def save_many(self, items: Mapping[str, Any], ttl: TTL = None) -> None:
        """Store every item in one round trip / one transaction, all with the same ``ttl``.

        Every key is checked and every value encoded before anything is written.
        """
        encoded, seconds = self.encoded_items(items, ttl)
        if encoded:
            self.raw_set_many(encoded, seconds)

    def load_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """``{key: value}`` for the keys found (missing and expired keys are left out)."""
        wanted = self.checked_keys(keys)
        return self.decode_many(self.raw_get_many(wanted)) if wanted else {}

    def decode_many(self, found: Mapping[str, Any]) -> dict[str, Any]:
        """``_decode`` over a batch of ``{key: blob}``: blobs in the serializer's own plain
        format go straight to its body decoder; any other blob (a counter's digits, another
        format, a damaged one) takes the one-value path, whose errors name the key."""
        serializer = self.serializer
        if (serializer is None or self.own_encoding
                or (shortcut := serializer.body_decoder()) is None):
            decode_one = self.decode  # no serializer, its own (the file store's JSON), pickle
            return {key: decode_one(key, blob) for key, blob in found.items()}
        head, body = shortcut
        values = {}
        for key, blob in found.items():
            if blob[:3] == head:
                try:
                    values[key] = body(blob[3:])
                    continue
                except Exception:
                    pass
            values[key] = decode_stored(key, blob, serializer)
        return values

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete the keys; returns how many live keys existed."""
        wanted = self.checked_keys(keys)
        return self.raw_delete_many(wanted) if wanted else 0

    def encoded_items(self, items: Mapping[str, Any], ttl: TTL
                       ) -> tuple[list[tuple[str, Any]], float | None]:
        """``save_many``'s checks: every key checked and value encoded, and the TTL."""
        seconds = self.resolve_ttl(ttl)
        check, serializer = self.check_key, self.serializer
        # check() returns None or raises: the conditions below only run it, in the same pass.
        if serializer is not None and not self.own_encoding:
            encode = serializer.batch_encoder()
            try:  # integers are ASCII digits, as in _encode
                return [(key, b"%d" % value if type(value) is int else encode(value))
                        for key, value in items.items() if check(key) is None], seconds
            except SerializationError:
                pass  # again, one value at a time, so that the error names the key
        # Also a store with its own encoding (the file store's JSON), or none (memory).
        encode_one = self.encode
        return [(key, encode_one(key, value)) for key, value in items.items()
                if check(key) is None], seconds

    def checked_keys(self, keys: Iterable[str]) -> list[str]:
        """The distinct keys, in order, each checked."""
        wanted = list(dict.fromkeys(keys))
        for key in wanted:
            self.check_key(key)
        return wanted

    def ttl(self, key: str) -> float | None:
        """Seconds left before ``key`` expires; None when it has no expiry or does not exist."""
        self.check_key(key)
        return self.raw_ttl(key)

    def incr(self, key: str, amount: int = 1) -> int:
        """Add ``amount`` to the integer at ``key`` atomically (also across processes).

        A missing key starts at 0 and gets the store's ``ttl_default``; an existing key keeps its
        TTL. Raises :class:`NotAnIntegerError` when the stored value is not an integer.
        """
        self.check_key(key)
        self.check_amount(key, amount)
        return self.raw_incr(key, amount, self.ttl_default)

    def clear(self, prefix: str = "") -> int:
        """Remove every key starting with ``prefix``; returns how many live keys were removed."""
        self.check_prefix(prefix)
        return self.raw_clear(prefix)

    # -- atomic operations (safe across threads, processes and, on servers, machines) -----------

    def add(self, key: str, value: Any, ttl: TTL = None) -> bool:
        """Store ``value`` only if ``key`` is missing (an expired key is missing).

        Returns True when it was written, False when the key already held a value.
        """
        self.check_key(key)
        seconds = self.resolve_ttl(ttl)
        return bool(self.raw_add(key, self.encode(key, value), seconds))

    def update(self, key: str, fn: Callable[[Any], Any], default: Any = None,
               ttl: TTL = None) -> Any:
        """Atomically replace the value with ``fn(current)`` (``fn(default)`` when missing) and
        return the new value. No concurrent write is ever lost.

        ``fn`` may run more than once (another writer got there first: it is called again with
        the newer value), so keep it pure and do not modify its argument in place. ``fn``
        raising writes nothing and propagates. ``ttl=None`` keeps the key's remaining TTL (a new
        key gets ``ttl_default``).

        >>> store.update("visits:ann", lambda v: v + 1, default=0)     # doctest: +SKIP
        """
        return self._update(key, fn, default, ttl, self.ttl_default)

    def _update(self, key: str, fn: Callable[[Any], Any], default: Any, ttl: TTL,
                new_ttl: float | None) -> Any:
        self.check_key(key)
        if not callable(fn):
            raise InvalidArgumentError(f"update {key!r}: fn must be callable, got {fn!r}")
        seconds = KEEP if ttl is None else parse_ttl(ttl)
        return flows.run(self, flows.update(self, key, fn, default, seconds, new_ttl))

    def append(self, key: str, item: Any, ttl: TTL = None) -> int:
        """Atomically append ``item`` to the list at ``key`` (missing: ``[]``); returns the new
        length. A value that is not a list raises :class:`NotAListError` and is left unchanged.
        ``ttl=None`` keeps the key's remaining TTL (a new key gets ``ttl_default``).

        The whole list is rewritten each time; for long append-only records use a log.
        """
        return self._append(key, item, ttl, self.ttl_default)

    def _append(self, key: str, item: Any, ttl: TTL, new_ttl: float | None) -> int:
        self.check_key(key)
        seconds = KEEP if ttl is None else parse_ttl(ttl)
        return int(flows.run(self, flows.append(self, key, item, seconds, new_ttl)))

    def touch(self, key: str, ttl: TTL = None) -> bool:
        """Give an existing key a new TTL (``None``: the store's ``ttl_default``, which may be
        "no expiry"); False when the key is missing."""
        self.check_key(key)
        return bool(self.raw_touch(key, self.resolve_ttl(ttl)))

    def get_or_set(self, key: str, factory: Callable[[], Any], ttl: TTL = None, *,
                   lock_ttl: float | str = 30.0, timeout: float | None = None) -> Any:
        """The value at ``key``; when missing, ``factory()`` computes it, it is saved with
        ``ttl``, and returned. Among concurrent callers of one key (threads, processes,
        machines) the factory runs once: the others wait and read its result (no stampede).

        Args:
            lock_ttl: the computing caller holds a lock this long at most; if it dies, a waiter
                computes instead once it expires.
            timeout: how long a waiter waits for the value (default: ``lock_ttl``), then
                :class:`LockTimeout`.

        A factory that raises saves nothing and propagates; a waiter then computes in turn.
        """
        self.check_key(key)
        if not callable(factory):
            raise InvalidArgumentError(f"get_or_set {key!r}: factory must be callable")
        hold = parse_ttl(lock_ttl, "lock_ttl")
        wait = check_timeout(timeout)
        return flows.run(self, flows.get_or_set(self, key, factory, self.resolve_ttl(ttl), hold,
                                                hold if wait is None else wait))

    def lock(self, name: str, ttl: float | str = 30.0, timeout: float | None = None) -> Lock:
        """A lock named ``name``, shared by everyone using this store::

            with store.lock("nightly-report", ttl=60, timeout=5):
                ...

        ``ttl``: it expires by itself after this long (a crashed holder blocks no one for
        longer). ``timeout``: ``with`` waits this long, then raises :class:`LockTimeout`
        (None: as long as it takes). Locks live apart from the keys: ``keys()`` and ``clear()``
        never see them, and a lock may share its name with a key.
        """
        self.check_key(name)
        return Lock(self, name, parse_ttl(ttl, "lock ttl"), check_timeout(timeout))

    # -- logs (append-only records; see kvstore.logs) ----------------------------------------------

    def log(self, name: str) -> "Log":
        """The append-only log ``name``: ``log.append(record) -> seq``, ``log.read(after,
        limit)``, ``len(log)``, ``log.delete()``. Logs live apart from the keys."""
        from .logs import Log

        return Log(self, name)

    def logs(self, prefix: str = "") -> Iterator[str]:
        """Names of the logs starting with ``prefix``, sorted."""
        self.check_prefix(prefix)
        return iter(self.raw_log_names(prefix))

    def encode_record(self, name: str, record: Any) -> Any:
        return self.encode(name, record)

    def decode_record(self, name: str, blob: Any) -> Any:
        return self.decode(name, blob)

    @abstractmethod
    def raw_log_append(self, name: str, blob: Any) -> int:
        """Append atomically; the new record's sequence number (dense: 1, 2, 3 ...)."""

    @abstractmethod
    def raw_log_read(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        """``(seq, blob)`` with ``seq > after``, oldest first, at most ``limit``."""

    @abstractmethod
    def raw_log_len(self, name: str) -> int:
        """How many records the log holds."""

    @abstractmethod
    def raw_log_delete(self, name: str) -> bool:
        """Remove the log; True when it existed."""

    @abstractmethod
    def raw_log_names(self, prefix: str) -> list[str]:
        """Names of the logs starting with ``prefix``, sorted."""

    def close(self) -> None:
        """Release connections and files. Safe to call twice."""

    def __enter__(self) -> "PersistenceStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what each store implements --------------------------------------------------------------

    @abstractmethod
    def raw_get(self, key: str) -> Any:
        """The stored blob, or MISSING when absent or expired."""

    @abstractmethod
    def raw_set(self, key: str, blob: Any, ttl: float | None) -> None:
        """Store the blob, expiring ``ttl`` seconds from now (None: never)."""

    @abstractmethod
    def raw_delete(self, key: str) -> bool:
        """Remove the key; True when a live key existed."""

    @abstractmethod
    def raw_keys(self, prefix: str) -> Iterator[str]:
        """Live keys starting with ``prefix``."""

    @abstractmethod
    def raw_ttl(self, key: str) -> float | None:
        """Seconds left, None for no expiry or missing."""

    @abstractmethod
    def raw_incr(self, key: str, amount: int, ttl: float | None) -> int:
        """Atomic add; a missing key starts at 0, expiring ``ttl`` seconds from now (None: never);
        an existing key keeps its expiry."""

    @abstractmethod
    def raw_clear(self, prefix: str) -> int:
        """Remove keys with ``prefix``; how many live keys were removed."""

    @abstractmethod
    def raw_commit(self, ops: list[Op], checks: list[Check],
                    before: "Before | None" = None) -> AbstractContextManager[None]:
        """A context manager that applies ``ops`` atomically, provided every check holds.

        Each op is ``(key, blob, ttl)``: ``blob is MISSING`` deletes the key; ``ttl`` is
        seconds from now, None (no expiry) or KEEP (the key's current expiry; only for a key
        that one of the checks proves live). Each check is ``(key, expected)``: the key must
        still hold exactly the blob ``expected`` (as returned by ``_get``), or be absent when
        ``expected is MISSING``; otherwise :class:`ConflictError` is raised and nothing is
        written. The checks and the writes are one atomic step: no other writer in any thread
        or process can come between them.

        Entering takes the store's write lock (where it has one) and verifies the checks; the
        ``with`` block runs while it is held (a transaction nests the other stores' parts
        there); a normal exit commits, an exception undoes everything, including a partial
        apply. Stores without a lock to hold (Redis) check and write in one step at exit and
        set ``optimistic = True``.

        With ``before`` (a transaction's), the store also sets ``before.images`` to what the
        written keys held (a :meth:`_snapshot`), read where no other writer can change them
        before the writes: under the lock, before the block runs; an optimistic store, in its
        commit script, at exit (it also records them under ``before.token``, see
        :meth:`_outcome`). An undo from these images never reverts another writer's save.
        """

    @abstractmethod
    def open_meta(self) -> "PersistenceStore":
        """A sibling store for lock records (``lock:<name>``, ``fill:<key>``), sharing this
        store's connections, that this store's ``keys()``, ``clear()`` and backups never see."""

    #: True for a store whose ``_committing`` checks and writes at exit, without a held lock.
    optimistic: bool = False

    #: False for a store whose multi-key commit a killed process can leave half-applied (files:
    #: one rename per key); transactions then record it in the commit journal.
    crash_atomic: bool = True

    @property
    def meta(self) -> "PersistenceStore":
        """The lock namespace (opened on first use)."""
        meta = self.__dict__.get("_meta_store")
        if meta is None:
            with _META_LOCK:
                meta = self.__dict__.get("_meta_store")
                if meta is None:
                    meta = self.open_meta()
                    self.__dict__["_meta_store"] = meta
        return meta

    def lock_id(self) -> str:
        """Names this store's write lock; transactions take several stores' locks in the order
        of these names, so two transactions never wait for each other in a circle."""
        return f"{type(self).__name__}:{id(self)}"

    def raw_apply(self, ops: list[Op]) -> None:
        """Apply writes atomically, unconditionally (imports, migrations, snapshots)."""
        with self.raw_commit(ops, []):
            pass

    def raw_add(self, key: str, blob: Any, ttl: float | None) -> bool:
        """Set-if-absent: store ``blob`` unless the key holds a live value."""
        try:
            with self.raw_commit([(key, blob, ttl)], [(key, MISSING)]):
                pass
        except ConflictError:
            return False
        return True

    def raw_cas(self, key: str, expected: Any, new: Any, ttl: Any) -> bool:
        """Compare-and-swap: replace the live blob ``expected`` by ``new`` (MISSING: delete it)
        with ``ttl`` (seconds, None, or KEEP). False when the key holds anything else."""
        try:
            with self.raw_commit([(key, new, ttl)], [(key, expected)]):
                pass
        except ConflictError:
            return False
        return True

    def raw_touch(self, key: str, ttl: float | None) -> bool:
        """New expiry for a live key; False when missing."""
        return bool(flows.run(self, flows.touch(key, ttl)))

    def raw_undo(self, applied: list[Op], before: list[tuple[str, Any, float | None]]) -> list[str]:
        """Put back what ``before`` (the images read by :meth:`_committing`) held for the keys
        that ``applied`` wrote, key by key and only where a key still holds exactly what was
        written (a compare-and-swap): a newer write by someone else is left alone. Returns the
        keys left as they are (changed since; a key rewritten since with the very same bytes
        cannot be told apart and is put back)."""
        old = {key: (blob, ttl) for key, blob, ttl in before}
        written = {key: blob for key, blob, _ in applied}
        kept = []
        for key, blob in written.items():
            old_blob, old_ttl = old.get(key, (MISSING, None))
            if blob is MISSING:
                done = old_blob is MISSING or self.raw_add(key, old_blob, old_ttl)
            else:
                done = self.raw_cas(key, blob, old_blob, old_ttl)
            if not done:
                kept.append(key)
        return kept

    def raw_snapshot(self, keys: list[str]) -> list[tuple[str, Any, float | None]]:
        """The current state of ``keys`` as ops that :meth:`_apply` can restore later (not
        atomic by itself: :meth:`_committing` calls it under the store's lock)."""
        return [(key, self.raw_get(key), self.raw_ttl(key)) for key in keys]

    def raw_outcome(self, token: str, keys: list[str]) -> list[tuple[str, Any, float | None]] | None:
        """For an optimistic store: whether the commit named ``token`` (see
        :meth:`_committing`) was applied, settling it for good. Its before-images of ``keys``
        when it was, None when it was not (and now never will be). Raises
        :class:`StoreUnavailableError` when the store cannot be asked."""
        raise NotImplementedError(f"{type(self).__name__} does not mark its commits")

    def raw_forget(self, token: str) -> None:
        """Drop what the commit named ``token`` recorded (it is over); best effort."""

    #: True for a server every machine reaches (PostgreSQL, Redis): a transaction over such
    #: stores only records its commit where they all can see it (:meth:`_shared_journal`).
    shares_data: bool = False

    def shared_journal(self) -> Any:
        """A commit journal other machines see, kept by this store (PostgreSQL), or None."""
        return None

    def raw_exists(self, key: str) -> bool:
        return self.raw_get(key) is not MISSING

    def raw_get_many(self, keys: list[str]) -> dict[str, Any]:
        found = {}
        for key in keys:
            blob = self.raw_get(key)
            if blob is not MISSING:
                found[key] = blob
        return found

    def raw_set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        for key, blob in items:
            self.raw_set(key, blob, ttl)

    def raw_delete_many(self, keys: list[str]) -> int:
        return sum(1 for key in keys if self.raw_delete(key))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"

    def describe(self) -> str:
        return ""

    # -- restores and log transfer (kvstore.restore, kvstore.transfer) -----------------------------

    def raw_log_blobs(self, name: str, after: int = 0, limit: int | None = None) -> list[tuple[int, Any]]:
        """``(seq, blob)`` of log ``name`` as stored: serializer bytes (backups, raw exports)."""
        return self.raw_log_read(name, after, limit)

    def raw_log_blob_in(self, name: str, blob: Any) -> Any:
        """What ``_log_append`` takes for a record held as serializer bytes ``blob``."""
        if self.serializer is None and isinstance(blob, (bytes, bytearray)):
            return decode_stored(name, blob, Serializer("json"))  # reads every format's header
        return blob

    def raw_replace_all(self, rows: Iterable[tuple[str, Any, float | None]],
                     logs: Iterable[tuple[str, list[Any]]] | None) -> None:
        """Replace every key by ``rows`` and, unless ``logs`` is None, every log by ``logs``
        (see :mod:`kvstore.rows`): a failure partway leaves the old contents."""
        from .rows import replace_generic

        replace_generic(self, rows, logs)
