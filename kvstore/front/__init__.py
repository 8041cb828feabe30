"""The operations of the store, manager, transaction, lock and log, each written once.

``*_async.py`` are the source: the asyncio front's operations over the backend contract's
awaitable byte-level methods. ``*_sync.py`` are generated from them by
``tools/async_to_sync.py`` (never edit those; ``tests/test_generated.py`` checks they are
current). :class:`~kvstore.PersistenceStore` and :class:`~kvstore.PersistenceManager` are the
generated operations plus what only the synchronous front has (opening stores, background
recovery); :mod:`kvstore.aio` is the asyncio drivers plus what only it has.
"""
