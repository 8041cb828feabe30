"""Export and migrate a million small keys: time and peak memory (flat memory is the point).

    python benchmarks/bench_transfer.py [--keys 1000000] [--redis URL] [--dsn DSN]

Each phase runs in a fresh subprocess so its peak RSS (ru_maxrss) is its own: fill a SQLite
store, export it to JSON Lines, import that file into a new SQLite store, migrate the first
store to Redis and to PostgreSQL. Clean-up (clearing Redis, dropping the table) is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = {"export": 150_000, "import": 100_000, "migrate-redis": 100_000,
           "migrate-postgres": 80_000}


def phase(name: str, folder: str, keys: int, redis_url: str, dsn: str, prefix: str) -> None:
    from kvstore import SQLiteStore
    from kvstore.transfer import export_jsonl, migrate

    db = SQLiteStore(path=os.path.join(folder, "src.db"))
    start = time.perf_counter()
    count = 0
    if name == "fill":
        batch = 10_000
        for i in range(0, keys, batch):
            db.save_many({f"k:{j:07d}": {"n": j} for j in range(i, min(i + batch, keys))},
                         ttl=None if i % 20_000 else 86400)
        count = keys
    elif name == "export":
        with open(os.path.join(folder, "export.jsonl"), "w", encoding="utf-8") as fh:
            count = export_jsonl(db, fh)
    elif name == "import":
        from kvstore.transfer import import_jsonl

        target_db = SQLiteStore(path=os.path.join(folder, "imported.db"))
        with open(os.path.join(folder, "export.jsonl"), encoding="utf-8") as fh:
            count = import_jsonl(target_db, fh)
    elif name == "migrate-redis":
        from kvstore import RedisStore

        target = RedisStore(url=redis_url, key_prefix=prefix, ttl_default=None)
        count = migrate(db, target, batch=1000)
    elif name == "migrate-postgres":
        from kvstore import PostgresStore

        target = PostgresStore(dsn=dsn, table=f"kvbench_{prefix.strip(':')}")
        count = migrate(db, target, batch=1000)
    elapsed = time.perf_counter() - start  # clean-up below is not timed
    if name == "migrate-redis":
        target.clear()
    elif name == "migrate-postgres":
        target.drop_table()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"phase": name, "keys": count, "seconds": round(elapsed, 1),
                      "keys_per_s": round(count / elapsed), "peak_rss_mb": round(peak_mb, 1)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=1_000_000)
    p.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    p.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--phases", default="fill,export,import,migrate-redis,migrate-postgres")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--_phase", help=argparse.SUPPRESS)
    p.add_argument("--_folder", help=argparse.SUPPRESS)
    p.add_argument("--_prefix", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._phase:
        phase(args._phase, args._folder, args.keys, args.redis, args.dsn, args._prefix)
        return
    results = []
    prefix = f"kvbench{uuid.uuid4().hex[:6]}:"
    with tempfile.TemporaryDirectory(prefix="kvtransfer-") as folder:
        for name in args.phases.split(","):
            out = subprocess.run([sys.executable, __file__, "--keys", str(args.keys), "--redis",
                                  args.redis, "--dsn", args.dsn, "--_phase", name, "--_folder",
                                  folder, "--_prefix", prefix],
                                 capture_output=True, text=True, cwd=HERE)
            if out.returncode != 0:
                print(f"{name}: failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(row)
            target = TARGETS.get(name)
            verdict = "" if target is None else (
                f"  target >= {target:,}/s: {'met' if row['keys_per_s'] >= target else 'MISSED'}")
            print(f"{row['phase']:17} {row['keys']:>9,} keys {row['seconds']:>7.1f} s "
                  f"{row['keys_per_s']:>9,}/s  peak RSS {row['peak_rss_mb']:.0f} MB{verdict}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"benchmark": "transfer", "rows": results}, fh, indent=2)


if __name__ == "__main__":
    main()
