"""The synchronous front is generated from the asyncio one: the checked-in files are current."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "async_to_sync.py"


def _tool():
    spec = importlib.util.spec_from_file_location("async_to_sync", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_sync_front_is_current():
    done = subprocess.run([sys.executable, str(TOOL), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_conversion_rules():
    source = (
        "import asyncio  # async only\n"
        "from .lock_async import AsyncLockOps\n"
        "class AsyncStoreOps:\n"
        "    async def load(self, key,\n"
        "                   default=None):\n"
        "        async with self.guard():\n"
        "            blob = await self.raw_get(key)\n"
        "        # sync: return self.fast(blob)\n"
        "        return await self.slow(blob)  # async only\n"
        "        # sync: x = (\n"
        "        # sync:     1)\n"
        "    # sync: @property\n"
        "    async def owned(self):\n"
        "        return AsyncLock(self), AsyncLog(self), AsyncLogOps\n"
        "    async def __aenter__(self):\n"
        "        await asyncio.sleep(0.1)\n"
        "        async for k in self.keys():\n"
        "            raise StopAsyncIteration\n")
    out = _tool().convert(source, "x_async.py").splitlines()
    assert out[0].startswith("# Generated from x_async.py")
    assert out[1:] == [
        "from .lock_sync import LockOps",
        "class StoreOps:",
        "    def load(self, key,",
        "             default=None):",
        "        with self.guard():",
        "            blob = self.raw_get(key)",
        "        return self.fast(blob)",
        "        x = (",
        "            1)",
        "    @property",
        "    def owned(self):",
        "        return Lock(self), Log(self), LogOps",
        "    def __enter__(self):",
        "        time.sleep(0.1)",
        "        for k in self.keys():",
        "            raise StopIteration",
    ]


def test_conversion_rules_of_the_manager_front():
    """The manager's names (kvstore/front/manager_async.py, transaction_async.py), and a
    multi-line ``# sync:`` replacement beside ``# async only`` lines."""
    source = (
        "from ..aio import paging  # async only\n"
        "class AsyncManagerOps:\n"
        "    def lock(self, name) -> AsyncLock:\n"
        "        return AsyncTransaction(self, AsyncLog)\n"
        "    def keys(self, sources):\n"
        "        # sync: merged = heapq.merge(*sources)\n"
        "        # sync: return merged\n"
        "        return paging.merge(sources)  # async only\n")
    out = _tool().convert(source, "manager_async.py").splitlines()
    assert out[1:] == [
        "class ManagerOps:",
        "    def lock(self, name) -> Lock:",
        "        return Transaction(self, Log)",
        "    def keys(self, sources):",
        "        merged = heapq.merge(*sources)",
        "        return merged",
    ]


def test_conversion_renames_of_one_file():
    """``# sync-names:`` lines (kvstore/contrib/langgraph/saver_async.py: LangGraph's ``aput``
    is ``put``) rename in that file only, also after a dot, and are left out."""
    source = (
        "# sync-names: aput=put _aapply=_apply\n"
        "class AsyncSaverOps:\n"
        "    async def aput(self, config):\n"
        "        await self._aapply(config)\n"
        "        return aputx, self.aput\n")
    out = _tool().convert(source, "saver_async.py").splitlines()
    assert out[1:] == [
        "class AsyncSaverOps:",
        "    def put(self, config):",
        "        self._apply(config)",
        "        return aputx, self.put",
    ]
    assert "def aput" in _tool().convert(source.split("\n", 1)[1], "other_async.py")
