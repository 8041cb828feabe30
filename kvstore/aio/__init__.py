"""kvstore for asyncio: the same stores, config and data, every call awaited.

>>> from kvstore.aio import AsyncPersistenceManager
>>> async def main():                                                      # doctest: +SKIP
...     async with AsyncPersistenceManager.from_yaml("config.yaml") as pm:
...         await pm.save("session:1", {"user": "ann"})
...         async for key in pm.keys("session:"):
...             print(key, await pm.load(key))
"""

from .manager import AsyncPersistenceManager, AsyncTransaction, async_store
from .store import AsyncLock, AsyncStore, InlineStore, ThreadStore

__all__ = ["AsyncPersistenceManager", "AsyncTransaction", "AsyncStore", "AsyncLock",
           "ThreadStore", "InlineStore", "async_store"]
