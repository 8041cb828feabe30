"""ThreadStore: reads queued together are answered by one raw_get_many, each task getting its
own key's value; a failing batch read falls back to one read per key."""

from __future__ import annotations

import asyncio

import pytest

from kvstore import SQLiteStore
from kvstore.aio import ThreadStore
from kvstore.errors import StoreUnavailableError


class Counting(SQLiteStore):
    def __init__(self, *args, fail_many=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.many_calls: list[int] = []
        self.fail_many = fail_many

    def raw_get_many(self, keys):
        self.many_calls.append(len(keys))
        if self.fail_many or "broken" in keys:
            raise StoreUnavailableError("batch read refused (test)")
        return super().raw_get_many(keys)

    def raw_get(self, key):
        if key == "broken":
            raise StoreUnavailableError("this key cannot be read (test)")
        return super().raw_get(key)


def _load_all(sync, keys):
    async def run():
        store = ThreadStore(sync)
        return await asyncio.gather(*[store.load(k, "missing") for k in keys],
                                    return_exceptions=True)
    return asyncio.run(run())


def test_concurrent_loads_are_read_together(tmp_path):
    sync = Counting(path=tmp_path / "a.db")
    sync.save_many({f"k{i}": i for i in range(0, 200, 2)})
    sync.save("gone", 1, ttl=0.001)
    keys = [f"k{i}" for i in range(200)] + ["k0", "gone"]
    asyncio.run(asyncio.sleep(0.01))
    values = _load_all(sync, keys)
    assert values[:200] == [i if i % 2 == 0 else "missing" for i in range(200)]
    assert values[200:] == [0, "missing"]
    assert sync.many_calls and max(sync.many_calls) > 1  # reads were batched
    sync.close()


@pytest.mark.parametrize("fail_many", [False, True])  # False: only batches with "broken" fail
def test_a_failed_read_reaches_only_its_caller(tmp_path, fail_many):
    sync = Counting(path=tmp_path / "a.db", fail_many=fail_many)
    sync.save_many({f"k{i}": i for i in range(50)})
    values = _load_all(sync, [f"k{i}" for i in range(50)] + ["broken"])
    assert values[:50] == list(range(50))
    assert isinstance(values[50], StoreUnavailableError)
    sync.close()
