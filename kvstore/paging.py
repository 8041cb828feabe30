"""Async key listings fetched a page at a time.

An async ``keys()`` walks pages of sorted keys (:data:`PAGE` per fetch), so a caller that
stops after ten keys of a million has fetched one page, not the million; the manager merges
several stores' pages in order without listing any of them in full.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any, AsyncIterator, TypeVar

T = TypeVar("T")

PAGE = 1000  # keys per fetch: one short query on SQLite/PostgreSQL, one thread hop


async def flatten(pages: AsyncIterator[list[str]], limit: int | None) -> AsyncIterator[str]:
    """The keys of ``pages`` in order, at most ``limit`` of them (``None``: all)."""
    left = limit
    async for page in pages:
        for key in page if left is None else page[:left]:
            yield key
        if left is not None:
            left -= min(left, len(page))
            if left == 0:
                return


class _Desc(str):
    """A key that sorts in reverse on the heap (a descending merge)."""

    def __lt__(self, other: str) -> bool:
        return str.__gt__(self, other)


async def merge(sources: list[AsyncIterator[str]], limit: int | None,
                reverse: bool = False) -> AsyncIterator[str]:
    """Sorted ``sources`` (all descending when ``reverse``) merged into one stream in that
    order, each key once, at most ``limit``."""
    wrap = _Desc if reverse else str
    heap: list[tuple[str, int]] = []
    for i, source in enumerate(sources):
        first = await anext(source, None)
        if first is not None:
            heap.append((wrap(first), i))
    heapq.heapify(heap)
    last: str | None = None
    given = 0
    while heap and (limit is None or given < limit):
        key, i = heap[0]
        key = str(key)
        following = await anext(sources[i], None)
        if following is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (wrap(following), i))
        if key != last:  # the same key in two stores is listed once
            last = key
            given += 1
            yield key


async def chunks(items: AsyncIterator[T], size: int) -> AsyncIterator[list[T]]:
    """``items`` in lists of up to ``size``."""
    chunk: list[T] = []
    async for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def take_page(found: Any) -> list[str]:
    """The next :data:`PAGE` keys of a synchronous key iterator (run in a worker thread)."""
    return list(itertools.islice(found, PAGE))
