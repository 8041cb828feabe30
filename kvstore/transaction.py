"""Isolated transactions across stores: stage writes, record reads, commit all or nothing.

``tx.load`` / ``tx.exists`` remember the exact blob they read. At commit each store's part
becomes one ``raw_commit(ops, checks)``: the writes, applied only if every key read from that
store still holds what was read. The parts are nested, so every store's write lock is held at
once (taken in the order of the stores' lock names, so two commits never wait for each other in
a circle) while the checks run:

- a check that fails anywhere raises :class:`ConflictError` before any store commits, and
  every store rolls back its own part: nothing is written;
- stores that write at exit without a held lock (Redis) are innermost, so they commit first
  and their conflict also rolls back the others;
- if a store fails to *commit* after an inner store already committed (an I/O error at
  COMMIT), the committed stores are put back key by key, where a key still holds what this
  transaction wrote, from the before-images each store read under its own lock (so a save
  by another writer is never reverted);
- a store whose reply to the commit is lost (Redis answering after the socket timeout) is
  asked whether it applied: yes, and the commit goes on; no, and every store is put back; out
  of reach, and the commit is *in doubt*: the others are put back and the journal's record
  stays for the next transaction or manager to settle.
"""

from __future__ import annotations

import secrets
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterator

from ._commit import Before, in_doubt
from .core import Core, Entry
from .journal import Journal
from .errors import ConflictError, InvalidArgumentError, KVStoreError, TransactionError
from .astype import from_dict
from .store import MISSING, TTL, Check, Op, PersistenceStore

__all__ = ["TransactionBase", "commit_parts", "Part", "UNSTAGED", "attempts"]

UNSTAGED: Any = type("Unstaged", (), {"__repr__": lambda self: "UNSTAGED"})()


class Part:
    """One store's share of a commit."""

    __slots__ = ("name", "store", "ops", "checks")

    def __init__(self, name: str, store: PersistenceStore) -> None:
        self.name = name
        self.store = store
        self.ops: list[Op] = []
        self.checks: list[Check] = []


