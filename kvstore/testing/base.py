"""The hooks of the shipped suite: how a backend's test class builds stores and moves time.

See :mod:`kvstore.testing` for the usage; the tests themselves are in the mixins of
:mod:`kvstore.testing.conformance`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pytest

from .workers import in_processes

__all__ = ["FakeClock", "StoreHooks"]


class FakeClock:
    """A clock tests move by hand, so TTL tests never sleep: pass it as a store's ``clock=``."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class StoreHooks:
    """What a backend's test class overrides; the tests only call these.

    pytest makes one instance per test; before the test runs, ``self.clock`` is a fresh
    :class:`FakeClock` (started at the wall-clock time) and ``self.tmp_path`` the test's own
    empty folder, so :meth:`make_store` can use both.
    """

    #: Whether what a store wrote survives ``close()`` and a new :meth:`make_store` (files, a
    #: database, a server); False skips the reopen test.
    durable: bool = True
    #: Whether values are encoded (False: the store keeps the objects themselves, as a
    #: ``MemoryStore`` without serializer does, so nothing is unencodable).
    serializes: bool = True
    #: Whether the store holds a key of ``kvstore.keyrules.MAX_KEY_BYTES`` bytes (the portable
    #: limit); False for a store with a shorter limit of its own (the file store: 200 bytes a
    #: path segment).
    holds_longest_key: bool = True
    #: True when :meth:`make_store` passes ``clock=self.clock`` to the store: :meth:`advance`
    #: then moves that clock and expiry tests never sleep. False: the store keeps real time
    #: (Redis's own expiry) and :meth:`advance` sleeps.
    fake_clock: bool = True
    #: True runs every test on the store's asyncio front (``kvstore.aio.async_store(store)``),
    #: driven through :class:`kvstore.testing.facade.Blocking`, so the same test bodies check
    #: both fronts: subclass your test class once more with ``async_front = True``.
    async_front: bool = False

    clock: FakeClock
    tmp_path: Path

    def make_store(self, **options: Any) -> Any:
        """A new store object of the backend under test, on the same data as every other store
        this test made (so a reopen sees what was written). ``options`` are the store's own
        keyword arguments the suite varies: ``ttl_default=``, and whatever the test passes.
        Stores are closed after the test by :meth:`close_store`."""
        raise NotImplementedError(f"{type(self).__name__} must define make_store(**options)")

    def advance(self, seconds: float) -> None:
        """Make ``seconds`` pass for the stores of this test (see :attr:`fake_clock`)."""
        if self.fake_clock:
            self.clock.advance(seconds)
        else:
            time.sleep(seconds)

    def close_store(self, store: Any) -> None:
        """Release one store after the test (default: ``store.close()``)."""
        store.close()

    def to_async(self, store: Any) -> Any:
        """The store on the asyncio front, behind the blocking facade (with
        :attr:`async_front`). Default: ``Blocking(kvstore.aio.async_store(store))``; a backend
        with an async driver of its own returns ``Blocking(its async store)``."""
        from kvstore.aio import async_store

        from .facade import Blocking

        return Blocking(async_store(store))

    def store_opener(self) -> Callable[[], Any] | None:
        """A picklable callable that opens, in another process, a store on this test's data
        (e.g. ``functools.partial(MyStore, path=str(self.tmp_path / "data"))``); the
        multi-process tests spawn processes that call it. None (the default) skips them: a
        store whose data lives in one process."""
        return None

    # -- what the tests use ----------------------------------------------------------------------

    def new_store(self, **options: Any) -> Any:
        """One more store from :meth:`make_store`, on the front under test, closed after it."""
        store = self.make_store(**options)
        if self.async_front:
            store = self.to_async(store)  # the facade's close() closes both fronts
        self._opened.append(store)
        return store

    def run_processes(self, target: Callable[..., Any], *args: Any) -> list[Any]:
        """``target(store, proc, *args)`` in several processes on this test's data (see
        :meth:`store_opener`; skips without one); their results."""
        opener = self.store_opener()
        if opener is None:
            pytest.skip(f"{type(self).__name__}: no store_opener(), the store is not shared "
                        "between processes; threads are tested")
        return in_processes(opener, target, *args)

    @pytest.fixture(autouse=True)
    def _kvstore_hooks(self, tmp_path: Path) -> Any:
        self.tmp_path = tmp_path
        self.clock = FakeClock(time.time())
        self._opened: list[Any] = []
        yield
        for store in reversed(self._opened):
            try:
                self.close_store(store)
            except Exception:
                pass

    @pytest.fixture
    def store(self) -> Any:
        """A fresh store of the backend under test, on the front under test."""
        return self.new_store()
