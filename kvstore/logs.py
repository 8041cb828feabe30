"""Logs: append-only records (transcripts, events, audit trails) with dense sequence numbers.

``store.log(name)`` / ``pm.log(name)`` give a :class:`Log`: ``append(record)`` returns the next
sequence number (1, 2, 3 ... per log, atomically across threads and processes), ``read(after,
limit)`` pages through ``(seq, record)`` oldest first, ``len(log)``, ``delete()``.

Each store keeps a log natively, through five byte-level operations (``_log_append``,
``_log_read``, ``_log_len``, ``_log_delete``, ``_log_names``): a list in memory, a table on
SQLite and PostgreSQL, a Redis list, a JSON Lines file on the file store. Everything else is
here, once.
"""

from __future__ import annotations

from typing import Any, Iterator

from .errors import InvalidArgumentError

__all__ = ["Log", "check_page"]

_PAGE = 1000


def check_page(after: Any, limit: Any) -> None:
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise InvalidArgumentError(f"after must be an int >= 0, got {after!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidArgumentError(f"limit must be None or an int >= 0, got {limit!r}")


class Log:
    """An append-only log named ``name`` in ``store``."""

    def __init__(self, store: Any, name: str) -> None:
        store.check_key(name)
        self.store = store
        self.name = name

    def append(self, record: Any) -> int:
        """Add ``record`` at the end; returns its sequence number (1 for the first)."""
        return int(self.store.raw_log_append(self.name, self.store.encode_record(self.name, record)))

    def read(self, after: int = 0, limit: int | None = None) -> list[tuple[int, Any]]:
        """``(seq, record)`` for the records with ``seq > after``, oldest first, at most
        ``limit`` of them."""
        check_page(after, limit)
        if limit == 0:
            return []
        rows = self.store.raw_log_read(self.name, after, limit)
        return [(seq, self.store.decode_record(self.name, blob)) for seq, blob in rows]

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        """Every ``(seq, record)``, read a page at a time."""
        after = 0
        while True:
            page = self.read(after, _PAGE)
            yield from page
            if len(page) < _PAGE:
                return
            after = page[-1][0]

    def __len__(self) -> int:
        return int(self.store.raw_log_len(self.name))

    def delete(self) -> bool:
        """Remove the whole log; True when it existed."""
        return bool(self.store.raw_log_delete(self.name))

    def __repr__(self) -> str:
        return f"Log({self.name!r}, store={type(self.store).__name__})"