class TransactionBase:
    """The state of one ``with pm.transaction() as tx:`` block and the rules both fronts share:
    staged writes, recorded reads, the commit. The operations (``tx.save``, ``tx.load``...) are
    written once in :mod:`kvstore.front.transaction_async`; :class:`Transaction` is their
    synchronous twin, :class:`kvstore.aio.AsyncTransaction` the asyncio one."""

    def __init__(self, core: Core, blocking: Callable[..., Any]) -> None:
        self._core = core
        #: Runs the commit: inline on the synchronous front, in a worker thread on asyncio.
        self._blocking = blocking
        # (store name, key) -> (value or MISSING for a delete, ttl argument)
        self._staged: dict[tuple[str, str], tuple[Any, TTL]] = {}
        # (store name, key) -> the blob read (MISSING: absent)
        self._reads: dict[tuple[str, str], Any] = {}
        self._done = False

    def _entry(self, key: str, store: str | None) -> Entry:
        if self._done:
            raise TransactionError("transaction already finished")
        return self._core.entry(key, store)

    def _existed(self, entry: Entry, key: str) -> bool:
        """Whether ``key`` exists now, for the synchronous ``tx.delete`` (not a checked read)."""
        staged = self._staged.get((entry.name, key))
        if staged is not None:
            return staged[0] is not MISSING
        if (entry.name, key) in self._reads:
            return self._reads[(entry.name, key)] is not MISSING
        try:
            return entry.store.exists(key)
        except KVStoreError as exc:
            self._core.failed("transaction", entry, exc, key)
            raise

    # The steps of load/exists (kvstore.front.transaction_async), around the read.

    def _staged_value(self, entry: Entry, key: str, default: Any) -> Any:
        """The value this transaction staged for ``key`` (``default`` for a staged delete), or
        UNSTAGED."""
        staged = self._staged.get((entry.name, key))
        if staged is None:
            return UNSTAGED
        return default if staged[0] is MISSING else staged[0]

    def _recorded(self, entry: Entry, key: str) -> Any:
        """The blob read earlier (repeatable reads), or UNSTAGED; checks the key first."""
        entry.store.check_key(key)
        return self._reads.get((entry.name, key), UNSTAGED)

    def _remember(self, entry: Entry, key: str, blob: Any, start: float) -> Any:
        self._core.loaded(entry, [] if blob is MISSING else [key], blob is MISSING, start)
        self._reads[(entry.name, key)] = blob
        return blob

    @staticmethod
    def _value(entry: Entry, key: str, blob: Any, default: Any, as_type: Any) -> Any:
        if blob is MISSING:
            return default
        value = entry.store.decode(key, blob)
        return value if as_type is None else from_dict(as_type, value)

    def __len__(self) -> int:
        return len(self._staged)

    # -- commit ---------------------------------------------------------------------------------

    def _commit(self) -> None:
        """Encode every staged value, then apply each store's part, checked and all at once
        (blocking: the asyncio front runs this in a worker thread)."""
        if self._done:
            raise TransactionError("transaction already finished")
        self._done = True
        core = self._core
        parts: dict[str, Part] = {}

        def part(name: str) -> Part:
            if name not in parts:
                parts[name] = Part(name, core.stores[name])
            return parts[name]

        for (name, key), (value, ttl) in self._staged.items():
            p = part(name)
            if value is MISSING:
                p.ops.append((key, MISSING, None))
                continue
            seconds = p.store.resolve_ttl(ttl if ttl is not None else core.ttl_for(key, name))
            p.ops.append((key, p.store.encode(key, value), seconds))
        for (name, key), blob in self._reads.items():
            part(name).checks.append((key, blob))
        if not parts:
            return
        if core.journal is not None and core.journal.pending():  # what this process left in doubt
            core.journal.recover(core.stores, lambda exc: core.emit_error("journal", "transaction",
                                                                          exc))
        try:
            commit_parts(list(parts.values()), core.journal)
        except ConflictError:
            raise  # the caller's situation, not a store's failure: no error event
        except KVStoreError as exc:
            failed = getattr(exc, "store", None)
            core.emit_error("commit", failed or "transaction", exc)
            if failed is not None:
                core.stats[failed].errors += 1
            raise
        for p in parts.values():
            if p.ops:
                core.committed(p.name, p.ops)

    def discard(self) -> None:
        self._staged.clear()
        self._reads.clear()
        self._done = True


