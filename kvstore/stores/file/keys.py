"""FileStore's keys as paths: the reversible encoding of a key into file and folder names (see
:mod:`kvstore.stores.file` for the rules)."""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from ...errors import InvalidKeyError

__all__ = ["EXTENSIONS", "LOG_EXT", "key_path", "quote", "unquote"]

EXTENSIONS = {"json": ".json", "msgpack": ".msgpack", "pickle": ".pickle"}
LOG_EXT = ".jsonl"  # a log's file, beside the keys' files
_SAFE_PUNCT = set("-_.,:@+=~ ")
_MAX_SEGMENT = 200
_MAX_PATH = 3000


def _safe_char(ch: str) -> bool:
    if ch in _SAFE_PUNCT:
        return True
    if ch.isascii():
        return ch.isalnum()
    # Letters and digits of any script; no format/control/combining-only oddities.
    return unicodedata.category(ch)[0] in ("L", "N")


def quote(segment: str) -> str:
    """One key segment as a file name: unsafe characters as ``%XX``, a leading dot too."""
    out = []
    for ch in segment:
        if _safe_char(ch):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    text = "".join(out)
    if text.startswith("."):
        text = "%2E" + text[1:]
    return text


_UNQUOTE = re.compile(r"(?:%[0-9A-F]{2})+")


def unquote(segment: str) -> str:
    """The key segment a file name encodes (the inverse of :func:`quote`)."""
    return _UNQUOTE.sub(lambda m: bytes.fromhex(m.group(0).replace("%", "")).decode("utf-8"), segment)


def key_path(base_path: Path, key: str, ext: str) -> Path:
    """The file of ``key`` under ``base_path`` for a format's extension ``ext``."""
    segments = key.split("/")
    if any(not s for s in segments):
        raise InvalidKeyError(f"key {key!r}: empty path segment (leading, trailing or double "
                              "'/') cannot be stored as a file")
    encoded = [quote(s) for s in segments]
    for i, seg in enumerate(encoded[:-1]):
        if seg.endswith(ext):
            cut = len(seg) - len(ext)
            encoded[i] = seg[:cut] + "%2E" + seg[cut + 1:]
    encoded[-1] += ext
    if any(len(s.encode("utf-8")) > _MAX_SEGMENT for s in encoded) or \
            sum(len(s.encode("utf-8")) + 1 for s in encoded) > _MAX_PATH:
        raise InvalidKeyError(f"key {key[:60]!r}... is too long for a file name")
    path = base_path.joinpath(*encoded)
    # Defence in depth: the encoding already makes an escape impossible.
    if os.path.commonpath([base_path, os.path.normpath(path)]) != str(base_path):
        raise InvalidKeyError(f"key {key!r} would leave the store's folder")
    return path
