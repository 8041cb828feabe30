"""LangGraph on kvstore: a checkpoint saver (:class:`KVStoreSaver`) and a long-term memory
store (``KVStoreMemoryStore``), over any kvstore store or manager category.

Needs the ``langgraph`` extra (``pip install 'kvstore[langgraph]'``); LangGraph is imported
only here, never by ``import kvstore``.
"""

from __future__ import annotations

import importlib
from typing import Any

from .saver import KVStoreSaver

__all__ = ["KVStoreSaver"]  # and KVStoreMemoryStore, imported on first use (below)

#: Names defined in modules of this package imported on first use (``from
#: kvstore.contrib.langgraph import KVStoreMemoryStore`` imports ``.store``).
_LAZY = {"KVStoreMemoryStore": ".store"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
