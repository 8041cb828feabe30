"""Serializers: JSON, MessagePack and signed pickle, with optional gzip compression.

Every blob starts with an explicit 3-byte header, so a blob says what it is and any
:class:`Serializer` can read blobs written by another format::

    b"\\xc1" + format + compression      format: j (json), m (msgpack), p (pickle)
                                         compression: - (none), z (gzip)

``0xC1`` is never used by MessagePack, is not valid UTF-8 and is not a pickle opcode that can
start a stream, so a header can never be mistaken for data. Nothing is guessed from content
(MessagePack of ``48`` is ``b"0"``, which is also valid JSON).

JSON and MessagePack both round-trip ``datetime`` (time zone kept), ``date``, ``time``,
``timedelta``, ``bytes``, ``UUID``, ``Decimal``, ``set``, ``frozenset``, ``tuple``, dicts with
non-string keys, and non-finite floats; dataclasses are stored as dicts.

Pickle is off unless a secret is given; pickled payloads are signed with HMAC-SHA256 and the
signature is checked with :func:`hmac.compare_digest` before anything is unpickled.

Every format refuses values that nest containers deeper than
:data:`~kvstore.nesting.MAX_DEPTH` (200) levels, when encoding (:class:`SerializationError`)
and when decoding (:class:`CorruptDataError`), so what one format holds every other holds too.
Pickle applies it to the dicts, lists, tuples and sets it is given; the inside of other objects
is pickle's own business.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import gzip
import hashlib
import hmac
import json
import pickle
import uuid
from decimal import Decimal
from typing import Any, Callable, Union

import msgpack

from ._msgpack import SEEN, _SUBCLASS_FALLBACKS, _msgpack_default, _packb, _unpackb
from .errors import ConfigError, CorruptDataError, SerializationError
from .nesting import MAX_DEPTH, depth_message, json_may_nest, msgpack_too_deep, too_deep

__all__ = ["Serializer", "SerializerSpec", "HEADER_BYTE", "encode_json_text", "decode_json_text"]

HEADER_BYTE = b"\xc1"
_FORMAT_CODES = {"json": b"j", "msgpack": b"m", "pickle": b"p"}
_CODE_FORMATS = {v[0]: k for k, v in _FORMAT_CODES.items()}
_COMPRESSION_CODES = {None: b"-", "gzip": b"z"}
_CODE_COMPRESSIONS = {v[0]: k for k, v in _COMPRESSION_CODES.items()}
_HMAC_SIZE = 32

# Tag used by the JSON encoding of types JSON has no syntax for: {"__kv__": "<type>", "v": ...}.
TAG = "__kv__"
_TAG_BYTES = b'"__kv__"'
_PLAIN_JSON = HEADER_BYTE + b"j-"
_PLAIN_MSGPACK = HEADER_BYTE + b"m-"
_INF = float("inf")
_STACK_TOO_DEEP = (f"value nests too deep for the caller's call stack (Python's recursion "
                   f"limit; {MAX_DEPTH} levels fit unless the caller is hundreds of frames deep)")


# --------------------------------------------------------------------------------------- JSON


_LEAVES = frozenset((str, int, bool, type(None)))  # written by json.dumps exactly as they are
_STR = frozenset((str,))
_SCALARS = _LEAVES | {float}  # values that nest nothing: no nesting check
_FLAT = _SCALARS | {bytes}


def _to_json(obj: Any) -> Any:
    """Turn ``obj`` into something :func:`json.dumps` writes without loss (tagging what JSON lacks)."""
    t = type(obj)
    if t in _LEAVES:
        return obj
    if t is float:
        if obj != obj or obj == _INF or obj == -_INF:
            return {TAG: "float", "v": repr(obj)}
        return obj
    if t is dict:
        if {*map(type, obj)} <= _STR and TAG not in obj:  # every key a str (no generator)
            if {*map(type, obj.values())} <= _LEAVES:
                return obj  # json.dumps only reads it
            return {k: v if type(v) in _LEAVES else _to_json(v) for k, v in obj.items()}
        return {TAG: "dict", "v": [[_to_json(k), _to_json(v)] for k, v in obj.items()]}
    if t is list:
        if {*map(type, obj)} <= _LEAVES:
            return obj
        return [v if type(v) in _LEAVES else _to_json(v) for v in obj]
    if t is tuple:
        return {TAG: "tuple", "v": [_to_json(v) for v in obj]}
    if t is dt.datetime:
        return {TAG: "datetime", "v": obj.isoformat()}
    if t is dt.date:
        return {TAG: "date", "v": obj.isoformat()}
    if t is dt.time:
        return {TAG: "time", "v": obj.isoformat()}
    if t is dt.timedelta:
        return {TAG: "timedelta", "v": [obj.days, obj.seconds, obj.microseconds]}
    if t is bytes or t is bytearray:
        return {TAG: "bytes", "v": base64.b64encode(obj).decode("ascii")}
    if t is uuid.UUID:
        return {TAG: "uuid", "v": str(obj)}
    if t is Decimal:
        return {TAG: "decimal", "v": str(obj)}
    if t is set:
        return {TAG: "set", "v": [_to_json(v) for v in obj]}
    if t is frozenset:
        return {TAG: "frozenset", "v": [_to_json(v) for v in obj]}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _to_json({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    # Subclasses of the basic types (IntEnum, OrderedDict, named tuples...) lose their class.
    for base, conv in _SUBCLASS_FALLBACKS:
        if isinstance(obj, base):
            return _to_json(conv(obj))
    raise TypeError(f"{t.__module__}.{t.__qualname__}")


_JSON_DECODERS: dict[str, Callable[[Any], Any]] = {
    "float": float,
    "dict": lambda v: {k: val for k, val in v},
    "tuple": tuple,
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "timedelta": lambda v: dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "bytes": lambda v: base64.b64decode(v.encode("ascii"), validate=True),
    "uuid": uuid.UUID,
    "decimal": Decimal,
    "set": set,
    "frozenset": frozenset,
}


def json_hook(d: dict[str, Any]) -> Any:
    tag = d.get(TAG)
    if tag is None or len(d) != 2 or "v" not in d:
        return d
    decoder = _JSON_DECODERS.get(tag)
    if decoder is None:
        return d
    return decoder(d["v"])


# json.dumps(..., ensure_ascii=False, allow_nan=False, separators=(",", ":")) builds this encoder
# on every call; it keeps no state between calls, so one serves every value and thread.
_COMPACT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
# And what that encoder's encode() runs, called directly (CPython's C encoder). No circular
# check: _to_json rebuilds every container that holds another, so a cycle is a RecursionError
# there first (a flat container, passed as it is, holds only leaves).
_C_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODE = None if _C_MAKE_ENCODER is None else _C_MAKE_ENCODER(
    None, json.JSONEncoder().default, json.encoder.encode_basestring, None, ":", ",",
    False, False, False)
# What json.loads(str) runs (object_hook=json_hook: when a tag may be in the text).
_PLAIN_DECODE = json.JSONDecoder().decode
_TAGGED_DECODE = json.JSONDecoder(object_hook=json_hook).decode
# First bytes from which json.loads(bytes) may read something other than UTF-8 (BOMs, UTF-16/32).
_NOT_UTF8_START = frozenset((b"\x00", b"\xef", b"\xfe", b"\xff"))
# JSONDecoder.decode's own scan, for text with no whitespace around the value (what kvstore
# writes); anything else (whitespace, extra data, an error) goes through decode itself.
_PLAIN_SCAN: Callable[[str, int], tuple[Any, int]] = getattr(json.JSONDecoder(), "scan_once")


def encode_json_text(data: Any, *, indent: int | None = None) -> str:
    """Encode ``data`` as strict JSON text (no NaN), tagging the extended types.

    Raises TypeError (an unsupported type) or ValueError (nested past the limit, NaN...)."""
    try:
        if indent is not None:
            text = json.dumps(_to_json(data), ensure_ascii=False, allow_nan=False, indent=indent,
                              separators=None if indent else (",", ":"))
        elif _C_ENCODE is not None:
            text = "".join(_C_ENCODE(_to_json(data), 0))
        else:
            text = _COMPACT(_to_json(data))
    except RecursionError:
        raise ValueError(depth_message() if too_deep(data) else _STACK_TOO_DEEP) from None
    if type(data) not in _SCALARS and json_may_nest(text) and too_deep(data):
        raise ValueError(depth_message())
    return text


def decode_json_text(text: str | bytes) -> Any:
    """Inverse of :func:`encode_json_text`; plain JSON written by a person reads as itself.
    No nesting check: it also reads records wrapped one level deeper (file-store log lines)."""
    return json.loads(text, object_hook=json_hook)


# ------------------------------------------------------------------- blob bodies, nesting checked


def _json_body(body: bytes) -> Any:
    """A plain JSON blob's value (nesting checked). Raises ValueError."""
    # json.loads(bytes) guesses UTF-16/32 from a BOM or NULs in the first two bytes, else reads
    # UTF-8 (what kvstore writes): that common case decodes directly, the rest goes through it.
    if body[:1] in _NOT_UTF8_START or body[1:2] == b"\x00":
        value = json.loads(body, object_hook=json_hook) if _TAG_BYTES in body else json.loads(body)
    else:
        # surrogatepass, as json.loads; a UnicodeDecodeError is a ValueError, as it raises
        text = body.decode("utf-8", "surrogatepass")
        if _TAG_BYTES in body:
            value = _TAGGED_DECODE(text)
        else:
            try:
                value, end = _PLAIN_SCAN(text, 0)
            except StopIteration:
                end = -1
            if end != len(text):
                value = _PLAIN_DECODE(text)
    if type(value) not in _SCALARS and json_may_nest(body) and too_deep(value):
        raise ValueError(depth_message())
    return value


