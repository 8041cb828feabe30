"""kvstore for LangChain: key-value stores and a chat message history, over any kvstore store.

    from kvstore import SQLiteStore
    from kvstore.contrib.langchain import KVStoreByteStore, KVStoreChatMessageHistory

    store = SQLiteStore(path="app.db")
    cache = KVStoreByteStore(store, category="embeddings")       # a LangChain ByteStore
    cache.mset([("doc-1", b"...")]); cache.mget(["doc-1"])
    history = KVStoreChatMessageHistory("thread-1", store)       # one kvstore log per session
    history.add_messages([HumanMessage("hi"), AIMessage("hello")]); history.messages

``store`` is any kvstore store (memory, SQLite, files, Redis, PostgreSQL, a third party's), its
async face (:func:`kvstore.aio.async_store`), or a manager (:class:`~kvstore.PersistenceManager`
or :class:`~kvstore.aio.AsyncPersistenceManager`) with ``category=``: then everything goes to
the store that category routes to, under ``<category>:`` (directly: the manager's ``stats()``
and events do not count these calls). The async methods (``amget``,
``aget_messages``...) are native on an async store or manager (Redis and PostgreSQL on their
asyncio clients, SQLite and files in kvstore's worker threads: never the event loop); over a
synchronous store they are LangChain's defaults (the sync method in its executor). The
synchronous methods of an async store or manager run on its synchronous twin (same data).

Nothing written here expires unless asked: ``ttl=`` (seconds or ``"7d"``), or over a manager the
category's configured ``ttl``. A store's ``ttl_default`` (``RedisStore``'s 3600 s) does not apply.

Each operation is written once, as a :mod:`kvstore.flows` flow, driven on the synchronous store
by the plain method and on the async one by its ``a``-method.
"""

from __future__ import annotations

import functools
from typing import Any, AsyncIterator, Callable, Iterator, NamedTuple, Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict
from langchain_core.runnables import run_in_executor
from langchain_core.stores import BaseStore

from ..astore import AsyncStore, arun
from ..errors import CorruptDataError, InvalidArgumentError, InvalidKeyError
from ..flows import DATA, Call, Compute, Flow, run
from ..front.manager_async import AsyncManagerOps
from ..front.manager_sync import ManagerOps
from ..rules import TTL, parse_ttl
from ..store import PersistenceStore

__all__ = ["KVStore", "KVStoreByteStore", "KVStoreChatMessageHistory"]


class Faces(NamedTuple):
    """The store the adapter works on: its synchronous face, and its async one (None when the
    adapter was given a synchronous store or manager)."""

    sync: Any
    aio: Any


class Target:
    """What an adapter was given (a store, an async store, a manager) and its category, resolved
    to the store holding the data. A manager's store is looked up on each call, so replacing
    ``pm.stores[name]`` takes effect at once."""

    def __init__(self, source: Any, category: str | None, owner: str) -> None:
        self.source = source
        self.manager = isinstance(source, (ManagerOps, AsyncManagerOps))
        if not self.manager and not isinstance(source, (PersistenceStore, AsyncStore)):
            raise InvalidArgumentError(f"{owner}: store must be a kvstore store, async store or "
                                       f"manager, got {type(source).__name__}")
        if category is not None and (not isinstance(category, str) or not category
                                     or ":" in category):
            raise InvalidArgumentError(f"{owner}: category must be a non-empty str without ':', "
                                       f"got {category!r}")
        self.prefix = f"{category}:" if category else ""
        #: Seconds a value lives when the adapter is not given a ttl: a manager category's
        #: configured ttl, else None (forever, whatever the store's ttl_default).
        self.ttl: float | None = None
        if self.manager:
            if category is None:
                raise InvalidArgumentError(f"{owner}: over a manager, category= names where the "
                                           "data goes (e.g. category='langchain')")
            spec = source.config.categories.get(category)
            self.store_name = spec.store if spec is not None else source.config.default_store
            self.ttl = spec.ttl if spec is not None else None

    def faces(self) -> Faces:
        source = self.source
        if self.manager:
            source = source.stores[self.store_name]
        if isinstance(source, AsyncStore):
            return Faces(source.sync, source)
        return Faces(source, None)


