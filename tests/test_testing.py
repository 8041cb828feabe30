"""kvstore.testing, as a third party uses it: a toy backend passes the shipped suite by one
subclass (and one more for the asyncio front); ``import kvstore`` needs no pytest."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from kvstore import PersistenceStore
from kvstore.store import KEEP, MISSING
from kvstore.testing import StoreTests


class Shelf:
    """What a toy "server" holds: the data every DictStore opened on it sees."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.keys: dict[str, tuple[Any, float | None]] = {}  # key -> (blob, expires at)
        self.logs: dict[str, list[Any]] = {}
        self.meta: Shelf | None = None


class DictStore(PersistenceStore):
    """A third-party backend in its smallest form: the abstract ``raw_*`` methods over a dict.

    Everything else (batches, ``add``, ``update``, locks, logs, transactions) comes from the
    base class's defaults on top of these.
    """

    def __init__(self, shelf: Shelf, *, clock: Callable[[], float] = time.time,
                 **options: Any) -> None:
        super().__init__(**options)
        self.shelf, self.clock = shelf, clock

    def _live(self, key: str) -> tuple[Any, float | None] | None:
        entry = self.shelf.keys.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= self.clock():
            del self.shelf.keys[key]
            return None
        return entry

    def _expiry(self, ttl: float | None) -> float | None:
        return None if ttl is None else self.clock() + ttl

    def raw_get(self, key: str) -> Any:
        with self.shelf.lock:
            entry = self._live(key)
            return MISSING if entry is None else entry[0]

    def raw_set(self, key: str, blob: Any, ttl: float | None) -> None:
        with self.shelf.lock:
            self.shelf.keys[key] = (blob, self._expiry(ttl))

    def raw_delete(self, key: str) -> bool:
        with self.shelf.lock:
            return self._live(key) is not None and self.shelf.keys.pop(key) is not None

    def raw_keys(self, prefix: str) -> Iterator[str]:
        with self.shelf.lock:
            return iter(sorted(k for k in list(self.shelf.keys)
                               if k.startswith(prefix) and self._live(k) is not None))

    def raw_ttl(self, key: str) -> float | None:
        with self.shelf.lock:
            entry = self._live(key)
            return None if entry is None or entry[1] is None else entry[1] - self.clock()

    def raw_incr(self, key: str, amount: int, ttl: float | None) -> int:
        with self.shelf.lock:
            entry = self._live(key)
            if entry is None:
                current, expires = 0, self._expiry(ttl)
            else:
                current, expires = self.decode(key, entry[0]), entry[1]
                if type(current) is not int:
                    from kvstore import NotAnIntegerError

                    raise NotAnIntegerError(f"incr {key!r}: stored value is not an int")
            self.shelf.keys[key] = (self.encode(key, current + amount), expires)
            return current + amount

    def raw_clear(self, prefix: str) -> int:
        with self.shelf.lock:
            doomed = [k for k in self.raw_keys(prefix)]
            for key in doomed:
                del self.shelf.keys[key]
            for key in [k for k in self.shelf.keys if k.startswith(prefix)]:
                del self.shelf.keys[key]  # the expired ones, uncounted
            return len(doomed)

    @contextmanager
    def raw_commit(self, ops: list, checks: list, before: Any = None) -> Iterator[None]:
        with self.shelf.lock:
            for key, expected in checks:
                if self.raw_get(key) != expected:
                    from kvstore import ConflictError

                    raise ConflictError(f"key {key!r} was changed by another writer")
            if before is not None:
                before.images = self.raw_snapshot(list(dict.fromkeys(k for k, _, _ in ops)))
            yield
            for key, blob, ttl in ops:
                if blob is MISSING:
                    self.shelf.keys.pop(key, None)
                elif ttl is KEEP:
                    entry = self._live(key)
                    self.shelf.keys[key] = (blob, None if entry is None else entry[1])
                else:
                    self.shelf.keys[key] = (blob, self._expiry(ttl))

    def open_meta(self) -> "DictStore":
        with self.shelf.lock:
            if self.shelf.meta is None:
                self.shelf.meta = Shelf()
            return DictStore(self.shelf.meta, clock=self.clock)

    def raw_log_append(self, name: str, blob: Any) -> int:
        with self.shelf.lock:
            records = self.shelf.logs.setdefault(name, [])
            records.append(blob)
            return len(records)

    def raw_log_read(self, name: str, after: int, limit: int | None) -> list[tuple[int, Any]]:
        with self.shelf.lock:
            records = self.shelf.logs.get(name, [])
            end = len(records) if limit is None else after + limit
            return [(after + 1 + i, blob) for i, blob in enumerate(records[after:end])]

    def raw_log_len(self, name: str) -> int:
        with self.shelf.lock:
            return len(self.shelf.logs.get(name, ()))

    def raw_log_delete(self, name: str) -> bool:
        with self.shelf.lock:
            return self.shelf.logs.pop(name, None) is not None

    def raw_log_names(self, prefix: str) -> list[str]:
        with self.shelf.lock:
            return sorted(n for n in self.shelf.logs if n.startswith(prefix))


class TestDictStore(StoreTests):
    """The whole shipped suite on the toy backend: this subclass is all a backend writes."""

    def make_store(self, **options: Any) -> DictStore:
        if not hasattr(self, "shelf"):
            self.shelf = Shelf()  # one per test: every store of a test sees the same data
        return DictStore(self.shelf, clock=self.clock, **options)


class TestDictStoreAsync(TestDictStore):
    async_front = True


def test_import_kvstore_needs_no_pytest() -> None:
    code = ("import sys; sys.modules['pytest'] = None; import kvstore, kvstore.aio; "
            "assert 'kvstore.testing' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
