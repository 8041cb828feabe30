"""What a FileStore's file holds: plain JSON text of the value (a key with a TTL wrapped in
``{"__kv__": "ttl", "expires_at": ..., "value": ...}``), or the serializer's blob (a TTL as a
``b"\\xc1t"`` header and a little-endian double); see :mod:`kvstore.stores.file`."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any, Callable

from ...errors import CorruptDataError
from ...serializers import HEADER_BYTE, decode_json_text, encode_json_text
from ...store import same_blob
from .paths import read_at

__all__ = ["TTL_MAGIC", "Decoded", "FileFormat", "same"]

TTL_MAGIC = HEADER_BYTE + b"t"
TTL_HEAD = re.compile(rb'^\s*\{\s*"__kv__"\s*:\s*"ttl"\s*,\s*"expires_at"\s*:\s*(-?[0-9.eE+-]+)')


class Decoded:
    """A value already decoded from a plain JSON file (so a stored ``bytes`` value is never
    mistaken for a serializer blob), with the file's bytes, which compare-and-swap compares."""

    __slots__ = ("value", "raw")

    def __init__(self, value: Any, raw: bytes) -> None:
        self.value = value
        self.raw = raw


def same(current: Any, expected: Any) -> bool:
    """Whether a key's current blob is still the one read (plain JSON: the same file bytes) or
    written (plain JSON: the same value as the JSON text that was written)."""
    if type(current) is Decoded:
        if isinstance(expected, str):
            return encode_json_text(current.value, indent=2) == expected
        current = current.raw
    if type(expected) is Decoded:
        expected = expected.raw
    return same_blob(current, expected)


class FileFormat:
    """The bytes of a key's file and back, for one store.

    Args:
        plain_json: files are plain JSON text (``format="json"`` without compression).
        blob: ``(key, value)`` -> the store serializer's blob (the base store's encoding), for
            a file that is not plain JSON.
        value: ``(key, blob)`` -> the value of a serializer blob (the base store's decoding),
            for a blob from another store written to a plain JSON file.
        path_for: a key's file, named in errors.
    """

    def __init__(self, plain_json: bool, blob: Callable[[str, Any], Any],
                 value: Callable[[str, Any], Any], path_for: Callable[[str], Path]) -> None:
        self.plain_json = plain_json
        self.blob = blob
        self.value = value
        self.path_for = path_for

    def file_bytes(self, key: str, blob: Any, expires: float | None) -> bytes:
        if self.plain_json:
            if type(blob) is Decoded:  # rewritten as it is (a new expiry)
                blob = encode_json_text(blob.value, indent=2)
            elif isinstance(blob, (bytes, bytearray)):  # a blob from another store: keep files plain
                blob = encode_json_text(self.value(key, blob), indent=2)
            if expires is None:
                return (blob + "\n").encode("utf-8")
            return ('{"__kv__": "ttl", "expires_at": ' + repr(expires) + ', "value": '
                    + blob + "}\n").encode("utf-8")
        if isinstance(blob, str):  # JSON text from a plain-JSON FileStore (same-store transfer)
            blob = self.blob(key, decode_json_text(blob))
        if expires is None:
            return bytes(blob)
        return TTL_MAGIC + struct.pack("<d", expires) + bytes(blob)

    def parse(self, key: str, data: bytes) -> tuple[Any, float | None]:
        """``(stored blob or decoded JSON value, expires_at)`` from a file's bytes."""
        if self.plain_json:
            if data[:1] == HEADER_BYTE:  # a binary blob placed here by a migration
                return data, None
            try:
                text = data.decode("utf-8")
                if b'"ttl"' in data and b'"__kv__"' in data:
                    # Look for the wrapper *before* tags are decoded: a user dict shaped like the
                    # wrapper was escaped by the encoder, and only decodes to that shape later.
                    raw = json.loads(text)
                    if type(raw) is dict and raw.get("__kv__") == "ttl" and "value" in raw:
                        expires = raw.get("expires_at")
                        if not isinstance(expires, (int, float)) or isinstance(expires, bool) \
                                or len(raw) != 3:
                            raise CorruptDataError(f"key {key!r}: file {self.path_for(key)} has "
                                                   "a malformed TTL wrapper")
                        inner = raw["value"]
                        if isinstance(inner, (dict, list)):
                            inner = decode_json_text(json.dumps(inner))
                        return Decoded(inner, data), float(expires)
                return Decoded(decode_json_text(text), data), None
            except CorruptDataError:
                raise
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise CorruptDataError(f"key {key!r}: file {self.path_for(key)} is not valid "
                                       f"JSON ({exc})") from exc
        if data[:2] == TTL_MAGIC:
            if len(data) < 10:
                raise CorruptDataError(f"key {key!r}: file is truncated")
            return data[10:], struct.unpack("<d", data[2:10])[0]
        return data, None

    def expiry_of(self, dir_fd: int, name: str) -> float | None | bool:
        """Expiry read from the file's first bytes (False: file gone or unreadable)."""
        head = read_at(dir_fd, name, 128)
        if head is None:
            return False
        if self.plain_json:
            m = TTL_HEAD.match(head)
            if m:
                try:
                    return float(m.group(1))
                except ValueError:
                    pass
            if b'"__kv__"' in head and b'"ttl"' in head:  # reformatted by hand: parse it all
                data = read_at(dir_fd, name)
                try:
                    return None if data is None else self.parse("?", data)[1]
                except CorruptDataError:
                    return None
            return None
        if head[:2] == TTL_MAGIC and len(head) >= 10:
            return float(struct.unpack("<d", head[2:10])[0])
        return None
