"""The backend contract: the byte-level methods a store implements (the extension API).

A backend moves blobs; :class:`~kvstore.PersistenceStore` does the rest (key checks, TTL
parsing, serialization, ``update``/``append``/``get_or_set``/locks, both fronts). As with
dogpile.cache's ``BytesBackend``, a new backend subclasses :class:`~kvstore.PersistenceStore`
and writes the ``raw_*`` methods below; every public operation then works, on the synchronous
front and (in a worker thread, or natively with an async driver) on :mod:`kvstore.aio`.

Terms:

- **key**: a ``str`` already checked by ``check_key`` (the base calls it before any ``raw_*``).
- **blob**: what the store keeps for a value, made by ``encode``: ``bytes`` (a serializer's
  headered bytes, or an integer's ASCII digits, so that ``raw_incr`` can be native); the object
  itself on a store with ``serializer=None`` (memory). A backend stores blobs as they are and
  gives back equal ones; it never looks inside (except ``raw_incr``'s digits).
- **ttl**: seconds from now as a ``float``, or ``None`` for no expiry (never a string, never
  the default: the base resolved it). Where it says so, also :data:`~kvstore.store.KEEP`: keep
  the key's current expiry.
- **MISSING** (:data:`kvstore.store.MISSING`): "no live value" (absent or expired), returned by
  ``raw_get`` and passed as a blob to delete (``raw_cas``, ``raw_commit``'s ops).
- **live**: present and not expired. An expired key is missing to every method.

Required (abstract): ``raw_get``, ``raw_set``, ``raw_delete``, ``raw_keys``, ``raw_ttl``,
``raw_incr``, ``raw_clear``, ``raw_commit``, ``open_meta`` and the five log methods
``raw_log_append``, ``raw_log_read``, ``raw_log_len``, ``raw_log_delete``, ``raw_log_names``.

Defaults built on those, to replace with native versions where the backend has them:
``raw_add`` and ``raw_cas`` (on ``raw_commit``), ``raw_touch`` (on ``raw_get`` + ``raw_cas``),
``raw_exists`` (``raw_get``), ``raw_get_many`` / ``raw_set_many`` / ``raw_delete_many`` (one
call per key), ``raw_keys_after`` (skips ``raw_keys``), ``raw_keys_desc`` (``raw_keys``
listed once, reversed), ``raw_log_read_desc`` (``raw_log_read`` of the whole log, reversed), ``raw_rows`` (keys + ``raw_snapshot``),
``raw_put_rows`` and ``raw_apply`` (``raw_commit``), ``raw_snapshot`` (``raw_get`` +
``raw_ttl``), ``raw_undo`` (``raw_add`` / ``raw_cas``), ``raw_log_blobs`` (``raw_log_read``),
``raw_log_blob_in`` (in :class:`~kvstore.PersistenceStore`: it decodes),
``raw_replace_all`` (rows + logs, generic), ``lock_id``, ``shared_journal`` (None),
``raw_outcome`` / ``raw_forget`` (optimistic stores only), ``close`` (nothing to release).

Thread-safety and atomicity: every method may be called from several threads at once (the
manager, the async front's worker threads) and by other processes on the same data (the
file, SQLite, Redis and PostgreSQL stores are shared). Each method is atomic on its own:
``raw_set``/``raw_delete`` are never seen half-done; ``raw_incr``, ``raw_add`` and ``raw_cas``
are single atomic steps across threads and processes (a lock, one SQL statement, one Redis
command or script) -- everything ``update``, ``append``, ``get_or_set`` and locks promise rests
on these three; ``raw_set_many`` / ``raw_delete_many`` / ``raw_commit`` apply all or nothing.
``raw_keys`` may reflect concurrent writes or not, but never lists a key twice.
"""

from __future__ import annotations

import itertools
import threading
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from ._marks import MISSING, Check, Op
from .errors import ConflictError
from .rules import backoff

if TYPE_CHECKING:
    from ._commit import Before

__all__ = ["BackendContract"]

_META_LOCK = threading.Lock()