def _msgpack_nests(value: Any, body: bytes) -> bool:
    """Whether ``value``, packed or unpacked as ``body`` (longer than MAX_DEPTH bytes: the
    callers test that inline), nests past the limit."""
    if type(value) in _FLAT:  # a long string or bytes nests nothing: no need to read it
        return False
    if SEEN.containers:  # tuples or sets (exts) were involved: look at the value itself
        SEEN.containers = False
        return too_deep(value)
    return msgpack_too_deep(body)


def _msgpack_body(body: bytes) -> Any:
    """A plain MessagePack blob's value (nesting checked). Raises ValueError and msgpack's errors."""
    value = _unpackb(body)
    if len(body) > MAX_DEPTH and _msgpack_nests(value, body):
        raise ValueError(depth_message())
    return value


def _pickle_body(body: bytes) -> Any:
    value = pickle.loads(body)
    if len(body) > MAX_DEPTH and too_deep(value):
        raise ValueError(depth_message())
    return value


def _undecodable(fmt: str, exc: Exception) -> CorruptDataError:
    # msgpack's parse stack holds 1,024 levels: past them is past the limit. A RecursionError is
    # that too, or a caller already hundreds of frames deep.
    why = (depth_message() if isinstance(exc, msgpack.StackError)
           else f"{depth_message()}, or too deep for the caller's call stack"
           if isinstance(exc, RecursionError) else exc)
    return CorruptDataError(f"cannot decode {fmt} blob: {why}")


