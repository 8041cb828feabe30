"""What a manager does besides calls: memory snapshots, background jobs, closing the stores.

:class:`Lifecycle` is shared by the synchronous and the asyncio managers: it undoes what dead
committers left half-done (when the manager opens, then every ``journal.recover_interval``),
loads the memory store's snapshot when a manager opens, saves it every ``memory.autosave`` and
on close, runs scheduled backups, and closes the stores. Its jobs run in daemon threads of
their own, so an event loop never waits for them.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from . import registry
from ._fs import make_private_dirs
from .config import journal_dir
from .core import Core
from .journal import Journal
from .errors import KVStoreError
from .serializers import Serializer

__all__ = ["Lifecycle", "RECOVER_BACKOFF"]

#: The longest wait between background recovery passes while they keep failing (a store down):
#: each failing pass doubles the wait, from ``journal.recover_interval`` up to this.
RECOVER_BACKOFF = 30.0


class Lifecycle:
    """Snapshots, background jobs and closing, for the manager over ``core``."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.closed = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Undo commits a crashed process left half-done, load the memory snapshot, then start
        background recovery, autosave and scheduled backups as configured."""
        config = self.core.config
        if config.telemetry.otel:  # before anything runs, so the journal repair is traced too
            from .contrib.otel import instrument, is_instrumented

            if not is_instrumented():  # providers an application gave instrument() are kept
                instrument()
        journal = Journal(journal_dir(config))
        journal.recover(self.core.stores,
                        lambda exc: self.core.emit_error("journal", "transaction", exc))
        self.core.journal = journal
        from .restore import recover_restores  # a restore a killed process left halfway

        recover_restores(self.core, lambda exc: self.core.emit_error("restore", "backup", exc))
        self.load_snapshot()
        if config.journal.recover_interval:
            recovery = _Recovery(self.core, journal, config.journal.recover_interval)
            self._start_thread("kvstore-recover", "transaction", recovery.interval, recovery.run,
                               recovery.wait)
        if config.memory.autosave and config.memory.snapshot:
            self._start_thread("kvstore-autosave", "memory", config.memory.autosave,
                               self.save_snapshot)
        if config.backup.enabled:
            self._start_thread("kvstore-backup", "backup", config.backup.interval, self.backup)

    def backup(self, dest: str | os.PathLike[str] | None = None,
               progress: Callable[[int], Any] | None = None,
               skip_unavailable: bool = False) -> Path:
        """A new backup inside ``dest`` (default: the configured folder, where backups beyond
        ``backup.retention`` are then deleted)."""
        from .backup import create_backup, prune_backups

        path = create_backup(self.core, dest, progress=progress,
                             skip_unavailable=skip_unavailable)
        if dest is None:
            prune_backups(path.parent, self.core.config.backup.retention)
        return path

    # -- memory snapshots -------------------------------------------------------------------------

    def _serializer(self) -> Serializer:
        secret = self.core.config.pickle_secret
        return Serializer("pickle", secret=secret) if secret else Serializer("msgpack")

    def _memory(self) -> tuple[Path | None, Any]:
        """The snapshot file, and the memory store if its backend keeps its data in this process
        (a MemoryStore; see :attr:`kvstore.registry.Backend.snapshots`)."""
        memory = self.core.stores.get("memory")
        backend = None if memory is None else registry.for_store(memory)
        return self.core.config.memory.snapshot, (memory if backend is not None
                                                  and backend.snapshots else None)

    def save_snapshot(self) -> int:
        """Write the memory store's live keys (with remaining TTLs) to ``memory.snapshot``
        atomically. Returns how many keys were written."""
        path, memory = self._memory()
        if path is None or memory is None:
            return 0
        serializer = self._serializer()
        rows = []
        for key, value, ttl in memory.items_with_ttl():
            try:
                serializer.serialize(value)
            except KVStoreError as exc:
                self.core.emit_error("snapshot", "memory", exc, key)
                continue
            rows.append((key, value, ttl))
        blob = serializer.serialize({"version": 1, "saved_at": time.time(), "entries": rows})
        _atomic_write(path, blob)
        return len(rows)

    def load_snapshot(self) -> None:
        path, memory = self._memory()
        if path is None or memory is None or not path.exists():
            return
        try:
            data = self._serializer().deserialize(path.read_bytes())
            elapsed = max(0.0, time.time() - float(data["saved_at"]))
            ops: list[tuple[str, Any, float | None]] = []
            for key, value, ttl in data["entries"]:
                if ttl is None:
                    ops.append((key, value, None))
                elif ttl - elapsed > 0:
                    ops.append((key, value, ttl - elapsed))
            memory.raw_apply(ops)
        except (KVStoreError, KeyError, TypeError, ValueError) as exc:
            # A damaged snapshot must not stop the application; the error event says why.
            self.core.emit_error("snapshot", "memory", exc)

    # -- background work and closing ----------------------------------------------------------------

    def _start_thread(self, name: str, store: str, interval: float, job: Callable[[], Any],
                      wait: Callable[[], float] | None = None) -> None:
        """Run ``job`` every ``interval`` (or after ``wait()`` seconds) until close."""
        def loop() -> None:
            while not self._stop.wait(interval if wait is None else wait()):
                try:
                    job()
                except Exception as exc:  # keep the application running; tell the listeners
                    self.core.emit_error(name, store, exc)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        """Stop background work, save the memory snapshot, close every store. Safe twice."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        try:
            self.save_snapshot()
        except Exception as exc:
            self.core.emit_error("snapshot", "memory", exc)
        for store in self.core.stores.values():
            try:
                store.close()
            except Exception as exc:
                self.core.emit_error("close", type(store).__name__, exc)


class _Recovery:
    """The background recovery pass: a running manager undoes, within about ``interval``, what
    a committer that died (in another process, or on another machine sharing the servers) left
    half-done, without waiting for a transaction of its own.

    A record whose committer is alive is never touched (its ``flock``, or its PostgreSQL
    advisory lock, is held), and that includes this manager's own commits in flight. A pass
    costs one ``listdir`` of the journal folder, plus one indexed query per PostgreSQL store,
    when there is nothing to repair. A pass that reports an error (a store down, its records
    unreadable) doubles the wait before the next, up to :data:`RECOVER_BACKOFF`, so a server
    that is down is not asked every ``interval`` and the error events slow down too.
    """

    def __init__(self, core: Core, journal: Journal, interval: float) -> None:
        self.core, self.journal, self.interval = core, journal, interval
        self._next = interval

    def wait(self) -> float:
        return self._next

    def run(self) -> None:
        failed = False

        def report(exc: BaseException) -> None:
            nonlocal failed
            failed = True
            self.core.emit_error("journal", "transaction", exc)

        try:
            self.journal.recover(self.core.stores, report)
        except Exception:  # (reported by the thread's loop)
            failed = True
            raise
        finally:
            self._next = min(self._next * 2, max(self.interval, RECOVER_BACKOFF)) if failed \
                else self.interval


def _atomic_write(path: Path, data: bytes) -> None:
    make_private_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
