# Generated from kvstore/front/log_async.py by tools/async_to_sync.py: do not edit, edit that file.
"""An append-only log's operations, written once (the asyncio source of ``log_sync.py``).

Each store keeps a log natively through five byte-level methods of the backend contract
(``raw_log_append``, ``raw_log_read``, ``raw_log_len``, ``raw_log_delete``, ``raw_log_names``):
a list in memory, a table on SQLite and PostgreSQL, a Redis list, a JSON Lines file on the
file store. Everything else is here, once.
"""

from __future__ import annotations

from typing import Any, Iterator

from ..errors import InvalidArgumentError
from ..rules import check_page

__all__ = ["LogOps"]

_PAGE = 1000


class LogOps:
    """An append-only log named ``name`` in ``store``."""

    def __init__(self, store: Any, name: str) -> None:
        store.check_key(name)
        self.store = store
        self.name = name
        #: Where appends and reads are counted (``log_appends``, ``log_reads``): the manager's
        #: stats of the store (set by ``pm.log``); None for a store's own ``store.log``.
        self.counts: Any = None

    def append(self, record: Any) -> int:
        """Add ``record`` at the end; returns its sequence number (1 for the first)."""
        store = self.store
        seq = int(store.raw_log_append(self.name, store.encode_record(self.name, record)))
        if self.counts is not None:
            self.counts.log_appends += 1
        return seq

    def read(self, after: int = 0, limit: int | None = None, reverse: bool = False
             ) -> list[tuple[int, Any]]:
        """``(seq, record)`` for the records with ``seq > after``, oldest first (``reverse=True``:
        newest first), at most ``limit`` of them."""
        check_page(after, limit, reverse)
        if limit == 0:
            return []
        store = self.store
        read = store.raw_log_read_desc if reverse else store.raw_log_read
        rows = read(self.name, after, limit)
        if self.counts is not None:
            self.counts.log_reads += 1
        return [(seq, store.decode_record(self.name, blob)) for seq, blob in rows]

    def tail(self, n: int) -> list[tuple[int, Any]]:
        """The last ``n`` records (fewer when the log is shorter), oldest first: one read from
        the end of the log."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidArgumentError(f"n must be a positive int, got {n!r}")
        rows = self.read(0, n, reverse=True)
        rows.reverse()
        return rows

    def last(self) -> tuple[int, Any] | None:
        """The newest ``(seq, record)``, or None when the log is empty (one call)."""
        rows = self.read(0, 1, reverse=True)
        return rows[0] if rows else None

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        """Every ``(seq, record)``, read a page at a time."""
        after = 0
        while True:
            page = self.read(after, _PAGE)
            for item in page:
                yield item
            if len(page) < _PAGE:
                return
            after = page[-1][0]

    def length(self) -> int:
        """How many records the log holds (``len(log)`` on the synchronous front)."""
        return int(self.store.raw_log_len(self.name))

    __len__ = length

    def delete(self) -> bool:
        """Remove the whole log; True when it existed."""
        return bool(self.store.raw_log_delete(self.name))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, store={type(self.store).__name__})"
