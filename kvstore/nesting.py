"""The nesting limit every serializer applies, so that a value one format accepts, every other
format (and a JSON Lines export or backup) accepts too.

A stored value may nest containers (dicts, lists, tuples, sets, dataclasses, and their
subclasses; a dict's keys count like its values) at most :data:`MAX_DEPTH` deep: ``[]`` and
``[1]`` are 1 level, ``[[1]]`` 2. Without one number the codecs disagreed (MessagePack took
1,024 levels, JSON 330-500 depending on the types and on how deep the caller's stack already
was), so a MessagePack store could hold a value that no JSON store, export or backup could carry.
200 leaves every codec room below its own limit even when the caller is a few hundred frames deep.

The check runs at C speed and costs nothing for bodies of at most :data:`MAX_DEPTH` bytes (a
value nested ``d`` deep takes at least ``d`` bytes). A bigger MessagePack body is skipped over
(parsed without building anything) by a per-thread ``msgpack.Unpacker`` that already holds 824
open arrays: its parse stack holds 1,024 containers, so it fails exactly when the body nests
deeper than 200. Other values are first packed by a MessagePack packer that writes tuples and
sets as plain arrays.
"""

from __future__ import annotations

import dataclasses
import struct
import threading
from typing import Any

import msgpack

__all__ = ["MAX_DEPTH", "too_deep", "msgpack_too_deep", "depth_message", "json_may_nest"]

#: How deep containers may nest in a stored value, in every serializer.
MAX_DEPTH = 200

_STACK = 1024  # msgpack's parse stack (MSGPACK_EMBED_STACK_SIZE), fixed in its C code
# Open arrays that never fill up (2**32 - 1 items each): what is fed after them sits that deep.
_PREFIX = (b"\xdd" + struct.pack(">I", 2**32 - 1)) * (_STACK - MAX_DEPTH)
_FRESH_OVER = 1 << 16  # a bigger body gets a throwaway unpacker: no big buffer kept per thread


def depth_message() -> str:
    return f"value nests deeper than {MAX_DEPTH} levels (the limit of every kvstore serializer)"


def json_may_nest(body: bytes | str) -> bool:
    """False when JSON ``body`` cannot hold a value nested past :data:`MAX_DEPTH`: it has at
    most that many brackets (kvstore's tags only add brackets)."""
    if len(body) <= MAX_DEPTH * 2:
        return False
    if isinstance(body, str):
        return body.count("[") + body.count("{") > MAX_DEPTH
    return body.count(b"[") + body.count(b"{") > MAX_DEPTH


def _primed() -> Any:
    unpacker = msgpack.Unpacker(None, max_buffer_size=2**31 - 1, read_size=len(_PREFIX),
                                strict_map_key=False)
    unpacker.feed(_PREFIX)
    try:
        unpacker.skip()
    except msgpack.OutOfData:  # the open arrays: expected
        pass
    return unpacker


class _State(threading.local):
    unpacker: Any = None


_STATE = _State()


def msgpack_too_deep(body: bytes) -> bool:
    """Whether the MessagePack ``body`` (one complete object, as packed or as just decoded)
    nests arrays and maps more than :data:`MAX_DEPTH` deep. An ext's payload is not looked
    into (kvstore's tuples and sets are exts: :func:`too_deep` sees into them)."""
    if len(body) <= MAX_DEPTH:
        return False
    state = _STATE
    unpacker = state.unpacker if len(body) <= _FRESH_OVER else None
    if unpacker is None:
        unpacker = _primed()
    try:
        unpacker.feed(body)
        unpacker.skip()
    except msgpack.OutOfData:  # the body ended inside the open arrays: within the limit
        state.unpacker = unpacker if len(body) <= _FRESH_OVER else None
        return False
    except ValueError:  # msgpack.StackError: deeper than the stack left for it
        state.unpacker = None
        return True
    except Exception:  # not MessagePack: no verdict here (the decoder says what is wrong)
        state.unpacker = None
        return False
    state.unpacker = None  # pragma: no cover - 824 arrays of 2**32 - 1 items never fill up
    return False


def _as_container(obj: Any) -> Any:
    """What the probe writes for a type MessagePack has no native form for: sets as lists,
    dataclasses as dicts; anything else (datetimes, big ints, objects) as a leaf."""
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return None


def too_deep(value: Any) -> bool:
    """Whether ``value`` nests containers more than :data:`MAX_DEPTH` deep. Safe for any depth
    and for a value that contains itself (too deep)."""
    try:
        body = msgpack.packb(value, default=_as_container, use_bin_type=True)
    except ValueError:  # msgpack's own limit (1,024 levels) or a cycle
        return True
    except (TypeError, OverflowError):  # not a value any serializer takes: the codec says why
        return False
    return msgpack_too_deep(body)
