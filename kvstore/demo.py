"""``kvstore demo``: a short tour of the manager on the embedded default (no server needed)."""

from __future__ import annotations

import time
from typing import Any, Callable

from .manager import PersistenceManager

DEMO_CATEGORIES = {
    "session": {"store": "memory", "ttl": "15m"},
    "query_history": {"store": "cache", "ttl": "24h"},
    "preferences": {"store": "database"},
    "config": {"store": "file"},
}


def run_demo(out: Callable[[str], Any] = print) -> int:
    """Route sample keys, expire a TTL, commit one transaction and roll one back."""
    config = {"persistence": {"default_store": "database", "categories": DEMO_CATEGORIES}}
    with PersistenceManager.from_config(config) as pm:
        out("kvstore demo on the embedded default (no server), with the demo's own categories "
            f"({', '.join(DEMO_CATEGORIES)}; the embedded default has none):")
        for name, store in pm.stores.items():
            out(f"  {name:9} {store!r}")

        out("\n1. Routing: the part before the first ':' picks the store and TTL")
        for key in ["session:demo-1", "query_history:demo-1", "preferences:demo-1",
                    "config:demo/ui", "demo-uncategorised"]:
            out(f"  {pm.route(key)}")

        out("\n2. A TTL expiring")
        pm.save("session:demo-otp", "123456", ttl=1)
        out(f"  saved session:demo-otp with ttl=1s -> load: {pm.load('session:demo-otp')!r}")
        time.sleep(1.1)
        out(f"  1.1 s later                        -> load: "
            f"{pm.load('session:demo-otp', default='<expired>')!r}")

        out("\n3. A transaction across three stores, committed")
        with pm.transaction() as tx:
            tx.save("session:demo-1", {"user": "ann", "cart": 2})
            tx.save("preferences:demo-1", {"theme": "dark"})
            tx.save("config:demo/ui", {"font_size": 14})
        for key in ["session:demo-1", "preferences:demo-1", "config:demo/ui"]:
            out(f"  {key:20} = {pm.load(key)!r}  ({pm.route(key).store})")

        out("\n4. A transaction that raises: nothing is written")
        try:
            with pm.transaction() as tx:
                tx.save("preferences:demo-1", {"theme": "light"})
                tx.delete("config:demo/ui")
                raise RuntimeError("payment declined")
        except RuntimeError as exc:
            out(f"  the block raised {exc!r}; rolled back")
        out(f"  preferences:demo-1   = {pm.load('preferences:demo-1')!r}")
        out(f"  config:demo/ui       = {pm.load('config:demo/ui')!r}")

        out("\n5. Stats per store")
        for name, stats in pm.stats().items():
            out(f"  {name:9} {stats}")

        for key in ["session:demo-1", "preferences:demo-1", "config:demo/ui"]:
            pm.delete(key)
        out("\n(demo keys removed)")
    return 0
