"""kvstore's exception types. Everything raised to users subclasses :class:`KVStoreError`."""

from __future__ import annotations

__all__ = [
    "KVStoreError",
    "ConfigError",
    "SerializationError",
    "CorruptDataError",
    "StoreUnavailableError",
    "TransactionError",
    "InvalidKeyError",
    "InvalidTTLError",
    "NotAnIntegerError",
    "NotAListError",
    "ConflictError",
    "LockTimeout",
    "LockNotOwnedError",
    "InvalidArgumentError",
]


class KVStoreError(Exception):
    """Base class of every error kvstore raises."""


class ConfigError(KVStoreError, ValueError):
    """A setting is wrong: unknown, of the wrong type, or a driver/extra is missing.

    The message names the setting, e.g. ``persistence.categories.session.ttl: '5x' is not a duration``.
    """


class SerializationError(KVStoreError):
    """A value cannot be encoded, or a blob cannot be decoded (bad header, bad signature)."""


class CorruptDataError(SerializationError):
    """Stored data for a key could not be read back: truncated, garbled or tampered with.

    Subclasses :class:`SerializationError` so that ``except SerializationError`` catches it too.
    """


class StoreUnavailableError(KVStoreError):
    """The backing server (Redis, PostgreSQL) or file cannot be reached within the timeout."""


class TransactionError(KVStoreError):
    """A transaction could not be committed; the message says which store failed and what was rolled back."""


class ConflictError(TransactionError):
    """A key a transaction read was changed (or created, or deleted) by another writer before the
    transaction committed. Nothing was written; run the transaction again (``pm.atomic`` does)."""


class LockTimeout(KVStoreError, TimeoutError):
    """A lock (or ``get_or_set``'s wait for another caller's value) was not obtained in time."""


class LockNotOwnedError(KVStoreError):
    """Releasing or extending a lock this holder no longer owns: it expired (its ttl passed) and
    another holder may have taken it, so the critical section was not exclusive to the end."""


class InvalidArgumentError(KVStoreError, ValueError, TypeError):
    """An argument other than a key or a TTL is unusable (a negative timeout, ``fn`` not callable)."""


class InvalidKeyError(KVStoreError, ValueError):
    """A key the store cannot hold safely (empty, not a ``str``, a path escape, too long)."""


class InvalidTTLError(KVStoreError, ValueError):
    """A TTL that is zero, negative, or not a number or duration string."""


class NotAnIntegerError(KVStoreError, TypeError):
    """``incr`` on a key whose stored value is not an integer."""


class NotAListError(KVStoreError, TypeError):
    """``append`` on a key whose stored value is not a list; the value is left unchanged."""
