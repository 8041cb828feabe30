"""kvstore as LangGraph's long-term memory: a ``BaseStore`` over any kvstore store::

    from kvstore import SQLiteStore
    from kvstore.contrib.langgraph import KVStoreMemoryStore

    memory = KVStoreMemoryStore(SQLiteStore(path="agent.db"))
    memory.put(("users", "ann"), "prefs", {"theme": "dark"})
    memory.get(("users", "ann"), "prefs").value          # {'theme': 'dark'}
    graph = builder.compile(store=memory)                 # the graph's nodes get it as `store`

Also over an async store (``kvstore.aio``) or a manager's category:
``KVStoreMemoryStore(pm, category="memory")`` keeps the items in the store that category routes
to. Every item is one kvstore key, ``<category>:<label>/<label>/.../<key>`` (see
:mod:`._memory_keys`), holding ``{"value", "created_at", "updated_at", "ttl"}``.

Semantics are LangGraph's ``InMemoryStore``'s (its reference store), with these differences:

- durable and shared: any process opening the same store sees the same items;
- ``search`` and ``list_namespaces`` list in namespace, then key order (``InMemoryStore``:
  insertion order), and an emptied namespace is no longer listed;
- ``created_at`` stays that of the first ``put`` (``InMemoryStore`` resets it on every put);
- no vector search: ``index=`` is refused, and ``query=`` is ignored, as ``InMemoryStore``
  without an index ignores it;
- TTLs (``supports_ttl = True``): ``put(..., ttl=minutes)`` or ``TTLConfig(default_ttl=...)``
  become the kvstore key's own expiry, so an expired item is gone the moment it expires, on
  every store, without a sweeper; reads (``get``/``search`` with ``refresh_ttl``, by default
  ``TTLConfig.refresh_on_read``, itself True by default) restart it. An item put without a TTL
  never expires: the store's ``ttl_default`` is not applied (a RedisStore's default hour
  would silently drop memories); a manager category's configured ``ttl`` is the default TTL
  when no ``TTLConfig`` is given.

``batch`` and ``abatch`` run one definition, a :mod:`kvstore.flows` flow of byte-level store
calls: directly on a synchronous store, awaited on an async one (``abatch`` over a synchronous
store runs ``batch`` in a worker thread; ``batch`` over an async store runs on its synchronous
twin). As ``InMemoryStore`` does, every read of a batch sees the data as it was before the
batch, and its puts are applied after (the last put of a key wins). A put keeps ``created_at``
with a compare-and-swap, so concurrent writers never lose one. A batch with a bad op (a
namespace, a TTL, a key the store cannot hold, a value it cannot encode) writes nothing; a batch
is not one transaction, though: a store failing midway may leave its first puts applied.

Costs: ``get`` is one ``raw_get_many`` for the whole batch; ``search`` lists the keys under its
namespace prefix once, then loads only what it needs (without a filter, only the page; with one,
200 items a round trip until the page is full); ``list_namespaces`` lists the keys under the
longest literal ``prefix`` it is given. Those listings are range scans on SQLite and
PostgreSQL, a folder walk on files, a ``SCAN`` on Redis, and every key on a ``MemoryStore``.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
from typing import Any, Iterable

from langgraph.store.base import (BaseStore, GetOp, Item, ListNamespacesOp, Op, PutOp,
                                  Result, SearchItem, SearchOp, TTLConfig,
                                  validate_op_namespace)

from ...astore import AsyncStore, arun
from ...errors import ConfigError, CorruptDataError, InvalidArgumentError
from ...flows import DATA, Call, Flow, run
from ...store import MISSING, PersistenceStore, parse_ttl
from ._memory_keys import (item_key, matches_condition, matches_filter, namespace_prefix,
                           in_order, namespaces, split_key)

__all__ = ["KVStoreMemoryStore"]

_TTL_SETTINGS = {"refresh_on_read", "default_ttl", "sweep_interval_minutes", "omit_expired"}
_CHUNK = 200  # items loaded per round trip while a filtered search scans


def _call(method: str, *args: Any) -> Call:
    return Call(DATA, method, args)


class KVStoreMemoryStore(BaseStore):
    """LangGraph's long-term memory store (``BaseStore``) on a kvstore store.

    Args:
        store: a kvstore store (``SQLiteStore``, ``RedisStore``...), its async face
            (:mod:`kvstore.aio`), or a ``PersistenceManager`` / ``AsyncPersistenceManager``.
        category: the items' key prefix (``<category>:``); with a manager, the category whose
            store holds them (its configured ``ttl``, if any, is the default TTL).
        ttl: LangGraph's ``TTLConfig``: ``default_ttl`` (minutes) for puts that give none,
            ``refresh_on_read`` (default True). ``sweep_interval_minutes`` is accepted and
            unused: kvstore expires keys itself. Unknown settings raise ``ConfigError``.
        index: not supported (no embeddings, no vector search): ``ConfigError`` if given.

    The store is not closed by this object: close it (or the manager) yourself.
    """

    supports_ttl = True

    def __init__(self, store: Any, category: str = "memory", *, ttl: TTLConfig | None = None,
                 index: Any = None) -> None:
        if index is not None:
            raise ConfigError("index: KVStoreMemoryStore has no vector search (no embeddings); "
                              "leave index unset: search(query=...) then ignores the query, "
                              "as InMemoryStore without an index does")
        if not isinstance(category, str) or not category or ":" in category:
            raise ConfigError(f"category: must be a non-empty str without ':', got {category!r}")
        target, default_ttl = _resolve(store, category)
        self.base = category + ":"
        self._astore: AsyncStore | None = target if isinstance(target, AsyncStore) else None
        self._sync: PersistenceStore = target.sync if self._astore is not None else target
        self.owner = store
        self.ttl_config = _check_ttl_config(ttl, default_ttl)
        self._sync.check_prefix(self.base)

    # -- LangGraph's two entry points -------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` (GetOp, PutOp, SearchOp, ListNamespacesOp); one result per op, in order."""
        return run(self._sync, self._batch(list(ops)))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """:meth:`batch`, awaited: natively on an async store, else in a worker thread."""
        ops = list(ops)
        if self._astore is None:
            return await asyncio.to_thread(self.batch, ops)
        return await arun(self._astore, self._batch(ops))

    # -- the batch, as one flow ---------------------------------------------------------------------

    def _batch(self, ops: list[Op]) -> Flow:
        results: list[Result] = [None] * len(ops)
        gets: list[tuple[int, GetOp, str]] = []
        puts: dict[str, PutOp] = {}
        for i, op in enumerate(ops):  # every op checked before anything is read or written
            if not isinstance(op, (GetOp, PutOp, SearchOp, ListNamespacesOp)):
                raise InvalidArgumentError(f"unknown operation type: {type(op).__name__}")
            validate_op_namespace(op)
            if isinstance(op, GetOp):
                gets.append((i, op, self._key(op.namespace, op.key)))
                self._sync.check_key(gets[-1][2])
            elif isinstance(op, PutOp):
                key = self._key(op.namespace, op.key)
                self._sync.check_key(key)
                _seconds(op.ttl)
                puts.pop(key, None)  # the last put of a key wins
                puts[key] = op
        if gets:
            yield from self._get(gets, results)
        for i, op in enumerate(ops):
            if isinstance(op, SearchOp):
                results[i] = yield from self._search(op)
            elif isinstance(op, ListNamespacesOp):
                results[i] = yield from self._list_namespaces(op)
        if puts:
            yield from self._put(puts)
        return results

    def _key(self, namespace: tuple[str, ...], key: str) -> str:
        return item_key(self.base, tuple(namespace), key)

    def _get(self, gets: list[tuple[int, GetOp, str]], results: list[Result]) -> Flow:
        found = yield _call("raw_get_many", list(dict.fromkeys(key for _, _, key in gets)))
        touched = set()
        for i, op, key in gets:
            blob = found.get(key, MISSING)
            if blob is MISSING:
                continue
            record = self._record(key, blob)
            results[i] = Item(namespace=op.namespace, key=op.key, value=record["value"],
                              created_at=record["created_at"], updated_at=record["updated_at"])
            ttl = record.get("ttl")
            if op.refresh_ttl and ttl and key not in touched:
                touched.add(key)
                yield _call("raw_touch", key, _seconds(ttl))

    def _search(self, op: SearchOp) -> Flow:
        prefix = namespace_prefix(self.base, tuple(op.namespace_prefix))
        keys = in_order(self.base, prefix, (yield _call("raw_keys", prefix)))
        offset, limit = op.offset, op.limit
        bounded = offset >= 0 and limit >= 0
        if bounded and (not op.filter or limit == 0):  # nothing to test: skip without loading
            keys, offset = keys[offset:offset + limit], 0
        stop = offset + limit if bounded else None
        kept: list[tuple[str, Any]] = []  # (key, record): an item is made only if returned
        decode = self._record
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            found = yield _call("raw_get_many", chunk)
            for key in chunk:
                if key in found and matches_filter((record := decode(key, found[key]))["value"],
                                                   op.filter):
                    kept.append((key, record))
                    if len(kept) == stop:
                        break
            if len(kept) == stop:
                break
        page = kept[offset:offset + limit]
        if op.refresh_ttl:
            for key, record in page:
                if record.get("ttl"):
                    yield _call("raw_touch", key, _seconds(record["ttl"]))
        return [self._item(key, record) for key, record in page]

    def _list_namespaces(self, op: ListNamespacesOp) -> Flow:
        conditions = [(c.match_type, tuple(c.path)) for c in op.match_conditions or ()]
        fixed: tuple[str, ...] = ()  # a prefix condition's leading labels narrow the scan
        for match_type, path in conditions:
            if match_type == "prefix":
                lead = tuple(itertools.takewhile(lambda label: label != "*", path))
                fixed = lead if len(lead) > len(fixed) else fixed
        listed = yield _call("raw_keys", namespace_prefix(self.base, fixed))
        kept = [ns for ns in namespaces(self.base, listed)
                if all(matches_condition(t, path, ns) for t, path in conditions)]
        if op.max_depth is not None:
            kept = list({ns[:op.max_depth] for ns in kept})
        return sorted(kept)[op.offset:op.offset + op.limit]

    def _put(self, puts: dict[str, PutOp]) -> Flow:
        deletes = [key for key, op in puts.items() if op.value is None]
        writes = {key: op for key, op in puts.items() if op.value is not None}
        current = (yield _call("raw_get_many", list(writes))) if writes else {}
        now = _now()
        # Every record is encoded (and every stored one read) before the batch writes anything.
        staged = {key: (current.get(key, MISSING), self._encoded(key, op, current.get(
            key, MISSING), now)) for key, op in writes.items()}
        if deletes:
            yield _call("raw_delete_many", deletes)
        for key, (blob, new) in staged.items():
            seconds = _seconds(writes[key].ttl)
            while True:  # compare-and-swap: the first put's created_at survives every writer
                if blob is MISSING:
                    done = yield _call("raw_add", key, new, seconds)
                else:
                    done = yield _call("raw_cas", key, blob, new, seconds)
                if done:
                    break
                blob = yield _call("raw_get", key)
                new = self._encoded(key, writes[key], blob, now)

    def _encoded(self, key: str, op: PutOp, blob: Any, now: str) -> Any:
        """The blob of ``op``'s item, keeping the created_at of the item ``blob`` holds."""
        created = now if blob is MISSING else str(self._record(key, blob)["created_at"])
        return self._sync.encode(key, {"value": dict(op.value or {}), "created_at": created,
                                       "updated_at": now, "ttl": op.ttl})

    # -- records ------------------------------------------------------------------------------------

    def _item(self, key: str, record: dict[str, Any]) -> SearchItem:
        """The SearchItem of a stored record."""
        namespace, name = split_key(self.base, key)
        return SearchItem(namespace=namespace, key=name, value=record["value"],
                          created_at=record["created_at"], updated_at=record["updated_at"])

    def _record(self, key: str, blob: Any) -> dict[str, Any]:
        record = self._sync.decode(key, blob)
        if not (isinstance(record, dict) and isinstance(record.get("value"), dict)
                and "created_at" in record and "updated_at" in record):
            raise CorruptDataError(f"key {key!r} holds a {type(record).__name__} that is not a "
                                   f"LangGraph item: category {self.base[:-1]!r} holds other "
                                   "data; give KVStoreMemoryStore a category of its own")
        return record


    def __repr__(self) -> str:
        return f"KVStoreMemoryStore({self._astore or self._sync!r}, category={self.base[:-1]!r})"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _seconds(minutes: Any) -> float | None:
    """A LangGraph TTL (minutes, None: never) as the seconds kvstore expects; InvalidTTLError
    (a ValueError) naming ``ttl`` for zero, negative or non-numbers."""
    if minutes is None:
        return None
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)):
        raise InvalidArgumentError(f"ttl: minutes as a number or None, got {minutes!r}")
    return parse_ttl(minutes * 60.0, "ttl (minutes)")


