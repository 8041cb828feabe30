"""Transactions across stores: stage writes, then apply each store's part atomically.

If a later store fails, the stores already committed get their previous values back, so after
the ``with`` block either every write is visible or none is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import TransactionError
from .store import MISSING, TTL

if TYPE_CHECKING:
    from .manager import PersistenceManager

__all__ = ["Transaction"]

_DELETED: Any = MISSING


class Transaction:
    """Staged writes of one ``with pm.transaction() as tx:`` block.

    ``tx.save``/``tx.delete`` stage; ``tx.load``/``tx.exists`` see the staged writes first.
    Nothing reaches a store before the block ends without an exception.
    """

    def __init__(self, manager: "PersistenceManager") -> None:
        self._manager = manager
        # key -> (store name, value or _DELETED, ttl argument)
        self._staged: dict[str, tuple[str, Any, TTL]] = {}
        self._done = False

    def _target(self, key: str, store: str | None) -> str:
        return self._manager._store_name_for(key, store)

    def save(self, key: str, value: Any, ttl: TTL = None, store: str | None = None) -> bool:
        name = self._target(key, store)
        st = self._manager.stores[name]
        st._check_key(key)
        st._resolve_ttl(ttl)  # a bad TTL fails now, inside the block, not at commit
        self._staged[key] = (name, value, ttl)
        return True

    def delete(self, key: str, store: str | None = None) -> bool:
        existed = self.exists(key, store)
        self._staged[key] = (self._target(key, store), _DELETED, None)
        return existed

    def load(self, key: str, default: Any = None, store: str | None = None) -> Any:
        staged = self._staged.get(key)
        if staged is not None:
            return default if staged[1] is _DELETED else staged[1]
        return self._manager.load(key, default, store=store)

    def exists(self, key: str, store: str | None = None) -> bool:
        staged = self._staged.get(key)
        if staged is not None:
            return staged[1] is not _DELETED
        return self._manager.exists(key, store=store)

    def __len__(self) -> int:
        return len(self._staged)

    # -- commit ---------------------------------------------------------------------------------

    def commit(self) -> None:
        """Apply the staged writes: encode everything first, then store by store."""
        if self._done:
            raise TransactionError("transaction already finished")
        self._done = True
        manager = self._manager
        per_store: dict[str, list[tuple[str, Any, float | None]]] = {}
        for key, (name, value, ttl) in self._staged.items():
            st = manager.stores[name]
            if value is _DELETED:
                per_store.setdefault(name, []).append((key, MISSING, None))
                continue
            seconds = st._resolve_ttl(ttl if ttl is not None else manager._route_ttl(key, name))
            per_store.setdefault(name, []).append((key, st._encode(key, value), seconds))

        committed: list[tuple[str, list[tuple[str, Any, float | None]]]] = []
        for name, ops in per_store.items():
            st = manager.stores[name]
            try:
                before = st._snapshot([key for key, _, _ in ops])
                st._apply(ops)
            except Exception as exc:
                failures = self._roll_back(committed)
                rolled = ", ".join(n for n, _ in committed) or "nothing else had been written"
                msg = (f"transaction failed in store {name!r} ({type(exc).__name__}: {exc}); "
                       f"rolled back: {rolled}")
                if failures:
                    msg += f"; rollback FAILED for {', '.join(failures)}"
                manager._emit_error("commit", name, exc)
                raise TransactionError(msg) from exc
            committed.append((name, before))
        for name, ops in per_store.items():
            manager._count_commit(name, ops)

    def _roll_back(self, committed: list[tuple[str, list[tuple[str, Any, float | None]]]]) -> list[str]:
        failures = []
        for name, before in reversed(committed):
            try:
                self._manager.stores[name]._apply(before)
            except Exception as exc:  # keep going: restore as much as possible
                self._manager._emit_error("rollback", name, exc)
                failures.append(name)
        return failures

    def discard(self) -> None:
        self._staged.clear()
        self._done = True
