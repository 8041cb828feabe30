"""The rule every store applies to keys, lock and log names, prefixes and ``start_after``.

One rule for every store, so that a backup of any tier restores into every other: a key is a
non-empty ``str`` of at most :data:`MAX_KEY_BYTES` bytes in UTF-8, with no NUL and no lone
surrogate. What each backend cannot hold, and why the rule refuses it everywhere:

- NUL (``"\\x00"``): PostgreSQL ``text`` cannot contain it (psycopg raises ``DataError``). Redis,
  SQLite (Python binds the full length) and the file store (``%00``) could hold it, but a backup
  of theirs would then be refused by a PostgreSQL tier.
- Lone surrogates: not encodable as UTF-8, which every store uses.
- Over :data:`MAX_KEY_BYTES`: PostgreSQL's primary-key index refuses entries over 2,704 bytes
  (an uncompressible key of ~2,690 bytes fails); 2,048 leaves room for the log and lock tables'
  wider indexes.

The file store adds its own limits on top (path segments, see :mod:`kvstore.stores.file`).
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidKeyError

__all__ = ["MAX_KEY_BYTES", "SHORT_KEY", "check_key", "check_key_text"]

#: The longest key (or log/lock name) every store accepts, in UTF-8 bytes.
MAX_KEY_BYTES = 2048

# A str of at most this many characters is at most MAX_KEY_BYTES bytes (4 bytes a character at
# most): the common short key never needs encoding to be measured.
SHORT_KEY = MAX_KEY_BYTES // 4


def check_key(key: Any) -> None:
    """Raise :class:`InvalidKeyError` (a ``ValueError``) naming ``key`` unless every store can
    hold it: a non-empty ``str`` of at most :data:`MAX_KEY_BYTES` UTF-8 bytes, without NUL or
    lone surrogates."""
    if type(key) is not str and not isinstance(key, str) or not key:
        raise InvalidKeyError(f"key must be a non-empty str, got {key!r}")
    if "\x00" in key:
        raise InvalidKeyError(f"key {key!r} contains NUL ('\\x00'), which PostgreSQL cannot hold; "
                              "kvstore refuses it on every store so that every backup restores "
                              "into every tier")
    if len(key) > SHORT_KEY or not key.isascii():
        try:
            size = len(key.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidKeyError(f"key {key!r} is not valid unicode (lone surrogate)") from None
        if size > MAX_KEY_BYTES:
            raise InvalidKeyError(f"key {key[:60]!r}... is {size} bytes in UTF-8; keys are at "
                                  f"most {MAX_KEY_BYTES} bytes on every store")


def check_key_text(text: Any, what: str) -> None:
    """Raise :class:`InvalidKeyError` unless ``text`` (a ``prefix`` or ``start_after``, named
    by ``what``) is a ``str`` that could be part of a key: no NUL, no lone surrogate. No key
    contains those, and PostgreSQL or the UTF-8 encoding would fail on them."""
    if not isinstance(text, str):
        raise InvalidKeyError(f"{what} must be a str, got {text!r}")
    if "\x00" in text:
        raise InvalidKeyError(f"{what} {text!r} contains NUL ('\\x00'), which no key can contain")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidKeyError(f"{what} {text!r} is not valid unicode (lone surrogate)") from None
