"""Concurrent read-modify-write: 4 processes x 500 appends over 20 lists, per store.

    python benchmarks/bench_concurrency.py [--quick] [--json PATH]
        [--url redis://127.0.0.1:6379/15] [--dsn postgresql://postgres@127.0.0.1:5432/test]

Ways of appending, each in 4 fresh processes started together:

- ``naive``: ``v = store.load(k, []); v.append(x); store.save(k, v)`` (what users write today;
  the lost appends are counted);
- ``append``: ``store.append(k, x)``;
- ``update``: ``store.update(k, lambda v: v + [x], default=[])``;
- ``atomic``: ``pm.atomic(lambda tx: tx.save(k, tx.load(k, []) + [x]))`` through a manager whose
  category routes to that store.

Also, in one process: an uncontended ``update`` against a ``save`` of the same value, and the
round trips of a Redis lock acquire + release (sends to the server, counted on the connection).

Targets: 0 lost for kvstore's primitives; ``append`` >= 0.5x the appends/s of naive on SQLite and
Redis; uncontended ``update`` within 1.5x of ``save``; a Redis lock in 2 round trips.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _harness import RESULTS, VALUE, measure, parser, server_setting

PROCESSES = 4
LISTS = 20
METHODS = ("naive", "append", "update", "atomic")


def open_store(spec: dict[str, Any]) -> Any:
    import kvstore

    kind = spec["kind"]
    if kind == "sqlite":
        return kvstore.SQLiteStore(path=spec["path"])
    if kind == "file":
        return kvstore.FileStore(base_path=spec["path"])
    if kind == "redis":
        return kvstore.RedisStore(url=spec["url"], key_prefix=spec["prefix"], ttl_default=None)
    return kvstore.PostgresStore(dsn=spec["dsn"], table=spec["table"])


def open_manager(spec: dict[str, Any]) -> Any:
    from kvstore import PersistenceManager

    kind = spec["kind"]
    persistence: dict[str, Any] = {}
    if kind == "sqlite":
        persistence = {"sqlite": {"path": spec["path"]}, "categories": {"chat": {"store": "database"}}}
    elif kind == "file":
        persistence = {"file": {"base_path": spec["path"]}, "categories": {"chat": {"store": "file"}}}
    elif kind == "redis":
        persistence = {"redis": {"url": spec["url"], "key_prefix": spec["prefix"], "ttl_default": None},
                       "categories": {"chat": {"store": "cache"}}}
    else:
        persistence = {"postgres": {"dsn": spec["dsn"], "table": spec["table"]},
                       "categories": {"chat": {"store": "database"}}}
    return PersistenceManager.from_config({"persistence": persistence})


def worker(spec: dict[str, Any], method: str, proc: int, n: int, go: Any, queue: Any) -> None:
    os.environ["KVSTORE_DATA_DIR"] = spec["data_dir"]
    target = open_manager(spec) if method == "atomic" else open_store(spec)
    keys = [f"chat:{i}" for i in range(LISTS)]
    target.load("chat:warm")  # connect before the clock starts
    go.wait()
    errors = 0
    for i in range(n):
        key, item = keys[i % LISTS], f"{proc}-{i}"
        try:
            if method == "naive":
                value = target.load(key, [])
                value.append(item)
                target.save(key, value)
            elif method == "append":
                target.append(key, item)
            elif method == "update":
                target.update(key, lambda v: v + [item], default=[])
            else:
                target.atomic(lambda tx: tx.save(key, tx.load(key, []) + [item]), retries=10_000)
        except Exception:  # noqa: BLE001 - counted: naive users lose these too
            errors += 1
    queue.put(errors)
    target.close()


def contended(spec: dict[str, Any], method: str, n: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    go, queue = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(spec, method, p, n, go, queue))
             for p in range(PROCESSES)]
    for p in procs:
        p.start()
    time.sleep(1.5)  # every process imported kvstore and connected
    start = time.perf_counter()
    go.set()
    errors = sum(queue.get(timeout=600) for _ in procs)
    elapsed = time.perf_counter() - start
    for p in procs:
        p.join(60)
    store = open_store(spec)
    kept = sum(len(store.load(f"chat:{i}", [])) for i in range(LISTS))
    store.clear("chat:")
    store.close()
    total = PROCESSES * n
    return {"appends": total, "kept": kept, "lost": total - kept, "errors": errors,
            "appends_per_s": total / elapsed}


def uncontended(spec: dict[str, Any], n: int) -> tuple[float, float]:
    store = open_store(spec)
    keys = [f"solo:{i}" for i in range(50)]
    for k in keys:
        store.save(k, VALUE)
    rounds = n // len(keys)

    def saves() -> None:
        for _ in range(rounds):
            for k in keys:
                store.save(k, VALUE)

    def updates() -> None:
        for _ in range(rounds):
            for k in keys:
                store.update(k, lambda v: VALUE)

    result = measure(saves, rounds * len(keys)), measure(updates, rounds * len(keys))
    store.clear("solo:")
    store.close()
    return result


def redis_lock_round_trips(url: str) -> tuple[int, float]:
    """Sends to the server for one acquire + release, and lock pairs per second."""
    import redis.connection

    from kvstore import RedisStore

    store = RedisStore(url=url, key_prefix=f"kvbench:{uuid.uuid4().hex[:6]}:")
    lock = store.lock("job", ttl=10)
    with lock:  # the script is loaded and the connection open
        pass
    sends = [0]
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        sends[0] += 1
        return original(self, *args, **kwargs)

    redis.connection.AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        with lock:
            pass
    finally:
        redis.connection.AbstractConnection.send_packed_command = original  # type: ignore[method-assign]

    def pairs() -> None:
        for _ in range(1000):
            with lock:
                pass

    rate = measure(pairs, 1000)
    store.close()
    return sends[0], rate


def _reachable_redis(url: str) -> bool:
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
        return True
    except Exception:  # noqa: BLE001
        return False


def _reachable_postgres(dsn: str) -> bool:
    try:
        import psycopg

        psycopg.connect(dsn, connect_timeout=2).close()
        return True
    except Exception:  # noqa: BLE001
        return False


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--url", default=server_setting("KVSTORE_TEST_REDIS_URL",
                                                   "redis://127.0.0.1:6379/15"))
    p.add_argument("--dsn", default=server_setting("KVSTORE_TEST_POSTGRES_DSN",
                                                   "postgresql://postgres@127.0.0.1:5432/test"))
    args = p.parse_args()
    n = 100 if args.quick else 500
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kvbench-") as tmp:
        specs = [{"kind": "sqlite", "path": str(Path(tmp) / "c.db")},
                 {"kind": "file", "path": str(Path(tmp) / "files")}]
        if _reachable_redis(args.url):
            specs.append({"kind": "redis", "url": args.url,
                          "prefix": f"kvbench:{uuid.uuid4().hex[:6]}:"})
        else:
            print(f"Redis at {args.url} unreachable: skipped")
        if _reachable_postgres(args.dsn):
            specs.append({"kind": "postgres", "dsn": args.dsn,
                          "table": f"kvbench_{uuid.uuid4().hex[:6]}"})
        else:
            print(f"PostgreSQL at {args.dsn} unreachable: skipped")
        print(f"{PROCESSES} processes x {n} appends over {LISTS} lists "
              f"(ratio = appends/s / naive appends/s)")
        print(f"{'store':9} {'method':8} {'appends/s':>10} {'lost':>6} {'ratio':>6}")
        for spec in specs:
            spec["data_dir"] = tmp
            kind = spec["kind"]
            results[kind] = {}
            for method in METHODS:
                r = contended(spec, method, n)
                results[kind][method] = r
                ratio = r["appends_per_s"] / results[kind]["naive"]["appends_per_s"]
                r["ratio_to_naive"] = ratio
                print(f"{kind:9} {method:8} {r['appends_per_s']:10,.0f} {r['lost']:6} "
                      f"{ratio:6.2f}" + (f"  ({r['errors']} raised)" if r["errors"] else ""))
            save, update = uncontended(spec, 500 if args.quick else 2000)
            results[kind]["uncontended"] = {"save_per_s": save, "update_per_s": update,
                                            "save_over_update": save / update}
            print(f"{kind:9} uncontended: save {save:,.0f}/s, update {update:,.0f}/s: "
                  f"update is {save / update:.2f}x slower (target <= 1.5)")
            if kind == "postgres":
                open_store(spec).drop_table()
        if any(s["kind"] == "redis" for s in specs):
            sends, rate = redis_lock_round_trips(args.url)
            results["redis_lock"] = {"round_trips": sends, "pairs_per_s": rate}
            print(f"redis lock acquire+release: {sends} round trips (target 2), "
                  f"{rate:,.0f} pairs/s")
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent).stdout.strip()
        Path(args.json).write_text(json.dumps(
            {"benchmark": "concurrency", "commit": commit, "python": sys.version.split()[0],
             "processes": PROCESSES, "appends_per_process": n, "lists": LISTS,
             "results": results}, indent=2) + "\n")
        print(f"\nresults written to {args.json}")


if __name__ == "__main__":
    RESULTS.mkdir(exist_ok=True)
    main()
