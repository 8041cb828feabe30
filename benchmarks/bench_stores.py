"""MemoryStore, SQLiteStore and FileStore side by side with the libraries users replace.

    python benchmarks/bench_stores.py [--quick] [--only memory,sqlite,file] [--json PATH]

Peers: a dict behind a lock and cachetools.TTLCache (memory); raw sqlite3 with the same table,
WAL, synchronous=NORMAL and one prepared primary-key statement, and diskcache.Cache at the same
durability (sqlite_synchronous=1 = NORMAL) (sqlite); a raw temp file + fsync + os.replace write
and open + json.load read (file).
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

from _harness import VALUE, Report, measure, parser

from kvstore import FileStore, MemoryStore, SQLiteStore


def bench_memory(report: Report, n: int) -> None:
    import cachetools

    keys = [f"user:{i}" for i in range(n)]
    batches = [keys[i:i + 100] for i in range(0, n, 100)]
    store = MemoryStore()
    lock = threading.Lock()
    plain: dict = {}
    ttl_cache: cachetools.TTLCache = cachetools.TTLCache(maxsize=n * 2, ttl=3600)

    def dict_set() -> None:
        for k in keys:
            with lock:
                plain[k] = VALUE

    def dict_set_ttl() -> None:
        now = time.monotonic()
        for k in keys:
            with lock:
                plain[k] = (VALUE, now + 60)

    def dict_get() -> None:
        for k in keys:
            with lock:
                plain.get(k)

    def dict_get_many() -> None:
        for batch in batches:
            with lock:
                {k: plain[k] for k in batch if k in plain}

    def dict_incr() -> None:
        for k in keys:
            with lock:
                plain["c" + k] = plain.get("c" + k, 0) + 1

    def tc_set() -> None:
        for k in keys:
            with lock:
                ttl_cache[k] = VALUE

    def tc_get() -> None:
        for k in keys:
            with lock:
                ttl_cache.get(k)

    def tc_get_many() -> None:
        for batch in batches:
            with lock:
                {k: ttl_cache[k] for k in batch if k in ttl_cache}

    def tc_incr() -> None:
        for k in keys:
            with lock:
                ttl_cache["c" + k] = ttl_cache.get("c" + k, 0) + 1

    ops = {
        "set": (lambda: [store.save(k, VALUE) for k in keys], dict_set, tc_set),
        "set ttl": (lambda: [store.save(k, VALUE, ttl=60) for k in keys], dict_set_ttl, tc_set),
        "get": (lambda: [store.load(k) for k in keys], dict_get, tc_get),
        "get_many(100)": (lambda: [store.load_many(b) for b in batches], dict_get_many, tc_get_many),
        "incr": (lambda: [store.incr("c" + k) for k in keys], dict_incr, tc_incr),
    }
    for op, (ours, peer_dict, peer_tc) in ops.items():
        count = len(batches) if op.startswith("get_many") else n
        report.add("memory", op, "MemoryStore", measure(ours, count), True)
        report.add("memory", op, "dict + lock", measure(peer_dict, count), False)
        report.add("memory", op, "cachetools.TTLCache+lock", measure(peer_tc, count), False)


def bench_sqlite(report: Report, n: int, folder: Path) -> None:
    import diskcache

    keys = [f"user:{i}" for i in range(n)]
    batches = [keys[i:i + 100] for i in range(0, n, 100)]
    store = SQLiteStore(path=folder / "kv.db")
    raw = sqlite3.connect(folder / "raw.db", isolation_level=None, check_same_thread=False)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=NORMAL")
    # The same schema as SQLiteStore's (including the expiry index every TTL write maintains),
    # so the ratio is what kvstore's code adds, not a different table.
    raw.execute("CREATE TABLE t (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL) "
                "WITHOUT ROWID")
    raw.execute("CREATE INDEX t_exp ON t(expires_at) WHERE expires_at IS NOT NULL")
    cache = diskcache.Cache(str(folder / "diskcache"))  # sqlite_synchronous=1 (NORMAL) by default

    put = "INSERT OR REPLACE INTO t (key, value, expires_at) VALUES (?, ?, ?)"
    get = "SELECT value FROM t WHERE key = ?"

    def raw_set() -> None:
        for k in keys:
            raw.execute(put, (k, json.dumps(VALUE).encode(), None))

    def raw_set_ttl() -> None:
        for k in keys:
            raw.execute(put, (k, json.dumps(VALUE).encode(), time.time() + 60))

    def raw_get() -> None:
        for k in keys:
            row = raw.execute(get, (k,)).fetchone()
            json.loads(row[0])

    def raw_get_many() -> None:
        for batch in batches:
            marks = ",".join("?" * len(batch))
            {k: json.loads(v) for k, v in raw.execute(
                f"SELECT key, value FROM t WHERE key IN ({marks})", batch)}

    def raw_incr() -> None:
        for k in keys:
            raw.execute("INSERT INTO t (key, value) VALUES (?, 1) ON CONFLICT(key) DO UPDATE "
                        "SET value = value + 1", ("c" + k,))

    ops = {
        "set": (lambda: [store.save(k, VALUE) for k in keys], raw_set,
                lambda: [cache.set(k, VALUE) for k in keys]),
        "set ttl": (lambda: [store.save(k, VALUE, ttl=60) for k in keys], raw_set_ttl,
                    lambda: [cache.set(k, VALUE, expire=60) for k in keys]),
        "get": (lambda: [store.load(k) for k in keys], raw_get,
                lambda: [cache.get(k) for k in keys]),
        "get_many(100)": (lambda: [store.load_many(b) for b in batches], raw_get_many,
                          lambda: [{k: cache.get(k) for k in b} for b in batches]),
        "incr": (lambda: [store.incr("c" + k) for k in keys], raw_incr,
                 lambda: [cache.incr("c" + k) for k in keys]),
    }
    for op, (ours, peer_raw, peer_dc) in ops.items():
        count = len(batches) if op.startswith("get_many") else n
        report.add("sqlite", op, "SQLiteStore", measure(ours, count), True)
        report.add("sqlite", op, "raw sqlite3", measure(peer_raw, count), False)
        report.add("sqlite", op, "diskcache.Cache", measure(peer_dc, count), False)
    # A bounded store (max_entries: n/10, so 90% of the writes evict a key) next to the same
    # unbounded raw INSERT: what the bound costs.
    bounded = SQLiteStore(path=folder / "bounded.db", max_entries=max(1, n // 10))
    report.add("sqlite", "set max_entries", "SQLiteStore", measure(
        lambda: [bounded.save(k, VALUE) for k in keys], n), True)
    report.add("sqlite", "set max_entries", "raw sqlite3", measure(raw_set, n), False)
    bounded.close()
    store.close()
    raw.close()
    cache.close()


def bench_file(report: Report, n: int, folder: Path) -> None:
    keys = [f"config/user-{i}" for i in range(n)]
    store = FileStore(base_path=folder / "files")
    raw_dir = folder / "raw"
    (raw_dir / "config").mkdir(parents=True)

    def raw_set() -> None:
        # FileStore's durability, by hand: the file fsynced before the rename, the folder
        # fsynced after it (or the rename itself can be lost on a power cut).
        for k in keys:
            path = raw_dir / f"{k}.json"
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "w") as fh:
                json.dump(VALUE, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            dfd = os.open(path.parent, os.O_RDONLY)
            os.fsync(dfd)
            os.close(dfd)

    def raw_get() -> None:
        for k in keys:
            with open(raw_dir / f"{k}.json") as fh:
                json.load(fh)

    ops = {
        "set": (lambda: [store.save(k, VALUE) for k in keys], raw_set),
        "get": (lambda: [store.load(k) for k in keys], raw_get),
    }
    for op, (ours, peer) in ops.items():
        report.add("file", op, "FileStore", measure(ours, n), True)
        report.add("file", op, "raw tmp+fsync+replace+dir fsync", measure(peer, n), False)
    store.close()


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--only", default="memory,sqlite,file")
    args = p.parse_args()
    n = 2_000 if args.quick else 10_000
    only = set(args.only.split(","))
    report = Report("stores")
    with tempfile.TemporaryDirectory(prefix="kvbench-") as tmp:
        if "memory" in only:
            bench_memory(report, n)
        if "sqlite" in only:
            bench_sqlite(report, n, Path(tmp))
        if "file" in only:
            bench_file(report, n // 10, Path(tmp))
    report.target("memory", "get", "dict + lock", 0.9)                          # issue 24
    report.target("memory", "set", "dict + lock", 0.7)                          # issue 24
    report.target("sqlite", "get", "raw sqlite3", 0.9)                          # issue 24
    report.target("sqlite", "get", "diskcache.Cache", 1.0)                      # issue 24
    report.target("sqlite", "set ttl", "raw sqlite3", 0.8)                      # issues 15, 24
    report.target("file", "get", "raw tmp+fsync+replace+dir fsync", 0.8)       # issue 24
    report.target("file", "set", "raw tmp+fsync+replace+dir fsync", 0.9)       # issue 15
    report.print()
    report.save(args.json)


if __name__ == "__main__":
    main()
