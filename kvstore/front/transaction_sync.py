# Generated from kvstore/front/transaction_async.py by tools/async_to_sync.py: do not edit, edit that file.
"""A transaction's operations, written once.

The asyncio class is the source; the synchronous one is generated from it by
``tools/async_to_sync.py``. The state, the rules and the commit both run are in :class:`~kvstore.transaction.TransactionBase`; the commit runs on
the synchronous stores, in a worker thread on asyncio (the ``blocking`` the manager passes).
"""

from __future__ import annotations

import time
from typing import Any, overload

from .._marks import MISSING
from ..errors import KVStoreError
from ..store import TTL
from ..transaction import UNSTAGED, TransactionBase

__all__ = ["Transaction"]


class Transaction(TransactionBase):
    """Staged writes and recorded reads of one ``with pm.transaction() as tx:`` block.

    ``tx.save``/``tx.delete`` stage, at once on both fronts; ``tx.load``/``tx.exists`` see the
    staged writes first, then read the store once per key (a second read returns the same
    value). Nothing reaches a store before the block ends without an exception; every key
    read is checked again at commit (:class:`~kvstore.ConflictError` when another writer
    changed it).
    """

    def save(self, key: str, value: Any, ttl: TTL = None, store: str | None = None) -> bool:
        """Stage a save (checked now: a bad key or TTL fails inside the block, not at commit)."""
        entry = self._entry(key, store)
        entry.store.check_key(key)
        entry.store.resolve_ttl(ttl)
        self._staged[(entry.name, key)] = (value, ttl)
        return True

    def delete(self, key: str, store: str | None = None) -> bool:
        """Stage a delete. The synchronous ``tx.delete`` returns True when the key exists now
        (not a checked read); the asyncio one returns None (that would be a read, which cannot
        be awaited here: ask ``tx.exists(key)`` first)."""
        entry = self._entry(key, store)
        existed = self._existed(entry, key)
        self._staged[(entry.name, key)] = (MISSING, None)
        return existed

    @overload
    def load(self, key: str, default: Any = None, store: str | None = None,
             as_type: None = None) -> Any: ...

    @overload
    def load(self, key: str, default: Any = None, store: str | None = None, *,
             as_type: type[Any]) -> Any: ...

    def load(self, key: str, default: Any = None, store: str | None = None,
             as_type: Any = None) -> Any:
        """The staged value, else the stored one (recorded: checked again at commit)."""
        entry = self._entry(key, store)
        found = self._staged_value(entry, key, default)
        if found is not UNSTAGED:
            return found
        return self._value(entry, key, self._read(entry, key), default, as_type)

    def exists(self, key: str, store: str | None = None) -> bool:
        """True when ``key`` is staged or stored (recorded like a load)."""
        entry = self._entry(key, store)
        found = self._staged_value(entry, key, MISSING)
        if found is not UNSTAGED:
            return found is not MISSING
        return self._read(entry, key) is not MISSING

    def _read(self, entry: Any, key: str) -> Any:
        blob = self._recorded(entry, key)
        if blob is not UNSTAGED:
            return blob
        start = time.perf_counter()
        try:
            blob = entry.front.raw_get(key)
        except KVStoreError as exc:
            self._core.failed("transaction", entry, exc, key)
            raise
        return self._remember(entry, key, blob, start)

    def commit(self) -> None:
        """Commit every staged write, all or nothing (the manager calls this at the block's
        end: see :func:`~kvstore.transaction.commit_parts`)."""
        self._blocking(self._commit)