def _both(flow: Callable[..., Flow]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The synchronous and the async method running ``flow(self, face, *args)``: on the
    synchronous face with :func:`kvstore.flows.run`, on the async face with
    :func:`kvstore.astore.arun`; without an async face, the synchronous method in LangChain's
    executor (what its base classes do)."""
    def method(self: Any, *args: Any) -> Any:
        face = self.target.faces().sync
        return run(face, flow(self, face, *args))

    async def amethod(self: Any, *args: Any) -> Any:
        face = self.target.faces().aio
        if face is None:
            return await run_in_executor(None, method, self, *args)
        return await arun(face, flow(self, face, *args))

    name = flow.__name__.lstrip("_")
    for function, its_name in ((method, name), (amethod, "a" + name)):
        function.__name__ = function.__qualname__ = its_name
        function.__doc__ = flow.__doc__
    return method, amethod


# -- key-value stores --------------------------------------------------------------------------


class KVStore(BaseStore[str, Any]):
    """A LangChain ``BaseStore[str, Any]`` on a kvstore store: values are anything the store's
    serializer encodes (JSON, MessagePack...; on a ``MemoryStore`` without serializer, the objects
    themselves).

    Args:
        store: a kvstore store, async store or manager (see the module's documentation).
        category: keys are stored as ``<category>:<key>``; over a manager it names the category
            (required there); None on a store: keys as given.
        ttl: how long each value lives (seconds or ``"90s"``, ``"7d"``); None: forever (over a
            manager: the category's ``ttl`` when configured).

    ``mget``/``mset``/``mdelete`` are one round trip each (``load_many``, one ``save_many``
    batch, ``delete_many``); ``yield_keys(prefix=)`` lists the store's keys by prefix.
    A key the store cannot hold raises :class:`~kvstore.InvalidKeyError` (a ``ValueError``);
    a value it cannot encode, :class:`~kvstore.SerializationError`, and nothing is written.
    """

    def __init__(self, store: Any, category: str | None = None, *, ttl: TTL = None) -> None:
        self.target = Target(store, category, type(self).__name__)
        self.ttl = parse_ttl(ttl) if ttl is not None else self.target.ttl

    def _key(self, key: Any) -> str:
        if not isinstance(key, str):
            raise InvalidKeyError(f"{type(self).__name__}: keys are str, got {key!r}")
        return self.target.prefix + key

    def _stored(self, key: str, value: Any) -> Any:
        """The value written for ``key`` (a subclass checks it)."""
        return value

    def _loaded(self, value: Any) -> Any:
        """The value handed back (a subclass converts it)."""
        return value

    def _mget(self, face: Any, keys: Sequence[str]) -> Flow:
        """The value of each key, None for a missing (or expired) one: one ``load_many``."""
        wanted = [self._key(k) for k in keys]
        found = yield Call(DATA, "load_many", (wanted,))
        return [self._loaded(found[k]) if k in found else None for k in wanted]

    def _mset(self, face: Any, key_value_pairs: Sequence[tuple[str, Any]]) -> Flow:
        """Store every pair, in one batch (one round trip / one transaction): every key is
        checked and every value encoded before anything is written."""
        items = {self._key(k): self._stored(k, v) for k, v in key_value_pairs}
        # The store's own checks and encoding (save_many's), written with this adapter's TTL:
        # save_many's ttl=None would mean the store's ttl_default.
        encoded, _ = face.encoded_items(items, None)
        if encoded:
            yield Call(DATA, "raw_set_many", (encoded, self.ttl))

    def _mdelete(self, face: Any, keys: Sequence[str]) -> Flow:
        """Delete the keys (missing ones are no error): one ``delete_many``."""
        yield Call(DATA, "delete_many", ([self._key(k) for k in keys],))

    mget, amget = _both(_mget)
    mset, amset = _both(_mset)
    mdelete, amdelete = _both(_mdelete)

    def yield_keys(self, *, prefix: str | None = None) -> Iterator[str]:
        """The keys starting with ``prefix`` (all keys: None), sorted."""
        cut = len(self.target.prefix)
        for key in self.target.faces().sync.keys(self.target.prefix + (prefix or "")):
            yield key[cut:]

    async def ayield_keys(self, *, prefix: str | None = None) -> AsyncIterator[str]:
        """:meth:`yield_keys`, listed by the async store a page at a time."""
        face = self.target.faces().aio
        if face is None:
            async for key in super().ayield_keys(prefix=prefix):
                yield key
            return
        cut = len(self.target.prefix)
        async for key in face.keys(self.target.prefix + (prefix or "")):
            yield key[cut:]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target.source!r}, prefix={self.target.prefix!r})"


class KVStoreByteStore(KVStore):
    """A LangChain ``ByteStore`` (``BaseStore[str, bytes]``) on a kvstore store: the values are
    ``bytes`` (what ``CacheBackedEmbeddings`` and ``LocalFileStore`` users keep), stored as the
    store stores bytes (raw on Redis, SQLite and PostgreSQL blobs; base64 in a JSON file).
    Arguments as :class:`KVStore`; a value that is not bytes raises
    :class:`~kvstore.errors.InvalidArgumentError` naming the key, and nothing is written."""

    def _stored(self, key: str, value: Any) -> Any:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError(f"{type(self).__name__} key {key!r}: values are bytes, got "
                                       f"{type(value).__name__}; nothing was written")
        return bytes(value)

    def _loaded(self, value: Any) -> Any:
        return value if type(value) is bytes else bytes(value)


# -- chat message history ----------------------------------------------------------------------


class KVStoreChatMessageHistory(BaseChatMessageHistory):
    """A LangChain chat message history on a kvstore log: one log per session, named
    ``<category>:<session_id>``, each message one record (``message_to_dict``).

    Appending a message is one atomic ``log.append`` (safe across threads and processes: two
    workers adding to one session lose nothing), whatever the length of the conversation;
    reading the latest messages (:meth:`last_messages`) reads only those.

    Args:
        session_id: the conversation.
        store: a kvstore store, async store or manager (see the module's documentation).
        category: the logs' category (over a manager: where they are routed). None on a store:
            the log is named ``session_id``.

    The messages of one ``add_messages`` call are appended in order; another writer's messages
    may land between them.
    """

    def __init__(self, session_id: str, store: Any, category: str | None = "chat") -> None:
        self.target = Target(store, category, type(self).__name__)
        if not isinstance(session_id, str) or not session_id:
            raise InvalidKeyError(f"{type(self).__name__}: session_id must be a non-empty str, "
                                  f"got {session_id!r}")
        self.session_id = session_id
        self.log_name = self.target.prefix + session_id
        self.target.faces().sync.check_key(self.log_name)

    def _get_messages(self, face: Any) -> Flow:
        """Every message of the session, oldest first (one read of the log)."""
        rows = yield Compute(face.log(self.log_name).read)
        return self._decoded(rows)

    def _add_messages(self, face: Any, messages: Sequence[BaseMessage]) -> Flow:
        """Append the messages, in order, each one log record (one atomic append each)."""
        records = []
        for message in messages:
            if not isinstance(message, BaseMessage):
                raise InvalidArgumentError(f"{type(self).__name__} {self.log_name!r}: messages "
                                           f"are BaseMessage, got {type(message).__name__}; "
                                           "nothing was added")
            records.append(message_to_dict(message))
        log = face.log(self.log_name)
        for record in records:
            yield Compute(functools.partial(log.append, record))

    def _clear(self, face: Any) -> Flow:
        """Delete the session's log."""
        yield Compute(face.log(self.log_name).delete)

    def _last_messages(self, face: Any, n: int) -> Flow:
        """The last ``n`` messages (fewer in a shorter conversation), oldest first: one read
        from the end of the log, whatever its length (``n`` >= 1)."""
        rows = yield Compute(functools.partial(face.log(self.log_name).tail, n))
        return self._decoded(rows)

    def _decoded(self, rows: list[tuple[int, Any]]) -> list[BaseMessage]:
        """The messages of the log's ``(seq, record)`` rows; a record that is not one (another
        program's, a hand edit) raises CorruptDataError naming the log and its number."""
        messages = []
        for seq, record in rows:
            try:
                messages.extend(messages_from_dict([record]))
            except (KeyError, TypeError, ValueError) as exc:  # pydantic's errors are ValueErrors
                raise CorruptDataError(f"log {self.log_name!r} record {seq}: not a LangChain "
                                       f"message ({type(exc).__name__}: {exc})") from exc
        return messages

    get_messages, aget_messages = _both(_get_messages)
    add_messages, aadd_messages = _both(_add_messages)
    clear, aclear = _both(_clear)
    last_messages, alast_messages = _both(_last_messages)

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override,unused-ignore]  # an attribute in langchain-core
        """Every message of the session, oldest first (one read of the log)."""
        return self.get_messages()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.session_id!r}, log={self.log_name!r})"
