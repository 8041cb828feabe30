"""Backup and restore time of a manager: SQLite database, file store, and the cache tier
(embedded SQLite, or Redis with ``--redis``), with a log in each durable store.

    python benchmarks/bench_restore.py [--keys 100000] [--files 1000] [--cache 10000] [--redis URL]

A restore checks every record against its store, copies the stores a later failure would put
back, then replaces each store at once; this prints what that costs next to the backup.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=100_000, help="keys in the SQLite database tier")
    ap.add_argument("--files", type=int, default=1_000, help="keys in the file store")
    ap.add_argument("--cache", type=int, default=10_000, help="keys in the cache tier")
    ap.add_argument("--redis", help="a Redis URL for the cache tier (default: embedded SQLite)")
    args = ap.parse_args()
    from kvstore import PersistenceManager, RedisStore

    with tempfile.TemporaryDirectory() as folder:
        os.environ["KVSTORE_DATA_DIR"] = os.path.join(folder, "data")
        config = {"persistence": {"backup": {"path": os.path.join(folder, "backups")},
                                  "categories": {"p": {"store": "database"},
                                                 "f": {"store": "file"}, "c": {"store": "cache"}}}}
        with PersistenceManager.from_config(config) as pm:
            if args.redis:
                pm.stores["cache"].close()
                pm.stores["cache"] = RedisStore(url=args.redis, ttl_default=None,
                                                key_prefix=f"bench:{uuid.uuid4().hex[:6]}:")
            for name, prefix, n in (("database", "p", args.keys), ("file", "f", args.files),
                                    ("cache", "c", args.cache)):
                store = pm.stores[name]
                for i in range(0, n, 1000):
                    store.save_many({f"{prefix}:{j:07d}": {"j": j, "text": "x" * 40}
                                     for j in range(i, min(n, i + 1000))})
                for j in range(100):
                    store.log(f"{prefix}:log").append({"turn": j})
            total = args.keys + args.files + args.cache
            start = time.perf_counter()
            path = pm.backup()
            backup = time.perf_counter() - start
            start = time.perf_counter()
            pm.restore(path)
            restore = time.perf_counter() - start
            print(f"{total:,} keys ({args.keys:,} SQLite, {args.files:,} files, {args.cache:,} "
                  f"{'Redis' if args.redis else 'embedded cache'}) + 300 log records: backup "
                  f"{backup:.2f} s ({total / backup:,.0f} keys/s), restore {restore:.2f} s "
                  f"({total / restore:,.0f} keys/s)")
            if args.redis:
                pm.stores["cache"].clear()
                for name in pm.stores["cache"].logs():
                    pm.stores["cache"].log(name).delete()


if __name__ == "__main__":
    main()
