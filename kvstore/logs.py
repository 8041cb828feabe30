"""Logs: append-only records (transcripts, events, audit trails) with dense sequence numbers.

``store.log(name)`` / ``pm.log(name)`` give a :class:`Log`: ``append(record)`` returns the next
sequence number (1, 2, 3 ... per log, atomically across threads and processes), ``read(after,
limit)`` pages through ``(seq, record)`` oldest first, ``len(log)``, ``delete()``.

The operations are written once, in :mod:`kvstore.front.log_async` (``log_sync`` is generated
from it), over the backend contract's five log methods (``raw_log_append``, ``raw_log_read``,
``raw_log_len``, ``raw_log_delete``, ``raw_log_names``).
"""

from __future__ import annotations

from .front.log_sync import LogOps
from .rules import check_page

__all__ = ["Log", "check_page"]


class Log(LogOps):
    """An append-only log named ``name`` in ``store``: ``append``, ``read``, ``len(log)``,
    iteration, ``delete``."""
