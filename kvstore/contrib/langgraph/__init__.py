"""kvstore for LangGraph: long-term memory (``KVStoreMemoryStore``, a ``BaseStore``)."""

from .store import KVStoreMemoryStore

__all__ = ["KVStoreMemoryStore"]