def _resolve(store: Any, category: str) -> tuple[Any, float | None]:
    """The store (sync or async) the items live in, and the category's TTL in minutes."""
    from ...aio.manager import AsyncPersistenceManager
    from ...manager import PersistenceManager

    if isinstance(store, (PersistenceManager, AsyncPersistenceManager)):
        spec = store.config.categories.get(category)
        name = spec.store if spec is not None else store.config.default_store
        ttl = spec.ttl / 60.0 if spec is not None and spec.ttl is not None else None
        return store.stores[name], ttl
    if isinstance(store, (PersistenceStore, AsyncStore)):
        return store, None
    raise ConfigError(f"store: a kvstore store, async store or manager, got {store!r}")


def _check_ttl_config(ttl: Any, category_minutes: float | None) -> TTLConfig | None:
    if ttl is None:
        return None if category_minutes is None else TTLConfig(default_ttl=category_minutes)
    if not isinstance(ttl, dict):
        raise ConfigError(f"ttl: a TTLConfig (a dict), got {ttl!r}")
    unknown = set(ttl) - _TTL_SETTINGS
    if unknown:
        raise ConfigError(f"ttl: unknown TTLConfig setting(s) {sorted(unknown)} "
                          f"(known: {sorted(_TTL_SETTINGS)})")
    try:
        _seconds(ttl.get("default_ttl"))
    except ValueError as exc:
        raise ConfigError(f"ttl.default_ttl: {exc}") from exc
    return TTLConfig(**ttl)