def attempts(fn: Any, retries: Any) -> range:
    """The attempt numbers of ``atomic(fn, retries)``, after checking its arguments."""
    if not callable(fn):
        raise InvalidArgumentError(f"atomic: fn must be callable, got {fn!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidArgumentError(f"atomic: retries must be an int >= 0, got {retries!r}")
    return range(retries + 1)


def commit_parts(parts: list[Part], journal: Journal | None = None) -> None:
    """Commit every store's part, all or nothing (see the module docstring).

    Each store reads the before-images of its written keys under its own write lock (Redis,
    in its commit script), so an undo never reverts another writer's save. With a
    ``journal`` and writes to two durable stores or more (or several keys of a store whose
    commit is not atomic under a crash: files; or Redis beside another store), the commit is
    recorded once every lock is held and before any store's writes become visible, and the
    record removed after the last store, so a crash of this process in between is undone by
    the next manager to open (see :mod:`kvstore.journal`).

    Raises :class:`ConflictError` (nothing written) or :class:`TransactionError` naming the
    store that failed and what happened: every store undone, or, when that store's reply was
    lost and it could not be reached to find out, in doubt and left to the journal (the next
    transaction or manager settles it). Either has ``store`` and ``outcome`` attributes.
    """
    # Outermost first: stores holding locks, in lock-name order; optimistic stores innermost.
    order = sorted(parts, key=lambda p: (p.store.optimistic, p.store.lock_id()))
    durable = [p for p in order if p.ops and p.store.durable]
    written = [p for p in order if p.ops]
    record = journal is not None and (len(durable) > 1 or any(
        not p.store.crash_atomic and len(p.ops) > 1 for p in durable) or (
        len(written) > 1 and any(p.store.optimistic for p in durable)))
    # Over servers only (PostgreSQL, Redis), the record goes where every machine sees it.
    shared = next((j for j in (p.store.shared_journal() for p in durable) if j is not None),
                  None) if record and all(p.store.shares_data for p in durable) else None
    token = secrets.token_hex(16)
    # Undo information for every part that could commit before another one fails: all but
    # the outermost, which commits last (and the outermost too, for the journal); an
    # optimistic store always marks its commit, so a lost reply can be settled.
    befores = {p.name: Before(token, record, record or len(written) > 1) for p in written
               if record or p is not order[0] or p.store.optimistic}
    keeper = journal if shared is None else shared
    if shared is not None:
        for p in durable:
            befores[p.name].holds_record = p.store.shared_journal() is shared
    handle: Any = None

    def locked() -> None:  # every lock held, nothing visible yet: record the commit
        nonlocal handle
        if record:
            handle = keeper.begin(token, [  # type: ignore[union-attr]
                (p.name, p.ops, befores[p.name].images, befores[p.name].marked)
                for p in durable])

    try:
        _commit_in_order(order, befores, locked, record)
    except TransactionError as error:
        if handle is not None:
            if getattr(error, "outcome", None) == "in doubt":
                if shared is not None:  # named first: a recovery may settle it once released
                    journal.left.append(token)  # type: ignore[union-attr]
                keeper.release(handle)  # type: ignore[union-attr]
                raise
            keeper.end(handle)  # type: ignore[union-attr]
        _forget(order, befores)
        raise
    except BaseException:  # not a store's failure (KeyboardInterrupt): the undo ran
        if handle is not None:
            keeper.end(handle)  # type: ignore[union-attr]
        raise
    if handle is not None:
        keeper.end(handle)  # type: ignore[union-attr]
    _forget(order, befores)


def _forget(order: list[Part], befores: dict[str, Before]) -> None:
    """Drop the stores' markers of a journaled commit that is over (after its record)."""
    for p in order:
        before = befores.get(p.name)
        if before is not None and before.marked and before.recorded:
            p.store.raw_forget(before.token)


def _commit_in_order(order: list[Part], befores: dict[str, Before],
                     locked: Callable[[], None], recorded: bool) -> None:
    committed: list[Part] = []
    failure: list[Part] = []
    try:
        with ExitStack() as stack:
            for p in order:
                stack.enter_context(_part(p, befores.get(p.name), committed, failure))
            locked()
    except BaseException as exc:
        name = failure[0].name if failure else order[0].name
        kept: list[str] = []
        for p in reversed(committed):
            images = befores[p.name].images if p.name in befores else None
            try:
                kept += [f"{p.name}:{key}" for key in p.store.raw_undo(p.ops, images or [])]
            except Exception:  # keep going: restore as much as possible
                kept.append(f"{p.name}:*")
        if isinstance(exc, ConflictError) and not committed:
            error: TransactionError = ConflictError(f"transaction conflict in store {name!r}: {exc}")
            outcome = "undone"
        elif isinstance(exc, Exception):
            outcome = "in doubt" if in_doubt(exc) else "undone"
            undone = ", ".join(p.name for p in committed) or "nothing had been written"
            if outcome == "in doubt":
                msg = (f"transaction in doubt in store {name!r} ({type(exc).__name__}: {exc}); "
                       f"rolled back: {undone}; {name!r} may or may not have applied its part "
                       "(all of it or none of it): " + (
                           "the commit journal keeps the record, and the next transaction or "
                           f"manager to open settles it (undoes {name!r}'s part if it was "
                           "applied)" if recorded else "no journal records this commit"))
            else:
                msg = (f"transaction failed in store {name!r} ({type(exc).__name__}: {exc}); "
                       f"undone: every store is as it was (rolled back: {undone})")
            if kept:
                msg += f"; left as they are (changed since by another writer): {', '.join(kept)}"
            error = TransactionError(msg)
        else:
            raise
        error.store = name  # type: ignore[attr-defined]
        error.outcome = outcome  # type: ignore[attr-defined]
        raise error from exc


@contextmanager
def _part(p: Part, before: Before | None, committed: list[Part],
          failure: list[Part]) -> Iterator[None]:
    """One store's part, remembering whether it committed, or failed on its own."""
    inner = False
    try:
        with p.store.raw_commit(p.ops, p.checks, before):
            try:
                yield
            except BaseException:
                inner = True
                raise
    except BaseException:
        if not inner:
            failure.append(p)
        raise
    committed.append(p)