class BackendContract(ABC):
    """The byte-level methods of a store (see the module's documentation for the terms)."""

    #: Whether data survives a restart of the process (backups, snapshots use it).
    durable: bool = True

    #: True for a store whose ``raw_commit`` checks and writes at exit, without a held lock.
    optimistic: bool = False

    #: False for a store whose multi-key commit a killed process can leave half-applied (files:
    #: one rename per key); transactions then record it in the commit journal.
    crash_atomic: bool = True

    #: True for a server every machine reaches (PostgreSQL, Redis): a transaction over such
    #: stores only records its commit where they all can see it (:meth:`shared_journal`).
    shares_data: bool = False

    serializer: Any

    # -- required ---------------------------------------------------------------------------------

    @abstractmethod
    def raw_get(self, key: str) -> Any:
        """The stored blob, or MISSING when absent or expired."""

    @abstractmethod
    def raw_set(self, key: str, blob: Any, ttl: float | None) -> None:
        """Store the blob (replacing any), expiring ``ttl`` seconds from now (None: never)."""

    @abstractmethod
    def raw_delete(self, key: str) -> bool:
        """Remove the key; True when a live key existed."""

    @abstractmethod
    def raw_keys(self, prefix: str) -> Iterator[str]:
        """Live keys starting with ``prefix`` (compared literally: no wildcards), sorted.
        May be lazy (a cursor read a page at a time)."""

    @abstractmethod
    def raw_ttl(self, key: str) -> float | None:
        """Seconds left; None for no expiry or a missing key."""

    @abstractmethod
    def raw_incr(self, key: str, amount: int, ttl: float | None) -> int:
        """Atomically add ``amount`` to the integer stored as ASCII digits; the new value. A
        missing key starts at 0, expiring ``ttl`` seconds from now (None: never); an existing
        key keeps its expiry. Raises :class:`NotAnIntegerError` for any other stored blob."""

    @abstractmethod
    def raw_clear(self, prefix: str) -> int:
        """Remove the keys with ``prefix``; how many live keys were removed."""

    @abstractmethod
    def raw_commit(self, ops: list[Op], checks: list[Check],
                   before: "Before | None" = None) -> AbstractContextManager[None]:
        """A context manager that applies ``ops`` atomically, provided every check holds.

        Each op is ``(key, blob, ttl)``: ``blob is MISSING`` deletes the key; ``ttl`` is
        seconds from now, None (no expiry) or KEEP (the key's current expiry; only for a key
        that one of the checks proves live). Each check is ``(key, expected)``: the key must
        still hold exactly the blob ``expected`` (as returned by ``raw_get``), or be absent when
        ``expected is MISSING``; otherwise :class:`ConflictError` is raised and nothing is
        written. The checks and the writes are one atomic step: no other writer in any thread
        or process can come between them.

        Entering takes the store's write lock (where it has one) and verifies the checks; the
        ``with`` block runs while it is held (a transaction nests the other stores' parts
        there); a normal exit commits, an exception undoes everything, including a partial
        apply. Stores without a lock to hold (Redis) check and write in one step at exit and
        set ``optimistic = True``.

        With ``before`` (a transaction's), the store also sets ``before.images`` to what the
        written keys held (a :meth:`raw_snapshot`), read where no other writer can change them
        before the writes: under the lock, before the block runs; an optimistic store, in its
        commit script, at exit (it also records them under ``before.token``, see
        :meth:`raw_outcome`). An undo from these images never reverts another writer's save.
        """

    @abstractmethod
    def open_meta(self) -> Any:
        """A sibling store for lock records (``lock:<name>``, ``fill:<key>``), sharing this
        store's connections, that this store's ``keys()``, ``clear()`` and backups never see.
        Called once, on first use of :attr:`meta`."""

    @abstractmethod
    def raw_log_append(self, name: str, blob: Any) -> int:
        """Append atomically; the new record's sequence number (dense: 1, 2, 3 ... per log,
        also across processes)."""

    @abstractmethod
    def raw_log_read(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        """``(seq, blob)`` with ``seq > after``, oldest first, at most ``limit``."""

    @abstractmethod
    def raw_log_len(self, name: str) -> int:
        """How many records the log holds."""

    @abstractmethod
    def raw_log_delete(self, name: str) -> bool:
        """Remove the log; True when it existed."""

    @abstractmethod
    def raw_log_names(self, prefix: str) -> list[str]:
        """Names of the logs starting with ``prefix``, sorted."""

    # -- defaults, built on the required methods ----------------------------------------------------

    def raw_exists(self, key: str) -> bool:
        """True when the key is live."""
        return self.raw_get(key) is not MISSING

    def raw_get_many(self, keys: list[str]) -> dict[str, Any]:
        """``{key: blob}`` for the live keys among ``keys`` (distinct, checked)."""
        found = {}
        for key in keys:
            blob = self.raw_get(key)
            if blob is not MISSING:
                found[key] = blob
        return found

    def raw_set_many(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        """Store every ``(key, blob)``, all expiring ``ttl`` from now (native: one round trip,
        all or nothing)."""
        for key, blob in items:
            self.raw_set(key, blob, ttl)

    def raw_delete_many(self, keys: list[str]) -> int:
        """Remove the keys; how many live keys existed."""
        return sum(1 for key in keys if self.raw_delete(key))

    def raw_add(self, key: str, blob: Any, ttl: float | None) -> bool:
        """Set-if-absent, atomically: store ``blob`` unless the key holds a live value."""
        try:
            with self.raw_commit([(key, blob, ttl)], [(key, MISSING)]):
                pass
        except ConflictError:
            return False
        return True

    def raw_cas(self, key: str, expected: Any, new: Any, ttl: Any) -> bool:
        """Compare-and-swap, atomically: replace the live blob ``expected`` by ``new``
        (MISSING: delete it) with ``ttl`` (seconds, None, or KEEP). False when the key holds
        anything else."""
        try:
            with self.raw_commit([(key, new, ttl)], [(key, expected)]):
                pass
        except ConflictError:
            return False
        return True

    def raw_touch(self, key: str, ttl: float | None) -> bool:
        """New expiry for a live key (None: none); False when missing. This default
        compare-and-swaps the blob onto itself, retrying when a writer came between."""
        attempt = 0
        while True:
            blob = self.raw_get(key)
            if blob is MISSING:
                return False
            if self.raw_cas(key, blob, blob, ttl):
                return True
            time.sleep(backoff(attempt))
            attempt += 1

    def raw_keys_after(self, prefix: str, start_after: str) -> Iterator[str]:
        """Live keys with ``prefix`` sorting after ``start_after``, sorted (stores that page by
        key start there instead of skipping)."""
        return itertools.dropwhile(lambda k: k <= start_after, self.raw_keys(prefix))

    def raw_keys_desc(self, prefix: str, start_before: str | None,
                      limit: int | None = None) -> Iterator[str]:
        """The keys of :meth:`raw_keys` in DEScending order, only those sorting before
        ``start_before`` (None: from the last), at most ``limit`` (None: all). Stores that page
        by key override this (``ORDER BY key DESC``, the first page no longer than ``limit``);
        this default lists the prefix once and reverses it."""
        found = list(self.raw_keys(prefix))
        found.reverse()
        if start_before is not None:
            found = list(itertools.dropwhile(lambda k: k >= start_before, found))
        return iter(found if limit is None else found[:limit])

    def raw_log_read_desc(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        """The records of :meth:`raw_log_read` (``seq > after``) newest first, at most ``limit``
        (None: all). Stores that index by seq override this (``ORDER BY seq DESC``); this
        default reads every record after ``after`` and reverses them."""
        rows = list(self.raw_log_read(name, after, None))
        rows.reverse()
        return rows if limit is None else rows[:limit]

    def raw_rows(self, prefix: str, after: str | None, limit: int) -> list[tuple[str, Any, float | None]]:
        """One page of stored rows, sorted by key: ``(key, blob, ttl)`` for up to ``limit`` keys
        with ``prefix`` after ``after``; a row whose blob is MISSING (expired, deleted) still
        moves the page on. Exports, backups and migrations stream through this; stores that
        can read key and value in one query do."""
        keys = list(itertools.islice(
            self.raw_keys(prefix) if after is None else self.raw_keys_after(prefix, after), limit))
        return self.raw_snapshot(keys)

    raw_rows.lists_every_key = True  # type: ignore[attr-defined]  # see kvstore.rows.iter_rows

    def raw_put_rows(self, rows: list[tuple[str, Any, float | None]]) -> None:
        """Bulk write ``(key, blob, ttl)`` rows atomically (imports, migrations, restores);
        stores with a faster bulk path than a transaction (PostgreSQL's COPY) override it."""
        self.raw_apply(rows)

    def raw_apply(self, ops: list[Op]) -> None:
        """Apply writes atomically, unconditionally (imports, migrations, snapshots)."""
        with self.raw_commit(ops, []):
            pass

    def raw_snapshot(self, keys: list[str]) -> list[tuple[str, Any, float | None]]:
        """The current state of ``keys`` as ops that :meth:`raw_apply` can restore later (not
        atomic by itself: :meth:`raw_commit` calls it under the store's lock)."""
        return [(key, self.raw_get(key), self.raw_ttl(key)) for key in keys]

    def raw_undo(self, applied: list[Op], before: list[tuple[str, Any, float | None]]) -> list[str]:
        """Put back what ``before`` (the images read by :meth:`raw_commit`) held for the keys
        that ``applied`` wrote, key by key and only where a key still holds exactly what was
        written (a compare-and-swap): a newer write by someone else is left alone. Returns the
        keys left as they are (changed since; a key rewritten since with the very same bytes
        cannot be told apart and is put back)."""
        old = {key: (blob, ttl) for key, blob, ttl in before}
        written = {key: blob for key, blob, _ in applied}
        kept = []
        for key, blob in written.items():
            old_blob, old_ttl = old.get(key, (MISSING, None))
            if blob is MISSING:
                done = old_blob is MISSING or self.raw_add(key, old_blob, old_ttl)
            else:
                done = self.raw_cas(key, blob, old_blob, old_ttl)
            if not done:
                kept.append(key)
        return kept

    def raw_outcome(self, token: str, keys: list[str]) -> list[tuple[str, Any, float | None]] | None:
        """For an optimistic store: whether the commit named ``token`` (see
        :meth:`raw_commit`) was applied, settling it for good. Its before-images of ``keys``
        when it was, None when it was not (and now never will be). Raises
        :class:`StoreUnavailableError` when the store cannot be asked."""
        raise NotImplementedError(f"{type(self).__name__} does not mark its commits")

    def raw_forget(self, token: str) -> None:
        """Drop what the commit named ``token`` recorded (it is over); best effort."""

    def shared_journal(self) -> Any:
        """A commit journal other machines see, kept by this store (PostgreSQL), or None."""
        return None

    def lock_id(self) -> str:
        """Names this store's write lock; transactions take several stores' locks in the order
        of these names, so two transactions never wait for each other in a circle."""
        return f"{type(self).__name__}:{id(self)}"

    @property
    def meta(self) -> Any:
        """The lock namespace (:meth:`open_meta`, opened on first use)."""
        meta = self.__dict__.get("_meta_store")
        if meta is None:
            with _META_LOCK:
                meta = self.__dict__.get("_meta_store")
                if meta is None:
                    meta = self.open_meta()
                    self.__dict__["_meta_store"] = meta
        return meta

    # -- logs: restores and log transfer (kvstore.restore, kvstore.transfer) -----------------------

    def raw_log_blobs(self, name: str, after: int = 0, limit: int | None = None) -> list[tuple[int, Any]]:
        """``(seq, blob)`` of log ``name`` as stored: serializer bytes (backups, raw exports)."""
        return self.raw_log_read(name, after, limit)

    def raw_replace_all(self, rows: Iterable[tuple[str, Any, float | None]],
                        logs: Iterable[tuple[str, list[Any]]] | None) -> None:
        """Replace every key by ``rows`` and, unless ``logs`` is None, every log by ``logs``
        (see :mod:`kvstore.rows`): a failure partway leaves the old contents."""
        from .rows import replace_generic

        replace_generic(self, rows, logs)
