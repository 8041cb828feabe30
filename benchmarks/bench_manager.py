"""What the manager adds to a store call: pm.load/pm.save vs the store's own load/save.

    python benchmarks/bench_manager.py [--quick] [--json PATH]

Target: within 1.15x of the store on the memory and SQLite stores.
"""

from __future__ import annotations

import os
import tempfile

from _harness import VALUE, Report, measure, parser


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    n = 2_000 if args.quick else 10_000
    report = Report("manager overhead")
    with tempfile.TemporaryDirectory(prefix="kvbench-") as tmp:
        os.environ["KVSTORE_DATA_DIR"] = tmp
        from kvstore import PersistenceManager

        pm = PersistenceManager.from_config({"persistence": {"categories": {
            "session": {"store": "memory"}, "prefs": {"store": "database"}}}})
        for category, store_name in (("session", "memory"), ("prefs", "database")):
            store = pm.stores[store_name]
            keys = [f"{category}:{i}" for i in range(n)]
            for op in ("save", "load"):
                if op == "save":
                    ours = lambda: [pm.save(k, VALUE) for k in keys]  # noqa: E731
                    peer = lambda: [store.save(k, VALUE) for k in keys]  # noqa: E731
                else:
                    ours = lambda: [pm.load(k) for k in keys]  # noqa: E731
                    peer = lambda: [store.load(k) for k in keys]  # noqa: E731
                peer()  # warm: keys exist, routes cached
                ours()
                report.add(store_name, op, "PersistenceManager", measure(ours, n, repeats=5), True)
                report.add(store_name, op, f"{type(store).__name__} alone",
                           measure(peer, n, repeats=5), False)
        pm.close()
    report.print()
    report.save(args.json)


if __name__ == "__main__":
    main()
