"""kvstore: one interface to keep application state in memory, Redis, SQLite, PostgreSQL or files.

>>> from kvstore import MemoryStore
>>> with MemoryStore() as store:
...     store.save("session:1", {"user": "ann"}, ttl="15m")
...     store.load("session:1")
True
{'user': 'ann'}

A store from one URL string (``memory://``, ``sqlite:///path.db``, ``file:///folder``,
``redis://...``, ``postgresql://...``; see :func:`kvstore.stores.opening.open_url`):

>>> import kvstore
>>> with kvstore.open_url("memory://?max_entries=100") as store:
...     store.max_entries
100
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import registry as _registry
from .errors import (ConfigError, ConflictError, CorruptDataError, InvalidArgumentError,
                     InvalidKeyError, InvalidTTLError, KVStoreError, LockNotOwnedError, LockTimeout,
                     NotAListError, NotAnIntegerError, SerializationError, StoreUnavailableError,
                     TransactionError)
from .locking import Lock
from .serializers import Serializer
from .store import PersistenceStore, parse_ttl
from .stores.memory import MemoryStore

if TYPE_CHECKING:  # the lazily loaded names below, for type checkers and IDEs
    from .health import Health
    from .manager import PersistenceManager
    from .stores.opening import open_url
    from .stores.file import FileStore
    from .stores.postgres import PostgresStore
    from .stores.redis import RedisStore
    from .stores.sqlite import SQLiteStore

__version__ = "0.2.0"

__all__ = [
    "PersistenceManager", "PersistenceStore",
    "MemoryStore", "SQLiteStore", "FileStore", "RedisStore", "PostgresStore",
    "Serializer", "parse_ttl",
    "KVStoreError", "ConfigError", "SerializationError", "StoreUnavailableError",
    "TransactionError", "CorruptDataError", "InvalidKeyError", "InvalidTTLError",
    "NotAnIntegerError", "ConflictError", "LockTimeout", "LockNotOwnedError", "NotAListError",
    "InvalidArgumentError", "Lock", "open_url",
    "Health",
]

# Stores load on first use: `import kvstore` needs neither redis nor psycopg, and stays fast. The
# store classes are the built-in backends' (kvstore.registry), by their class names.
_LAZY = {"PersistenceManager": "kvstore.manager:PersistenceManager",
         "open_url": "kvstore.stores.opening:open_url",
         "Health": "kvstore.health:Health"}
_LAZY.update((b.store.rpartition(":")[2], b.store) for b in _registry.BUILTIN
             if b.store.rpartition(":")[2] in __all__)


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'kvstore' has no attribute {name!r}")
    value = _registry.load(target)
    globals()[name] = value
    return value
