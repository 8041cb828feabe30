"""Checked by mypy (tests/test_typing.py), never run: the types users see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from typing_extensions import assert_type

from kvstore import PersistenceManager
from kvstore.aio import AsyncPersistenceManager


@dataclass
class Point:
    x: int
    y: int


def sync_user(pm: PersistenceManager) -> None:
    assert_type(pm.load("p:1", as_type=Point), Point)
    assert_type(pm.load("p:1"), Any)
    assert_type(pm.log("t:1").append({"a": 1}), int)
    assert_type(pm.log("t:1").read(after=0, limit=10), list[tuple[int, Any]])
    assert_type(pm.log("t:1").read(limit=10, reverse=True), list[tuple[int, Any]])
    assert_type(pm.log("t:1").tail(5), list[tuple[int, Any]])
    assert_type(pm.log("t:1").last(), tuple[int, Any] | None)
    assert_type(list(pm.keys("t:", limit=1, reverse=True)), list[str])
    assert_type(pm.incr("n"), int)
    assert_type(pm.add("k", 1), bool)
    with pm.lock("job"):
        pass


async def async_user(pm: AsyncPersistenceManager) -> None:
    assert_type(await pm.load("p:1", as_type=Point), Point)
    assert_type(await pm.log("t:1").append(1), int)
    assert_type(await pm.log("t:1").tail(5), list[tuple[int, Any]])
    assert_type(await pm.log("t:1").last(), tuple[int, Any] | None)
    assert_type([k async for k in pm.keys("t:", limit=1, reverse=True)], list[str])
    async with pm.lock("job"):
        pass
