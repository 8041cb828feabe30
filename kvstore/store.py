"""The store interface: :class:`PersistenceStore`, and the rules every store shares.

Stores move bytes; this base does the rest. ``PersistenceStore`` is three parts:

- the public operations (``save``, ``load``, ``update``, ``get_or_set``, ``lock``, ``log``...),
  :class:`~kvstore.front.store_sync.StoreOps`, generated from the asyncio source
  ``kvstore/front/store_async.py`` (each operation is written once, for both fronts);
- the rules (this module): key checks, TTLs, encoding and decoding, batch checks;
- the backend contract (:mod:`kvstore.backend`): the byte-level ``raw_*`` methods each store
  implements, and the defaults built on them.

A store may still replace a public operation with a faster one of its own (the memory store's
``load``); the operations do not depend on each other being the originals.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from ._marks import KEEP, MISSING, Check, Op
from .backend import BackendContract
from .errors import (ConflictError, CorruptDataError, NotAnIntegerError, SerializationError)
from .front.store_sync import StoreOps
from .keyrules import check_key, check_key_text
from .rules import TTL, blob_size, check_max_entries, check_paging, parse_ttl
from .serializers import HEADER_BYTE, Serializer, SerializerSpec

__all__ = ["PersistenceStore", "parse_ttl", "TTL", "MISSING", "KEEP", "Op", "Check",
           "prefix_upper_bound", "decode_stored", "conflict", "same_blob", "blob_size",
           "check_paging", "check_max_entries"]


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


class PersistenceStore(StoreOps, BackendContract):
    """A key-value store with TTLs. Every store has the same methods and semantics.

    Keys are non-empty ``str``; values are anything the store's serializer encodes. ``ttl`` is
    seconds or a duration string; ``None`` means the store's ``ttl_default`` (itself ``None`` =
    permanent). Use as a context manager to close it::

        with SQLiteStore(path="app.db") as store:
            store.save("session:1", {"user": "ann"}, ttl="15m")

    A new backend subclasses this and implements the byte-level methods of
    :class:`~kvstore.backend.BackendContract`.
    """

    def __init__(self, *, ttl_default: TTL = None, serializer: SerializerSpec | None = "json",
                 secret: bytes | str | None = None) -> None:
        self.ttl_default: float | None = (
            None if ttl_default is None else parse_ttl(ttl_default, "ttl_default"))
        self.serializer: Serializer | None = (
            None if serializer is None else Serializer.resolve(serializer, secret))

    # -- the rules, shared by every store ---------------------------------------------------------

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
        plain = serializer.plain  # a blob in its own plain format: straight to the body decoder
        if plain is not None and blob[:3] == plain[0]:
            try:
                return plain[1](blob[3:])
            except Exception:
                pass  # the one-value path below says what is wrong, naming the key
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

    def encode_record(self, name: str, record: Any) -> Any:
        return self.encode(name, record)

    def decode_record(self, name: str, blob: Any) -> Any:
        return self.decode(name, blob)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"

    def describe(self) -> str:
        return ""

    def raw_log_blob_in(self, name: str, blob: Any) -> Any:
        """What ``_log_append`` takes for a record held as serializer bytes ``blob``."""
        if self.serializer is None and isinstance(blob, (bytes, bytearray)):
            return decode_stored(name, blob, Serializer("json"))  # reads every format's header
        return blob
