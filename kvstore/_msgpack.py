"""kvstore's MessagePack codec: the extension types (datetimes, UUIDs, Decimals, tuples, sets,
big ints) that make MessagePack round-trip everything the JSON encoding does.

Used by :mod:`kvstore.serializers`; blobs carry its header, this module only packs bodies.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import uuid
from decimal import Decimal
from typing import Any, Callable

import msgpack

__all__: list[str] = []

# Subclasses of the basic types (IntEnum, OrderedDict, named tuples...) are stored as their base
# type, by the JSON encoding and here alike.
_SUBCLASS_FALLBACKS: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (bool, bool),
    (int, int),
    (float, float),
    (str, str),
    (dict, dict),
    (list, list),
    (tuple, tuple),
)


class _Seen(threading.local):
    #: Set when a tuple, set or frozenset was packed or unpacked in this thread (reset by the
    #: nesting check): their contents are exts, which a check of the outer body cannot see.
    containers = False


SEEN = _Seen()

_EXT_DATETIME, _EXT_DATE, _EXT_TIME, _EXT_TIMEDELTA = 1, 2, 3, 4
_EXT_UUID, _EXT_DECIMAL, _EXT_SET, _EXT_FROZENSET, _EXT_TUPLE = 5, 6, 7, 8, 9
_EXT_BIGINT = 10
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


class _BigInt:
    """An int outside MessagePack's 64-bit range, packed as its decimal text."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value


def _wrap_bigints(obj: Any) -> Any:
    """A copy of ``obj`` with out-of-range ints wrapped (only used after msgpack overflowed)."""
    t = type(obj)
    if t is int:
        return _BigInt(obj) if not _INT64_MIN <= obj <= _UINT64_MAX else obj
    if t is dict:
        return {_wrap_bigints(k): _wrap_bigints(v) for k, v in obj.items()}
    if t is list:
        return [_wrap_bigints(v) for v in obj]
    if t in (tuple, set, frozenset):
        return t(_wrap_bigints(v) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _wrap_bigints({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    return obj


def _msgpack_default(obj: Any) -> Any:
    t = type(obj)
    if t is tuple:
        SEEN.containers = True
        return msgpack.ExtType(_EXT_TUPLE, _packb(list(obj)))
    if t is dt.datetime:
        return msgpack.ExtType(_EXT_DATETIME, obj.isoformat().encode())
    if t is dt.date:
        return msgpack.ExtType(_EXT_DATE, obj.isoformat().encode())
    if t is dt.time:
        return msgpack.ExtType(_EXT_TIME, obj.isoformat().encode())
    if t is dt.timedelta:
        return msgpack.ExtType(_EXT_TIMEDELTA, _packb([obj.days, obj.seconds, obj.microseconds]))
    if t is uuid.UUID:
        return msgpack.ExtType(_EXT_UUID, obj.bytes)
    if t is Decimal:
        return msgpack.ExtType(_EXT_DECIMAL, str(obj).encode())
    if t is set or t is frozenset:
        SEEN.containers = True
        return msgpack.ExtType(_EXT_SET if t is set else _EXT_FROZENSET, _packb(list(obj)))
    if t is bytearray:
        return bytes(obj)
    if t is _BigInt:
        return msgpack.ExtType(_EXT_BIGINT, str(obj.value).encode())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    for base, conv in _SUBCLASS_FALLBACKS:
        if isinstance(obj, base):
            return conv(obj)
    raise TypeError(f"{t.__module__}.{t.__qualname__}")


def _packb(obj: Any) -> bytes:
    # strict_types: a tuple (or a subclass of a basic type) goes through `default`, so it is
    # tagged instead of silently becoming a list.
    try:
        return msgpack.packb(obj, default=_msgpack_default, strict_types=True, use_bin_type=True)
    except OverflowError:
        return msgpack.packb(_wrap_bigints(obj), default=_msgpack_default, strict_types=True,
                             use_bin_type=True)


def _ext_hook_at(depth: int) -> Callable[[int, bytes], Any]:
    """The ext hook for exts inside ``depth`` tuples/sets/timedeltas. Each nested
    ``msgpack.unpackb`` keeps a ~40 KB parse stack on the C stack, so ~195 nested tuples crashed
    the process (SIGSEGV) on load; past a few levels, an Unpacker, whose parse stack is on the
    heap, reads the payload instead. Which hook runs says how deep it is (no per-call state)."""

    def unpack_inner(data: bytes) -> Any:
        if depth >= _ON_STACK:
            unpacker = msgpack.Unpacker(None, ext_hook=_HOOKS[_ON_STACK], raw=False,
                                        strict_map_key=False, use_list=True,
                                        max_buffer_size=max(len(data), 1))
            unpacker.feed(data)
            return unpacker.unpack()
        return msgpack.unpackb(data, ext_hook=_HOOKS[depth + 1], raw=False,
                               strict_map_key=False, use_list=True)

    def ext_hook(code: int, data: bytes) -> Any:
        if code == _EXT_TUPLE:
            SEEN.containers = True
            return tuple(unpack_inner(data))
        if code == _EXT_DATETIME:
            return dt.datetime.fromisoformat(data.decode())
        if code == _EXT_DATE:
            return dt.date.fromisoformat(data.decode())
        if code == _EXT_TIME:
            return dt.time.fromisoformat(data.decode())
        if code == _EXT_TIMEDELTA:
            d, s, us = unpack_inner(data)
            return dt.timedelta(days=d, seconds=s, microseconds=us)
        if code == _EXT_UUID:
            return uuid.UUID(bytes=data)
        if code == _EXT_DECIMAL:
            return Decimal(data.decode())
        if code == _EXT_BIGINT:
            return int(data.decode())
        if code == _EXT_SET or code == _EXT_FROZENSET:
            SEEN.containers = True
            items = unpack_inner(data)
            return set(items) if code == _EXT_SET else frozenset(items)
        return msgpack.ExtType(code, data)

    return ext_hook


_ON_STACK = 8
_HOOKS = [_ext_hook_at(depth) for depth in range(_ON_STACK + 1)]


def _unpackb(blob: bytes) -> Any:
    return msgpack.unpackb(blob, ext_hook=_HOOKS[0], raw=False, strict_map_key=False,
                           use_list=True)
