"""The shipped conformance suite (:mod:`kvstore.testing`) on every built-in store, both fronts.

``case`` (conftest) builds each kind of store, sync and async (``aio-*``, through the blocking
facade); this one subclass of :class:`kvstore.testing.StoreTests` runs the whole suite on each:
values, keys, TTLs, errors (``ConformanceTests``), the atomic operations, locks and commits
(``AtomicTests``), logs, paging and bulk rows (``LogTests``). The multi-process tests run where
another process can open the same store (``case.spec``: SQLite, files, the real Redis, Redis
Cluster, PostgreSQL).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import pytest

from conftest import open_spec
from kvstore.testing import StoreTests


class TestBuiltinStores(StoreTests):
    """Every test of the suite, once per store kind of ``case``."""

    @pytest.fixture(autouse=True)
    def _builtin_case(self, case: Any) -> None:
        self.case = case

    def make_store(self, **options: Any) -> Any:
        return self.case.make(**options)  # an ``aio-*`` case is already on the async front

    def advance(self, seconds: float) -> None:
        self.case.advance(seconds)

    def close_store(self, store: Any) -> None:
        pass  # the case fixture clears and closes what it made

    def to_async(self, store: Any) -> Any:
        return store  # an ``aio-*`` case builds its stores on the async front already

    def store_opener(self) -> Callable[[], Any] | None:
        spec = self.case.spec  # None: per-process memory, fakeredis
        return None if spec is None else functools.partial(open_spec, spec)

    @property
    def async_front(self) -> bool:  # type: ignore[override]
        return self.case.kind.startswith("aio-")

    @property
    def durable(self) -> bool:  # type: ignore[override]
        return self.case.durable

    @property
    def serializes(self) -> bool:  # type: ignore[override]
        return self.case.serializes

    @property
    def holds_longest_key(self) -> bool:  # type: ignore[override]
        return "file" not in self.case.kind
