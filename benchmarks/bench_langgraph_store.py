"""LangGraph long-term memory: ``KVStoreMemoryStore`` against LangGraph's own stores.

    python benchmarks/bench_langgraph_store.py [--quick] [--json PATH] [--url redis://...]

Side by side in one process: on SQLite, ``KVStoreMemoryStore(SQLiteStore)`` against LangGraph's
``SqliteStore`` (langgraph-checkpoint-sqlite, one autocommit connection, as
``SqliteStore.from_conn_string`` opens it); in memory, ``KVStoreMemoryStore(MemoryStore())``
against ``InMemoryStore``; on Redis (``--url``), reported alone. Operations: ``put`` (a new or
updated item), ``get`` by key, ``search`` of one user's namespace (100 items, the default
limit 10), the same with a filter, ``list_namespaces`` over 100 users.
"""

from __future__ import annotations

import sqlite3
import tempfile
import uuid
from pathlib import Path
from typing import Any

from _harness import Report, measure_pair, measure, parser

USERS = 100
PER_USER = 100


def _fill(store: Any, users: int) -> None:
    for u in range(users):
        store.batch([_put(u, i) for i in range(PER_USER)])


def _put(u: int, i: int) -> Any:
    from langgraph.store.base import PutOp

    return PutOp(("users", f"u{u:03d}", "memories"), f"m{i:03d}",
                 {"text": f"memory {i} of user {u}", "n": i, "kind": "fact" if i % 4 else "pref"})


def _ops(store: Any, n: int) -> dict[str, Any]:
    ns = ("users", "u007", "memories")
    return {
        "put": lambda: [store.put(ns, f"new{i % 50}", {"text": "x", "n": i}) for i in range(n)],
        "get": lambda: [store.get(ns, f"m{i % PER_USER:03d}") for i in range(n)],
        "search 10": lambda: [store.search(ns) for _ in range(n // 10)],
        "search filter": lambda: [store.search(ns, filter={"kind": "pref"}) for _ in range(n // 10)],
        "list_namespaces": lambda: [store.list_namespaces(prefix=("users",))
                                    for _ in range(n // 100)],
    }


_DIVISOR = {"put": 1, "get": 1, "search 10": 10, "search filter": 10, "list_namespaces": 100}


def bench_pair(group: str, ours: Any, peer: Any, peer_name: str, n: int, report: Report) -> None:
    _fill(ours, USERS)
    _fill(peer, USERS)
    mine, theirs = _ops(ours, n), _ops(peer, n)
    for op in mine:
        count = n // _DIVISOR[op]
        a, b = measure_pair(mine[op], theirs[op], count)
        report.add(group, op, "KVStoreMemoryStore", a, True)
        report.add(group, op, peer_name, b, False)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--url", help="also measure on this Redis (a fresh key prefix, removed after)")
    args = p.parse_args()
    n = 500 if args.quick else 3000
    from langgraph.store.memory import InMemoryStore
    from langgraph.store.sqlite import SqliteStore

    from kvstore import MemoryStore, RedisStore, SQLiteStore
    from kvstore.contrib.langgraph import KVStoreMemoryStore

    report = Report("LangGraph long-term memory (BaseStore)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with SQLiteStore(path=folder / "kv.db") as db:
            conn = sqlite3.connect(folder / "lg.db", check_same_thread=False, isolation_level=None)
            peer = SqliteStore(conn)
            peer.setup()
            bench_pair("sqlite", KVStoreMemoryStore(db), peer, "langgraph SqliteStore", n, report)
            conn.close()
    bench_pair("memory", KVStoreMemoryStore(MemoryStore()), InMemoryStore(), "InMemoryStore", n,
               report)
    if args.url:
        with RedisStore(url=args.url, key_prefix=f"bench:{uuid.uuid4().hex[:8]}:") as redis:
            ours = KVStoreMemoryStore(redis)
            _fill(ours, USERS)
            for op, fn in _ops(ours, n).items():
                report.add("redis", op, "KVStoreMemoryStore", measure(fn, n // _DIVISOR[op]), True)
            redis.clear()
    report.target("sqlite", "put", "langgraph SqliteStore", 1.0)
    report.target("sqlite", "get", "langgraph SqliteStore", 0.5)
    report.print()
    report.save(args.json)


if __name__ == "__main__":
    main()
