"""Logs: ``log.append`` and reading 100k records, per store, against the raw equivalent.

    python benchmarks/bench_logs.py [--quick] [--json PATH] [--url redis://...] [--dsn postgresql://...]
    python benchmarks/bench_logs.py --chat [--quick] [--json PATH]

``--chat``: one 5,000-message conversation (``--quick``: 1,000) kept two ways on SQLite and
files: ``store.append(key, message)`` on a list (the whole list is read and rewritten each time)
against ``log.append(message)``, appends/s over the first and the last 500 messages (100).
The list's last 500 start from a list saved with the 4,500 messages before them.

Raw equivalents, with the same durability, each encoding the record on every append: files — an ``O_APPEND`` write of the same JSON line
plus ``fsync`` (FileStore also takes its folder's flock and reads the last line's number);
SQLite — one ``INSERT`` of the next number (SELECT max + 1) in a ``BEGIN IMMEDIATE`` transaction,
WAL, synchronous=NORMAL; Redis — one ``RPUSH`` of the msgpack bytes; PostgreSQL — the same
``INSERT ... SELECT max + 1`` after an advisory lock, in one transaction. Reads: the raw side
reads and decodes the same rows. Target: within 1.3x of raw.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import uuid
from pathlib import Path
from typing import Any

import msgpack

from _harness import Report, measure, parser, server_setting

RECORD = {"role": "user", "text": "hello, how are you today?", "n": 42}
#: A chat message as LangChain's message_to_dict writes it (kvstore.contrib.langchain's record).
MESSAGE = {"type": "human", "data": {
    "content": "Could you summarise the last report in three bullet points, please?",
    "additional_kwargs": {}, "response_metadata": {}, "type": "human", "name": None, "id": None}}


def bench_file(folder: Path, n: int, reads: int, report: Report) -> None:
    from kvstore import FileStore
    from kvstore.serializers import decode_json_text

    store = FileStore(base_path=folder / "files")
    log = store.log("bench")
    raw_path = folder / "raw.jsonl"
    fd = os.open(raw_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    counter = [0]

    def raw_append() -> None:
        for _ in range(n):
            counter[0] += 1
            os.write(fd, f'{{"seq":{counter[0]},"record":{json.dumps(RECORD)}}}\n'.encode())
            os.fsync(fd)

    report.add("file", "log.append", "FileStore log", measure(
        lambda: [log.append(RECORD) for _ in range(n)], n), True)
    report.add("file", "log.append", "O_APPEND + fsync", measure(raw_append, n), False)
    os.close(fd)
    _fill_file(log, reads)
    with open(raw_path, "w") as fh:
        for i in range(reads):
            fh.write(f'{{"seq":{i + 1},"record":{json.dumps(RECORD)}}}\n')

    def raw_read() -> None:
        with open(raw_path, "rb") as fh:
            [decode_json_text(line) for line in fh]

    report.add("file", "read 100k", "FileStore log", measure(lambda: log.read(), reads, 1), True)
    report.add("file", "read 100k", "raw readlines + json", measure(raw_read, reads, 1), False)


def _fill_file(log: Any, count: int) -> None:
    """Write ``count`` records into a file-store log at once (the setup of the read test)."""
    log.delete()
    blob = log.store.encode_record(log.name, RECORD)
    path = log.store._log_path(log.name)
    with open(path, "w") as fh:
        for i in range(count):
            fh.write(f'{{"seq":{i + 1},"record":{blob}}}\n')


def bench_sqlite(folder: Path, n: int, reads: int, report: Report) -> None:
    from kvstore import SQLiteStore

    store = SQLiteStore(path=folder / "log.db")
    log = store.log("bench")
    con = sqlite3.connect(folder / "raw.db", isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = NORMAL")
    con.execute("CREATE TABLE log (name TEXT, seq INTEGER, value BLOB, PRIMARY KEY (name, seq)) "
                "WITHOUT ROWID")
    blob = store.encode_record("bench", RECORD)

    def raw_append() -> None:
        for _ in range(n):
            con.execute("BEGIN IMMEDIATE")
            con.execute("INSERT INTO log SELECT 'b', coalesce(max(seq), 0) + 1, ? FROM log "
                        "WHERE name = 'b'", (json.dumps(RECORD).encode(),))
            con.execute("COMMIT")

    report.add("sqlite", "log.append", "SQLiteStore log", measure(
        lambda: [log.append(RECORD) for _ in range(n)], n), True)
    report.add("sqlite", "log.append", "raw INSERT", measure(raw_append, n), False)
    log.delete()
    con.execute("DELETE FROM log")
    con.execute("BEGIN")
    for i in range(reads):
        con.execute("INSERT INTO log VALUES ('b', ?, ?)", (i + 1, blob))
    con.execute("COMMIT")
    conn = store._log_conn()
    conn.execute("BEGIN")
    conn.executemany(f'INSERT INTO "{store.table}_log" VALUES (?, ?, ?)',
                     [("bench", i + 1, blob) for i in range(reads)])
    conn.execute("COMMIT")
    dec = store.serializer.deserialize  # type: ignore[union-attr]
    report.add("sqlite", "read 100k", "SQLiteStore log", measure(lambda: log.read(), reads, 1), True)
    report.add("sqlite", "read 100k", "raw SELECT + decode", measure(
        lambda: [dec(bytes(v)) for _, v in con.execute(
            "SELECT seq, value FROM log WHERE name = 'b' AND seq > 0 ORDER BY seq")], reads, 1),
        False)


def bench_redis(url: str, n: int, reads: int, report: Report) -> None:
    import redis

    from kvstore import RedisStore

    prefix = f"kvbench:{uuid.uuid4().hex[:6]}:"
    store = RedisStore(url=url, key_prefix=prefix, ttl_default=None)
    log = store.log("bench")
    raw = redis.Redis.from_url(url)
    packed = msgpack.packb(RECORD)
    report.add("redis", "log.append", "RedisStore log", measure(
        lambda: [log.append(RECORD) for _ in range(n)], n), True)
    report.add("redis", "log.append", "raw RPUSH", measure(
        lambda: [raw.rpush(prefix + "raw", msgpack.packb(RECORD)) for _ in range(n)], n), False)
    log.delete()
    raw.delete(prefix + "raw")
    blob = store.encode_record("bench", RECORD)
    for i in range(0, reads, 10_000):
        raw.rpush(store.log_key("bench"), *[blob] * 10_000)
        raw.rpush(prefix + "raw", *[packed] * 10_000)
    report.add("redis", "read 100k", "RedisStore log", measure(lambda: log.read(), reads, 1), True)
    report.add("redis", "read 100k", "raw LRANGE + msgpack", measure(
        lambda: [msgpack.unpackb(b) for b in raw.lrange(prefix + "raw", 0, -1)], reads, 1), False)
    log.delete()
    raw.delete(prefix + "raw")
    store.close()


def bench_postgres(dsn: str, n: int, report: Report) -> None:
    import psycopg

    from kvstore import PostgresStore

    table = f"kvbench_{uuid.uuid4().hex[:6]}"
    store = PostgresStore(dsn=dsn, table=table)
    log = store.log("bench")
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(f"CREATE TABLE {table}_raw (name text, seq bigint, value bytea, "
                    "PRIMARY KEY (name, seq))")

        def raw_append() -> None:
            for _ in range(n):
                with con.transaction():
                    con.execute("SELECT pg_advisory_xact_lock(hashtextextended('b', 0))")
                    con.execute(f"INSERT INTO {table}_raw SELECT 'b', coalesce(max(seq), 0) + 1, "
                                f"%s FROM {table}_raw WHERE name = 'b'",
                                (json.dumps(RECORD).encode(),))

        report.add("postgres", "log.append", "PostgresStore log", measure(
            lambda: [log.append(RECORD) for _ in range(n)], n), True)
        report.add("postgres", "log.append", "raw INSERT", measure(raw_append, n), False)
        con.execute(f"DROP TABLE {table}_raw")
    store.drop_table()
    store.close()


def bench_conversation(group: str, store: Any, messages: int, window: int,
                       report: Report) -> None:
    """``store.append`` on one list vs ``log.append``: appends/s over the first and the last
    ``window`` messages of a ``messages``-message conversation."""
    import time

    def rate(fn: Any, count: int) -> float:
        start = time.perf_counter()
        for _ in range(count):
            fn()
        return count / (time.perf_counter() - start)

    first, last = f"chat 1-{window}", f"chat {messages - window + 1}-{messages}"
    log = store.log("chat:bench")
    report.add(group, first, "log.append", rate(lambda: log.append(MESSAGE), window), True)
    for _ in range(messages - 2 * window):
        log.append(MESSAGE)
    report.add(group, last, "log.append", rate(lambda: log.append(MESSAGE), window), True)
    assert len(log) == messages
    report.add(group, first, "append on a list", rate(
        lambda: store.append("chat:list", MESSAGE), window), False)
    store.save("chat:list", [MESSAGE] * (messages - window))
    report.add(group, last, "append on a list", rate(
        lambda: store.append("chat:list", MESSAGE), window), False)
    assert len(store.load("chat:list")) == messages
    log.delete()
    store.delete("chat:list")
    store.close()


def main_chat(args: Any) -> None:
    from kvstore import FileStore, SQLiteStore

    messages, window = (1_000, 100) if args.quick else (5_000, 500)
    report = Report("logs: one conversation, list append vs log append")
    with tempfile.TemporaryDirectory(prefix="kvbench-") as tmp:
        bench_conversation("sqlite", SQLiteStore(path=Path(tmp) / "chat.db"), messages, window,
                           report)
        bench_conversation("file", FileStore(base_path=Path(tmp) / "files"), messages, window,
                           report)
    report.print()
    report.save(args.json)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--url", default=server_setting("KVSTORE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
    p.add_argument("--dsn", default=server_setting("KVSTORE_TEST_POSTGRES_DSN",
                                                   "postgresql://postgres@127.0.0.1:5432/test"))
    p.add_argument("--chat", action="store_true",
                   help="only the conversation: list append vs log append (SQLite, files)")
    args = p.parse_args()
    if args.chat:
        main_chat(args)
        return
    n, reads = (200, 20_000) if args.quick else (1_000, 100_000)
    report = Report("logs")
    with tempfile.TemporaryDirectory(prefix="kvbench-") as tmp:
        bench_file(Path(tmp), n, reads, report)
        bench_sqlite(Path(tmp), n, reads, report)
    try:
        bench_redis(args.url, n, reads, report)
    except Exception as exc:  # noqa: BLE001
        print(f"Redis skipped: {exc}")
    try:
        bench_postgres(args.dsn, n // 2, report)
    except Exception as exc:  # noqa: BLE001
        print(f"PostgreSQL skipped: {exc}")
    report.print()
    report.save(args.json)


if __name__ == "__main__":
    main()
