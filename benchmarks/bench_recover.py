"""Background recovery: what a pass costs when there is nothing to repair, what it costs the
reads around it, and what a check on every read would have cost instead.

    python benchmarks/bench_recover.py [--quick] [--json PATH] [--dsn postgresql://...]

Per store (SQLite + files locally; PostgreSQL with ``--dsn``): passes/s of one recovery pass
(``Journal.recover``: one ``listdir``, plus one indexed query per PostgreSQL store); ``load``
of one key by a manager with the default background pass (``journal.recover_interval: 2s``)
against one with none (``never``); and ``load`` against ``load`` plus the cheapest check a
read could make (a ``stat`` of the journal folder locally; one indexed query on PostgreSQL).
Target: the background pass costs reads nothing measurable (loads at >= 0.95x of `never`).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable

from _harness import Report, VALUE, measure, measure_pair, parser, server_setting


def _managers(config: dict[str, Any]) -> tuple[Any, Any]:
    from kvstore import PersistenceManager

    with_pass = PersistenceManager.from_config(config)
    never = {"persistence": {**config["persistence"], "journal": {"recover_interval": "never"}}}
    return with_pass, PersistenceManager.from_config(never)


def bench(group: str, config: dict[str, Any], key: str, n: int, report: Report,
          read_check: Callable[[Any], Callable[[], Any]]) -> None:
    on, off = _managers(config)
    try:
        on.save(key, VALUE)
        journal = on._core.journal
        report.add(group, "recovery pass", "Journal.recover", measure(
            lambda: [journal.recover(on._core.stores) for _ in range(n // 10)], n // 10), True)
        ours, peer = measure_pair(lambda: [on.load(key) for _ in range(n)],
                                  lambda: [off.load(key) for _ in range(n)], n, rounds=5)
        report.add(group, "load", "with the 2 s pass", ours, True)
        report.add(group, "load", "recover_interval: never", peer, False)
        check = read_check(on)
        ours, peer = measure_pair(lambda: [off.load(key) for _ in range(n)],
                                  lambda: [(check(), off.load(key)) for _ in range(n)], n)
        report.add(group, "load (read check)", "load", ours, True)
        report.add(group, "load (read check)", "a check + load", peer, False)
        report.target(group, "load", "recover_interval: never", 0.95)
    finally:
        if group == "postgres":
            on.stores["database"].drop_table()
        on.close()
        off.close()


def _stat_check(pm: Any) -> Callable[[], Any]:
    folder = pm._core.journal.folder
    folder.mkdir(parents=True, exist_ok=True)
    return lambda: os.stat(folder)


def _query_check(pm: Any) -> Callable[[], Any]:
    store = pm.stores["database"]
    store.meta.ensure_table()

    def check() -> Any:  # is there any record at all (what a pass asks first)
        with store.connection() as conn:
            return conn.execute(f'SELECT 1 FROM "{store.table}_meta" WHERE key >= %s AND '
                                "key < %s LIMIT 1", ("journal:", "journal;")).fetchone()

    return check


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--dsn", default=server_setting("KVSTORE_TEST_POSTGRES_DSN"))
    args = p.parse_args()
    n = 2_000 if args.quick else 20_000
    report = Report("recovery")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["KVSTORE_DATA_DIR"] = str(folder / "data")
        bench("sqlite", {"persistence": {"sqlite": {"path": str(folder / "app.db")},
                                         "file": {"base_path": str(folder / "files")}}},
              "k", n, report, _stat_check)
        if args.dsn:
            table = f"bench_{uuid.uuid4().hex[:8]}"
            bench("postgres", {"persistence": {"postgres": {"dsn": args.dsn, "table": table}}},
                  "k", n // 10, report, _query_check)
    report.print()
    report.save(args.json)


if __name__ == "__main__":
    main()
