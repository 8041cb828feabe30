"""PostgresStore vs raw psycopg with the same statements, and load_many vs single loads.

    python benchmarks/bench_postgres.py [--dsn postgresql://postgres@127.0.0.1:5432/test] [--quick]

The raw peer runs PostgresStore's own SQL (prepared by psycopg after a few executions) on a
connection of its own, with json-encoded values. Target: within 1.2x.
"""

from __future__ import annotations

import json
import sys
import time
import uuid

from _harness import VALUE, Report, measure, parser, server_setting


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--dsn", default=server_setting("KVSTORE_TEST_POSTGRES_DSN",
                                                   "postgresql://postgres@127.0.0.1:5432/test"))
    args = p.parse_args()
    import psycopg

    from kvstore import PostgresStore

    n = 1_000 if args.quick else 5_000
    try:
        raw = psycopg.connect(args.dsn, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL at {args.dsn} is not reachable ({exc}); nothing measured")
        sys.exit(0)
    table = f"kvbench_{uuid.uuid4().hex[:6]}"
    store = PostgresStore(dsn=args.dsn, table=table)
    store.save("warm", 1)
    sql = store.queries.sql
    keys = [f"user:{i}" for i in range(n)]
    raw_keys = [f"raw:{k}" for k in keys]
    batches = [keys[i:i + 100] for i in range(0, n, 100)]
    report = Report("postgres")

    def raw_set() -> None:
        for k in raw_keys:
            raw.execute(sql["set"], {"key": k, "value": json.dumps(VALUE).encode(), "exp": None})

    def raw_get() -> None:
        for k in raw_keys:
            row = raw.execute(sql["get"], {"key": k, "now": time.time()}).fetchone()
            json.loads(row[0])

    def raw_get_many() -> None:
        for i in range(0, n, 100):
            rows = raw.execute(sql["get_many"], {"keys": raw_keys[i:i + 100], "now": time.time()})
            {k: json.loads(v) for k, v in rows.fetchall()}

    def raw_incr() -> None:
        for k in raw_keys:
            raw.execute(sql["incr"], {"key": "c" + k, "amount": 1, "now": time.time(), "exp": None})

    try:
        cases = {
            "set": (lambda: [store.save(k, VALUE) for k in keys], raw_set, n),
            "get": (lambda: [store.load(k) for k in keys], raw_get, n),
            "load_many(100)": (lambda: [store.load_many(b) for b in batches], raw_get_many,
                               len(batches)),
            "incr": (lambda: [store.incr("c" + k) for k in keys], raw_incr, n),
        }
        for op, (ours, peer, count) in cases.items():
            report.add("postgres", op, "PostgresStore", measure(ours, count), True)
            report.add("postgres", op, "raw psycopg", measure(peer, count), False)
        single = measure(lambda: [[store.load(k) for k in b] for b in batches], len(batches))
        many = measure(lambda: [store.load_many(b) for b in batches], len(batches))
        report.add("postgres", "100 keys", "PostgresStore.load_many", many, True)
        report.add("postgres", "100 keys", "100 x PostgresStore.load", single, False)
        report.print()
        print(f"\nload_many(100) is {many / single:.1f}x faster than 100 single loads")
        report.save(args.json)
    finally:
        store.drop_table()
        store.close()
        raw.close()


if __name__ == "__main__":
    main()
