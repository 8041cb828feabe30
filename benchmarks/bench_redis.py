"""RedisStore vs raw redis-py on the same server, and load_many vs single loads.

    python benchmarks/bench_redis.py [--url redis://127.0.0.1:6379/15] [--quick] [--json PATH]

The raw peer packs values with msgpack, as RedisStore does; each pair is measured in
alternating rounds. Targets (printed): save_many(100) at >= 0.9x raw MSET, and with a TTL
>= 0.9x a raw SET PX pipeline in MULTI/EXEC; load_many of 100 keys at least 20x faster than
100 single loads.
"""

from __future__ import annotations

import sys
import uuid

import msgpack
from _harness import VALUE, Report, measure, measure_pair, parser


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--url", default="redis://127.0.0.1:6379/15")
    args = p.parse_args()
    import redis

    from kvstore import RedisStore, StoreUnavailableError

    n = 2_000 if args.quick else 10_000
    prefix = f"kvbench:{uuid.uuid4().hex[:6]}:"
    raw = redis.Redis.from_url(args.url)
    try:
        raw.ping()
    except redis.exceptions.ConnectionError as exc:
        print(f"Redis at {args.url} is not reachable ({exc}); nothing measured")
        sys.exit(0)
    store = RedisStore(url=args.url, ttl_default=None, key_prefix=prefix)
    keys = [f"user:{i}" for i in range(n)]
    names = [prefix + "raw:" + k for k in keys]
    batches = [keys[i:i + 100] for i in range(0, n, 100)]
    raw_batches = [names[i:i + 100] for i in range(0, n, 100)]
    report = Report("redis")
    try:
        cases = {
            "set": (lambda: [store.save(k, VALUE) for k in keys],
                    lambda: [raw.set(k, msgpack.packb(VALUE)) for k in names], n),
            "set ttl": (lambda: [store.save(k, VALUE, ttl=60) for k in keys],
                        lambda: [raw.set(k, msgpack.packb(VALUE), px=60_000) for k in names], n),
            "get": (lambda: [store.load(k) for k in keys],
                    lambda: [msgpack.unpackb(raw.get(k)) for k in names], n),
            "load_many(100)": (lambda: [store.load_many(b) for b in batches],
                               lambda: [[msgpack.unpackb(v) for v in raw.mget(b)]
                                        for b in raw_batches], len(batches)),
            "save_many(100)": (lambda: [store.save_many({k: VALUE for k in b}) for b in batches],
                               lambda: [raw.mset({k: msgpack.packb(VALUE) for k in b})
                                        for b in raw_batches], len(batches)),
            "save_many ttl": (lambda: [store.save_many({k: VALUE for k in b}, ttl=60)
                                       for b in batches],
                              lambda: [_pipe(raw, b, 60_000) for b in raw_batches], len(batches)),
            "incr": (lambda: [store.incr("c" + k) for k in keys],
                     lambda: [raw.incrby(k + "c", 1) for k in names], n),
        }
        for op, (ours, peer, count) in cases.items():
            ours_ops, peer_ops = measure_pair(ours, peer, count)
            report.add("redis", op, "RedisStore", ours_ops, True)
            report.add("redis", op, "raw redis-py", peer_ops, False)
        report.target("redis", "save_many(100)", "raw redis-py", 0.9)   # issue 15
        report.target("redis", "save_many ttl", "raw redis-py", 0.9)
        single = measure(lambda: [[store.load(k) for k in b] for b in batches], len(batches))
        many = measure(lambda: [store.load_many(b) for b in batches], len(batches))
        report.add("redis", "100 keys", "RedisStore.load_many", many, True)
        report.add("redis", "100 keys", "100 x RedisStore.load", single, False)
        report.print()
        print(f"\nload_many(100) is {many / single:.1f}x faster than 100 single loads")
        report.save(args.json)
    except StoreUnavailableError as exc:
        print(f"Redis went away: {exc}")
    finally:
        store.clear()
        raw.delete(*names) if names else None
        for chunk in range(0, len(names), 1000):
            raw.delete(*[k + "c" for k in names[chunk:chunk + 1000]])
        store.close()


def _pipe(raw, names, px) -> None:
    """save_many with a TTL, done by hand: SET ... PX per key in one MULTI/EXEC."""
    pipe = raw.pipeline(transaction=True)
    for name in names:
        pipe.set(name, msgpack.packb(VALUE), px=px)
    pipe.execute()


if __name__ == "__main__":
    main()
