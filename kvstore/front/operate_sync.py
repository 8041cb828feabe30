# Generated from kvstore/front/operate_async.py by tools/async_to_sync.py: do not edit, edit that file.
"""The manager's operations on the stores as a whole: events and stats, health, backups and
restores, memory snapshots; a base of the manager's operations class in ``manager_sync`` (the
synchronous twin is generated, as for every front module).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..core import Core, Event
from ..health import DEFAULT_TIMEOUT, Health, is_required
from ..health import probe
from ..lifecycle import Lifecycle

__all__ = ["OperateOps"]

T = TypeVar("T")


class OperateOps:
    """What the manager does with every store at once (see :class:`~kvstore.PersistenceManager`)."""

    _core: Core
    _life: Lifecycle

    def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, a blocking call on the synchronous stores (backups, snapshots, a
        commit): inline on the synchronous front, in a worker thread on asyncio."""
        return fn(*args)

    # -- events and stats ------------------------------------------------------------------------------

    def on(self, event: str, callback: Callable[[Event], Any]) -> Callable[[Event], Any]:
        """Call ``callback(Event)`` after each ``save``/``load``/``delete``, or on an ``error``.

        A callback that raises does not break the operation. Returns ``callback``.
        """
        return self._core.on(event, callback)

    def off(self, event: str, callback: Callable[[Event], Any]) -> None:
        """Stop calling ``callback`` for ``event``."""
        self._core.off(event, callback)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per store: hits, misses, saves, deletes, errors, log_appends, log_reads since the
        manager started (see :class:`~kvstore.core.StoreStats`)."""
        return self._core.stats_report()

    # -- backups ------------------------------------------------------------------------------------

    def backup(self, dest: str | os.PathLike[str] | None = None, *,
               progress: Callable[[int], Any] | None = None,
               skip_unavailable: bool = False) -> Path:
        """Write a new backup of every durable store inside folder ``dest`` and return its path.

        Without ``dest`` the configured ``backup.path`` (default: the user data folder's
        ``backups``) is used, and older backups there beyond ``backup.retention`` are deleted.
        ``progress(keys so far)`` is called as it goes (on asyncio, from the worker thread the
        backup runs in). An unavailable store (Redis down) fails the backup, naming it, unless
        ``skip_unavailable`` leaves it out.
        """
        return self._blocking(self._life.backup, dest, progress, skip_unavailable)

    def restore(self, path: str | os.PathLike[str], *,
                progress: Callable[[int], Any] | None = None) -> dict[str, int]:
        """Replace the durable stores' contents with backup ``path`` (verified first: a damaged
        or partial backup raises ``CorruptDataError`` and nothing changes). Returns keys per
        store. ``progress`` as for :meth:`backup`."""
        from ..restore import restore_backup

        return self._blocking(functools.partial(restore_backup, progress=progress),
                                    self._core, path)

    # -- memory snapshots ------------------------------------------------------------------------------

    def save_snapshot(self) -> int:
        """Write the memory store's live keys (with remaining TTLs) to ``memory.snapshot``
        atomically. Returns how many keys were written. Done every ``autosave`` and on close."""
        return self._blocking(self._life.save_snapshot)

    # -- health ------------------------------------------------------------------------------------

    def health(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Health]:
        """Every store's :class:`~kvstore.Health` (``"ok"`` or ``"down"``, the round trip in
        seconds, the error), all probed at once and answered within ``timeout`` seconds even
        when a server hangs: what a readiness probe calls. A store is ``required`` unless the
        application keeps working while it is down (the cache tier behind ``redis.fallback``)::

            >>> all(h.ok for h in pm.health().values() if h.required)  # doctest: +SKIP
            True
        """
        config = self._core.config
        fronts = {name: self._core.named(name).front for name in self._core.stores}
        required = {name: is_required(config, name) for name in fronts}
        pings = {name: front.ping for name, front in fronts.items()}
        return probe(pings, timeout, required)