# -------------------------------------------------------------------------------- Serializer


class Serializer:
    """Encode values to self-describing bytes and back.

    >>> s = Serializer("msgpack")
    >>> s.deserialize(s.serialize({"when": (1, 2)}))
    {'when': (1, 2)}

    Args:
        format: ``"json"``, ``"msgpack"`` or ``"pickle"``.
        compression: ``None`` or ``"gzip"``.
        secret: required for ``"pickle"`` (bytes or str); pickled payloads are HMAC-SHA256 signed
            with it. A serializer with a secret also verifies pickled blobs it reads.

    Raises:
        ConfigError: unknown format or compression, or pickle without a secret.
    """

    __slots__ = ("format", "compression", "_secret", "_header", "encode", "_decode_body", "plain")

    def __init__(self, format: str = "json", compression: str | None = None,
                 secret: bytes | str | None = None) -> None:
        if format not in _FORMAT_CODES:
            raise ConfigError(f"serializer: unknown format {format!r} "
                              f"(choose one of {', '.join(_FORMAT_CODES)})")
        if compression not in _COMPRESSION_CODES:
            raise ConfigError(f"serializer.compression: unknown compression {compression!r} "
                              "(choose None or 'gzip')")
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if secret is not None and not isinstance(secret, bytes):
            raise ConfigError("serializer.secret: must be bytes or str")
        if format == "pickle" and not secret:
            raise ConfigError("serializer: pickle needs a secret (Serializer('pickle', secret=...)); "
                              "unsigned pickle would let stored data run code")
        self.format = format
        self.compression = compression
        self._secret: bytes | None = secret or None
        self._header = HEADER_BYTE + _FORMAT_CODES[format] + _COMPRESSION_CODES[compression]
        #: :meth:`body_decoder`, kept: what a store's ``decode`` tries first for one blob.
        self.plain = self.body_decoder()

    def __repr__(self) -> str:
        extra = f", compression={self.compression!r}" if self.compression else ""
        secret = ", secret=***" if self._secret else ""
        return f"Serializer({self.format!r}{extra}{secret})"

    @property
    def name(self) -> str:
        """``"json"``, ``"msgpack+gzip"``... the same string :meth:`detect` gives for its blobs."""
        return self.format + ("+" + self.compression if self.compression else "")

    # -- encoding ------------------------------------------------------------------------------

    def serialize(self, data: Any) -> bytes:
        """Encode ``data``; raises :class:`SerializationError` naming the unsupported type."""
        try:
            if self.format == "json":
                body = encode_json_text(data).encode("utf-8")
            elif self.format == "msgpack":
                body = _packb(data)
                if len(body) > MAX_DEPTH and _msgpack_nests(data, body):
                    raise ValueError(depth_message())
            else:
                body = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
                if len(body) > MAX_DEPTH and too_deep(data):
                    raise ValueError(depth_message())
        except (TypeError, ValueError, OverflowError, RecursionError, pickle.PicklingError,
                AttributeError) as exc:
            # msgpack's own limit (1,024) is the same refusal; Python's recursion limit is hit
            # before 200 levels only when the caller's stack is already hundreds of frames deep.
            why = (depth_message() if too_deep(data) else _STACK_TOO_DEEP
                   if isinstance(exc, RecursionError) else exc)
            raise SerializationError(
                f"cannot serialize {type(data).__name__} with {self.format}: {why}") from exc
        if self.compression == "gzip":
            body = gzip.compress(body, compresslevel=6, mtime=0)
        if self.format == "pickle":
            assert self._secret is not None
            sig = hmac.new(self._secret, self._header + body, hashlib.sha256).digest()
            return self._header + sig + body
        return self._header + body

    def batch_encoder(self) -> Callable[[Any], bytes]:
        """``serialize`` for one batch of values (``save_many``, imports): MessagePack reuses
        one packer for the batch instead of building one per value. Not thread-safe: one
        batch, one caller."""
        if self.format != "msgpack" or self.compression:
            return self.serialize
        pack = msgpack.Packer(default=_msgpack_default, strict_types=True, use_bin_type=True).pack
        header, serialize = self._header, self.serialize

        def encode(data: Any) -> bytes:
            try:
                body = pack(data)
            except Exception:  # big ints, or an error to name: the one-value path says which
                return serialize(data)
            if len(body) > MAX_DEPTH and _msgpack_nests(data, body):
                return serialize(data)  # raises, saying so
            return header + body

        return encode

    # -- decoding ------------------------------------------------------------------------------

    def body_decoder(self) -> tuple[bytes, Callable[[bytes], Any]] | None:
        """``(header, decode_body)`` for this serializer's own plain (uncompressed JSON or
        MessagePack) blobs, so a batch skips the per-blob dispatch of :meth:`deserialize`;
        None when there is no such shortcut. ``decode_body`` gets the bytes after the 3-byte
        header and may raise anything: the caller then uses :meth:`deserialize`, which says
        what is wrong."""
        if self.compression is None and self.format == "msgpack":
            return _PLAIN_MSGPACK, _msgpack_body
        if self.compression is None and self.format == "json":
            return _PLAIN_JSON, _json_body
        return None

    def deserialize(self, blob: bytes) -> Any:
        """Decode a blob written by any :class:`Serializer` (the header says its format).

        Raises:
            CorruptDataError: no header, truncated or garbled content.
            SerializationError: a pickled blob without a secret here, or with a bad signature
                (it is never unpickled).
        """
        head = blob[:3]
        if head == _PLAIN_JSON:  # the common case, kept short
            try:
                return _json_body(blob[3:])
            except Exception as exc:
                raise _undecodable("json", exc) from exc
        if head == _PLAIN_MSGPACK:
            try:
                return _msgpack_body(blob[3:])
            except Exception as exc:
                raise _undecodable("msgpack", exc) from exc
        if type(blob) is not bytes:
            if isinstance(blob, (bytearray, memoryview)):
                blob = bytes(blob)
            else:
                raise SerializationError(f"expected bytes, got {type(blob).__name__}")
        if len(blob) < 3 or blob[0] != 0xC1:
            raise CorruptDataError("blob has no kvstore header")
        fmt = _CODE_FORMATS.get(blob[1])
        if fmt is None or blob[2] not in _CODE_COMPRESSIONS:
            raise CorruptDataError(f"blob has an unknown kvstore header {blob[:3]!r}")
        compression = _CODE_COMPRESSIONS[blob[2]]
        body = blob[3:]
        if fmt == "pickle":
            if self._secret is None:
                raise SerializationError("blob is a signed pickle but this serializer has no secret; "
                                         "it was not unpickled")
            if len(body) < _HMAC_SIZE:
                raise CorruptDataError("pickle blob is truncated (no signature)")
            sig, body = body[:_HMAC_SIZE], body[_HMAC_SIZE:]
            expected = hmac.new(self._secret, blob[:3] + body, hashlib.sha256).digest()
            if not hmac.compare_digest(sig, expected):
                raise CorruptDataError("pickle signature does not verify; the blob was not unpickled")
        try:
            if compression == "gzip":
                body = gzip.decompress(body)
            if fmt == "json":
                return _json_body(body)
            if fmt == "msgpack":
                return _msgpack_body(body)
            return _pickle_body(body)
        except Exception as exc:  # any decoding failure means the bytes are not what we wrote
            raise _undecodable(fmt, exc) from exc

    @staticmethod
    def detect(blob: bytes) -> str:
        """The format of a blob: ``"json"``, ``"msgpack"``, ``"pickle"``, ``"json+gzip"``...

        Raises:
            CorruptDataError: the blob has no kvstore header.
        """
        if len(blob) < 3 or blob[0] != 0xC1 or blob[1] not in _CODE_FORMATS \
                or blob[2] not in _CODE_COMPRESSIONS:
            raise CorruptDataError("blob has no kvstore header")
        fmt = _CODE_FORMATS[blob[1]]
        comp = _CODE_COMPRESSIONS[blob[2]]
        return fmt + ("+" + comp if comp else "")

    @classmethod
    def resolve(cls, spec: "SerializerSpec", secret: bytes | str | None = None,
                setting: str = "serializer") -> "Serializer":
        """A :class:`Serializer` from a name (``"json"``, ``"msgpack+gzip"``) or an instance."""
        if isinstance(spec, Serializer):
            return spec
        if not isinstance(spec, str):
            raise ConfigError(f"{setting}: expected a format name or a Serializer, "
                              f"got {type(spec).__name__}")
        fmt, _, comp = spec.partition("+")
        try:
            return cls(fmt, compression=comp or None, secret=secret)
        except ConfigError as exc:
            raise ConfigError(f"{setting}: {exc}") from None


SerializerSpec = Union[str, Serializer]
