"""kvstore's conformance suite, shipped: run it on your own backend with one subclass.

Every built-in store (memory, SQLite, files, Redis, PostgreSQL, the Redis fallback), on both
fronts, passes exactly these tests in kvstore's own test suite. A third-party backend (a
:class:`~kvstore.PersistenceStore` subclass implementing the ``raw_*`` contract) is done when
it passes them too. Needs pytest (``import kvstore`` does not import this package)::

    # tests/test_my_store.py
    from kvstore.testing import StoreTests

    from my_package import MyStore


    class TestMyStore(StoreTests):
        def make_store(self, **options):
            # every call: a new store object on the same data (the reopen test needs it)
            return MyStore(path=self.tmp_path / "data", clock=self.clock, **options)


    class TestMyStoreAsync(TestMyStore):
        async_front = True  # the same tests through kvstore.aio.async_store(MyStore(...))

Run ``pytest tests/test_my_store.py``. For assertion failures that show the values compared,
add ``pytest.register_assert_rewrite("kvstore.testing")`` to your ``conftest.py`` before
anything imports ``kvstore.testing``. What a subclass may override (see
:class:`~kvstore.testing.base.StoreHooks`):

- ``make_store(self, **options)`` (required): a new store on the same data as the test's
  other stores; ``options`` are store keyword arguments the suite varies (``ttl_default=``).
  ``self.tmp_path`` is the test's own empty folder, ``self.clock`` a :class:`FakeClock`.
  Stores are closed after each test (override ``close_store(self, store)`` to clean up more,
  e.g. drop a server-side table).
- time: ``advance(self, seconds)`` makes time pass. By default it moves ``self.clock``, which
  suits a store that takes ``clock=`` (a callable returning seconds) and reads expiry from it,
  so no test sleeps. A store that keeps real time (a server's own expiry) sets
  ``fake_clock = False``: ``advance`` then sleeps ``seconds`` (the suite's TTLs are 0.3 s), or
  override ``advance`` with your own way.
- what the backend can do, as class attributes: ``durable`` (data survives ``close()`` and a
  new ``make_store()``; False skips the reopen test), ``serializes`` (False: values are kept as
  objects, nothing is unencodable), ``holds_longest_key`` (False when a key of
  ``kvstore.keyrules.MAX_KEY_BYTES`` bytes is beyond the store's own limit), ``async_front``.
- processes: ``store_opener(self)`` returns a picklable callable that opens, in another
  process, a store on this test's data (``functools.partial(MyStore, path=...)``); the
  multi-process tests (appends, locks, ``get_or_set``, logs, a SIGKILL mid-append) spawn
  processes that call it. The default, None, skips them (a store whose data lives in one
  process). The multi-process tests are marked ``slow``.
- the asyncio front: ``to_async(self, store)`` (with ``async_front = True``) gives the store's
  asyncio face behind the blocking facade; the default is
  ``Blocking(kvstore.aio.async_store(store))``, a backend with an async driver of its own
  returns ``Blocking(MyAsyncStore(store))``.

The tests receive a fresh store as the ``store`` fixture (a class fixture: it shadows any
``store`` fixture of your conftest inside the class) and build more with
``self.new_store(**options)``. They are grouped in mixins, each a subclass of the hooks:
:class:`ConformanceTests` (values, keys, TTLs, counters, errors, reopen), :class:`AtomicTests`
(``add``, ``update``, ``append``, ``touch``, ``get_or_set``, locks, ``raw_commit``) and
:class:`LogTests` (logs, paging, bulk rows); subclass one alone to run a part.
"""

from __future__ import annotations

from .atomic import AtomicTests
from .base import FakeClock, StoreHooks
from .conformance import ConformanceTests
from .logs import LogTests

__all__ = ["StoreTests", "StoreHooks", "ConformanceTests", "AtomicTests", "LogTests",
           "FakeClock"]


class StoreTests(ConformanceTests, AtomicTests, LogTests):
    """Every conformance test of kvstore: subclass it and define ``make_store``."""
