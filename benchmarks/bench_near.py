"""The near cache: hot-key reads vs MemoryStore and RedisStore; invalidation latency.

    python benchmarks/bench_near.py [--url redis://127.0.0.1:PORT/0] [--quick] [--json PATH]

Without ``--url`` it starts a private redis-server on a free port (the near cache's channel
runs CLIENT TRACKING: keep it off a shared server) and stops it at the end.

- hot-key reads: ``load`` of one key, again and again, through a NearStore over Redis (served
  locally), a MemoryStore (no serializer: a dict behind a lock) and a plain RedisStore (one
  round trip each), for a small dict (decoded on every hit, so that a caller's change to it
  never changes the copy; and with ``shared: true``, one decoded object for every reader) and a
  string (decoded once). Targets: reads through the near cache at >= 0.5x MemoryStore.load and
  >= 50x RedisStore.load.
- invalidation latency: another process polls ``load`` of a key in a loop through its near
  cache while this one saves a new value every 10 ms through a plain RedisStore; the latency
  of a write is from just before it is sent to when the poller first sees the new value (both
  read ``time.time()`` on this machine). Target: p99 <= 10 ms.
"""

from __future__ import annotations

import multiprocessing
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from _harness import VALUE, Report, measure_pair, parser


def _repeat(load: Any, key: str, n: int) -> None:
    # Not a list of the results: keeping 200,000 fresh dicts alive would time the garbage
    # collector walking them, which a reader that uses each value and drops it never pays.
    for _ in range(n):
        load(key)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _private_redis() -> tuple[str, Any]:
    if shutil.which("redis-server") is None:
        print("redis-server is not on PATH and no --url was given; nothing measured")
        sys.exit(0)
    port = _free_port()
    folder = tempfile.mkdtemp(prefix="kvstore-bench-near-")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", folder],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port).ping()
            break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/0", proc


def _poller(url: str, prefix: str, until: float, out: Any) -> None:
    from kvstore import RedisStore
    from kvstore.stores.near import NearSettings, NearStore

    store = NearStore(RedisStore(url=url, key_prefix=prefix), NearSettings(), wait=10)
    out.send("ready")
    seen: dict[int, float] = {}
    last = None
    while time.time() < until:
        value = store.load("hot")
        if value != last:
            seen.setdefault(value, time.time())
            last = value
    out.send(seen)
    store.close()


def _latency(url: str, samples: int) -> list[float]:
    from kvstore import RedisStore

    prefix = f"kvbench:{uuid.uuid4().hex[:6]}:"
    writer = RedisStore(url=url, key_prefix=prefix)
    writer.save("hot", -1)
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    until = time.time() + 30 + samples * 0.02
    proc = ctx.Process(target=_poller, args=(url, prefix, until, there))
    proc.start()
    assert here.poll(60) and here.recv() == "ready"
    time.sleep(0.2)
    sent = {}
    for i in range(samples):
        time.sleep(0.01)  # the poller is back on its local copy
        sent[i] = time.time()
        writer.save("hot", i)
    seen = here.recv() if here.poll(until - time.time() + 30) else {}
    proc.join(10)
    writer.clear()
    writer.close()
    return sorted(seen[i] - sent[i] for i in sent if i in seen)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--url", help="a Redis to use (default: a private redis-server)")
    args = p.parse_args()
    from kvstore import MemoryStore, RedisStore
    from kvstore.stores.near import NearSettings, NearStore

    url, server = (args.url, None) if args.url else _private_redis()
    n = 20_000 if args.quick else 200_000
    remote = 2_000 if args.quick else 10_000
    report = Report("near")
    try:
        prefix = f"kvbench:{uuid.uuid4().hex[:6]}:"
        plain = RedisStore(url=url, key_prefix=prefix, ttl_default=None)
        nears = {shared: NearStore(RedisStore(url=url, key_prefix=prefix, ttl_default=None),
                                   NearSettings(shared=shared), wait=10)
                 for shared in (False, True)}
        memory = MemoryStore()
        for label, value, shared in (("dict", VALUE, False), ("dict shared", VALUE, True),
                                     ("str", "dark-mode-on", False)):
            key = f"hot-{label}"
            near = nears[shared]
            plain.save(key, value)
            memory.save(key, value)
            time.sleep(0.05)  # the echo of the save: the first load's copy then stays
            assert near.load(key) == value
            op = f"hot load {label}"
            ours, peer = measure_pair(lambda: _repeat(near.load, key, n),
                                      lambda: _repeat(memory.load, key, n), n)
            report.add("near", op, "NearStore", ours, True)
            report.add("near", op, "MemoryStore", peer, False)
            _, slow = measure_pair(lambda: None,
                                   lambda: _repeat(plain.load, key, remote), remote)
            report.add("near", op, "RedisStore", slow, False)
            report.target("near", op, "MemoryStore", 0.5)
            report.target("near", op, "RedisStore", 50.0)
        stats = nears[False].near_stats()
        plain.clear()
        for near in nears.values():
            near.close()
        plain.close()
        delays = _latency(url, 100 if args.quick else 500)
        report.print()
        print(f"\nnear stats: {stats}")
        if delays:
            p50 = delays[len(delays) // 2] * 1000
            p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))] * 1000
            print(f"invalidation latency over {len(delays)} writes (2 processes): "
                  f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {delays[-1] * 1000:.2f} ms "
                  f"(target p99 <= 10 ms: {'met' if p99 <= 10 else 'MISSED'})")
            report.add("near", "invalidation p50 ms", "NearStore", p50, True)
            report.add("near", "invalidation p99 ms", "NearStore", p99, True)
        report.save(args.json)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
