"""Moving keys between stores: JSON Lines export/import and resumable, batched migration.

A JSON Lines record is one key, or one log record, per line::

    {"key": "user:1", "value": {"name": "Ann"}, "ttl": 3599.2}     # export: portable JSON value
    {"key": "user:1", "blob": "wWot...", "ttl": null}               # backup: the exact stored bytes
    {"log": "transcript:t1", "seq": 3, "record": {"role": "user"}}  # a log's record (export)
    {"log": "transcript:t1", "seq": 3, "blob": "wWot..."}           # ... and in a backup

``value`` uses kvstore's tagged JSON (datetimes, tuples, bytes... survive); ``blob`` is base64 of
the self-describing bytes the store held, so pickled values survive a backup byte for byte.
``ttl`` is the remaining time in seconds at export (null: permanent). Log records follow the
keys, each log's records together and in order (``seq`` 1, 2, 3 ...). Importing a log record
appends it when it is the log's next one and skips it when the log already has that number
(so an import or a migration can run again); a gap raises :class:`CorruptDataError`.
Everything streams in batches, so memory stays flat however many keys move.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, NamedTuple

from .errors import CorruptDataError, KVStoreError
from .serializers import TAG, Serializer, json_hook, encode_json_text
from .rows import BATCH, iter_rows
from .store import PersistenceStore, decode_stored

__all__ = ["iter_rows", "iter_records", "export_jsonl", "export_logs", "import_jsonl", "migrate",
           "copy_logs", "Progress"]

Progress = Callable[[int], None]
READER = Serializer("json")  # reads json and msgpack blobs alike (the header says which)
_PLAIN_JSON = Serializer("json").serialize(None)[:3]  # the header of uncompressed JSON


def iter_records(store: PersistenceStore, prefix: str = "", *, raw: bool = False,
                 batch: int = BATCH) -> Iterator[tuple[str, Any, float | None]]:
    """``(key, value, ttl)`` for every live key; with ``raw=True`` the stored blob, not the value."""
    decode = store.decode
    for rows in iter_rows(store, prefix, batch=batch):
        for key, blob, ttl in rows:
            yield key, (blob if raw else decode(key, blob)), ttl


def record_line(key: str, value: Any, ttl: float | None, *, raw: bool = False) -> str:
    if raw:
        if not isinstance(value, (bytes, bytearray)):
            raise KVStoreError(f"key {key!r}: a raw export needs a store that holds bytes")
        return _line(key, '"blob":' + json.dumps(base64.b64encode(value).decode("ascii")), ttl)
    return _line(key, '"value":' + encode_json_text(value), ttl)


def _line(key: str, field: str, ttl: float | None) -> str:
    """One JSON Lines record around ``field`` (``"value":...`` or ``"blob":...``)."""
    return '{"key":' + json.dumps(key, ensure_ascii=False) + "," + field + ',"ttl":' + \
        ("null" if ttl is None else repr(round(ttl, 3))) + "}\n"


def log_pages(store: PersistenceStore, name: str, *, raw: bool = True, after: int = 0,
              batch: int = BATCH) -> Iterator[list[tuple[int, Any]]]:
    """Pages of ``(seq, blob)`` of log ``name`` after ``after``, oldest first: serializer bytes
    with ``raw``, else ``(seq, record)``."""
    while True:
        page = store.raw_log_blobs(name, after, batch) if raw else [
            (seq, store.decode_record(name, b)) for seq, b in store.raw_log_read(name, after, batch)]
        if not page:
            return
        yield page
        after = page[-1][0]


def export_logs(store: PersistenceStore, out: IO[str], prefix: str = "", *,
                raw: bool = False) -> tuple[int, int]:
    """Write every record of the logs named with ``prefix`` (``{"log", "seq", "record"}``, or
    ``"blob"`` with ``raw``); returns ``(logs, records)``."""
    logs = records = 0
    for name in store.raw_log_names(prefix):
        logs += 1
        head = '{"log":' + json.dumps(name, ensure_ascii=False) + ',"seq":'
        for page in log_pages(store, name, raw=raw):
            if raw:
                lines = [f'{head}{seq},"blob":"{base64.b64encode(blob).decode("ascii")}"}}\n'
                         for seq, blob in page]
            else:
                lines = [f'{head}{seq},"record":{encode_json_text(record)}}}\n'
                         for seq, record in page]
            out.write("".join(lines))
            records += len(page)
    return logs, records


def export_jsonl(store: PersistenceStore, out: IO[str], prefix: str = "", *, raw: bool = False,
                 progress: Progress | None = None) -> int:
    """Write every live key with ``prefix`` to ``out``; returns how many.

    A value stored as plain JSON is written as its stored text, without decoding it and
    encoding it again (the store's JSON and the export's are the same tagged JSON). Logs are
    written by :func:`export_logs`.
    """
    count = 0
    decode = store.decode
    for rows in iter_rows(store, prefix):
        lines = []
        for key, blob, ttl in rows:
            if raw:
                lines.append(record_line(key, blob, ttl, raw=True))
                continue
            if type(blob) is bytes and blob[:3] == _PLAIN_JSON:
                body = blob[3:].decode("utf-8")
            else:
                body = encode_json_text(decode(key, blob))
            lines.append(_line(key, '"value":' + body, ttl))
        out.write("".join(lines))
        count += len(rows)
        if progress is not None:
            progress(count)
    if progress is not None:
        progress(count)
    return count


class Record(NamedTuple):
    """One parsed JSON Lines record: a key (``ttl``) or a log record (``seq``)."""

    is_log: bool
    name: str                # the key, or the log's name
    payload: Any             # the value / record, or the stored bytes when ``is_blob``
    ttl: float | None
    seq: int
    is_blob: bool


def parse_record(line: str, where: str) -> Record:
    """One JSON Lines record, checked (one parse: the value's tagged JSON is decoded on the way)."""
    try:
        # The tag hook only where a tag can be (most values are plain JSON).
        record = json.loads(line, object_hook=json_hook) if TAG in line else json.loads(line)
        is_log = "log" in record
        name = record["log"] if is_log else record["key"]
        ttl = None if is_log else record.get("ttl")
        seq = record["seq"] if is_log else 0
        if not isinstance(name, str) or (ttl is not None and (
                isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl != ttl)) or (
                is_log and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 1)):
            raise ValueError("a field has the wrong type")
        if "blob" in record:
            blob = base64.b64decode(record["blob"], validate=True)
            return Record(is_log, name, blob, ttl, seq, True)
        return Record(is_log, name, record["record" if is_log else "value"], ttl, seq, False)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptDataError(f"{where}: not a kvstore JSON Lines record ({exc})") from None


def key_payload(target: PersistenceStore, rec: Record) -> Any:
    """What ``target`` stores for a key record."""
    if not rec.is_blob:
        return target.encode(rec.name, rec.payload)
    if target.serializer is None:  # a MemoryStore that holds objects
        return decode_stored(rec.name, rec.payload, READER)
    return rec.payload


def log_payload(target: PersistenceStore, rec: Record) -> Any:
    """What ``target.raw_log_append`` takes for a log record."""
    if rec.is_blob:
        return target.raw_log_blob_in(rec.name, rec.payload)
    return target.encode_record(rec.name, rec.payload)


class _LogAppender:
    """Appends log records that are the next of their log, skips those the log has."""

    def __init__(self) -> None:
        self.next: dict[tuple[int, str], int] = {}
        self.count = 0

    def add(self, target: PersistenceStore, name: str, seq: int, blob: Callable[[], Any],
            where: str) -> None:
        slot = (id(target), name)
        if slot not in self.next:
            self.next[slot] = target.raw_log_len(name) + 1
        expected = self.next[slot]
        if seq > expected:
            raise CorruptDataError(f"{where}: log {name!r} record {seq} follows record "
                                   f"{expected - 1}: records are missing")
        if seq == expected:
            target.raw_log_append(name, blob())
            self.next[slot] = expected + 1
            self.count += 1


def import_jsonl(store: PersistenceStore | Callable[[str], PersistenceStore],
                 lines: Iterable[str], *, source: str = "input",
                 progress: Progress | None = None, batch: int = BATCH,
                 counts: dict[str, int] | None = None) -> int:
    """Write the records to ``store`` (or to ``store(key)``, a router) in batches, each batch
    atomic per store. Records whose TTL ran out are skipped. Log records are appended when
    they are their log's next record and skipped when the log has them already. Returns how
    many keys were written; ``counts`` (a dict) receives ``keys`` and ``log_records``."""
    route = store if not isinstance(store, PersistenceStore) else (lambda key: store)
    pending: dict[int, tuple[PersistenceStore, list[tuple[str, Any, float | None]]]] = {}
    appender = _LogAppender()
    count = 0

    def flush(target: PersistenceStore, ops: list[tuple[str, Any, float | None]]) -> None:
        nonlocal count
        target.raw_put_rows(ops)
        count += len(ops)
        ops.clear()
        if progress is not None:
            progress(count)

    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        rec = parse_record(line, f"{source}:{number}")
        target = route(rec.name)
        target.check_key(rec.name)
        if rec.is_log:
            appender.add(target, rec.name, rec.seq, lambda: log_payload(target, rec),
                         f"{source}:{number}")
            continue
        if rec.ttl is not None and rec.ttl <= 0:
            continue  # expired in transit
        entry = pending.setdefault(id(target), (target, []))
        entry[1].append((rec.name, key_payload(target, rec), rec.ttl))
        if len(entry[1]) >= batch:
            flush(*entry)
    for target, ops in pending.values():
        if ops:
            flush(target, ops)
    if progress is not None:
        progress(count)
    if counts is not None:
        counts.update(keys=count, log_records=appender.count)
    return count


def copy_logs(source: PersistenceStore, target: PersistenceStore, prefix: str = "", *,
              batch: int = BATCH) -> int:
    """Append to ``target``'s logs named with ``prefix`` the records of ``source``'s that it
    lacks (by number: a rerun copies nothing twice); returns how many records were copied."""
    # A MemoryStore holding objects gives records, not bytes.
    convert = target.encode_record if source.serializer is None else target.raw_log_blob_in
    copied = 0
    for name in source.raw_log_names(prefix):
        target.check_key(name)
        have = target.raw_log_len(name)
        for page in log_pages(source, name, after=have, batch=batch):
            for _, blob in page:
                target.raw_log_append(name, convert(name, blob))
            copied += len(page)
    return copied


def migrate(source: PersistenceStore, target: PersistenceStore, prefix: str = "", *,
            batch: int = BATCH, checkpoint: str | os.PathLike[str] | None = None,
            progress: Progress | None = None, logs: bool = True,
            counts: dict[str, int] | None = None) -> int:
    """Copy every live key with ``prefix`` from ``source`` to ``target`` with its remaining TTL,
    then (``logs=True``, the default) the logs named with ``prefix`` (see :func:`copy_logs`).

    Batches of ``batch`` keys; each batch is applied atomically on the target. With
    ``checkpoint``, the last copied key is recorded after each batch, and a rerun skips keys up
    to it (for sources that list keys in order: SQLite, PostgreSQL, files; for Redis a rerun
    simply copies again, which is harmless). Returns how many keys were copied; ``counts`` (a
    dict) receives ``keys`` and ``log_records``.
    """
    ckpt = Path(checkpoint) if checkpoint is not None else None
    done_up_to = ckpt.read_text(encoding="utf-8") if ckpt is not None and ckpt.exists() else None
    same_bytes = source.serializer is not None and target.serializer is not None
    count = 0
    for rows in iter_rows(source, prefix, done_up_to or None, batch):
        ops = []
        for key, blob, ttl in rows:
            target.check_key(key)
            if not same_bytes:
                blob = target.encode(key, source.decode(key, blob))
            ops.append((key, blob, ttl))
        target.raw_put_rows(ops)
        count += len(ops)
        if ckpt is not None:
            tmp = ckpt.with_name(ckpt.name + ".tmp")
            tmp.write_text(rows[-1][0], encoding="utf-8")
            os.replace(tmp, ckpt)
        if progress is not None:
            progress(count)
    records = copy_logs(source, target, prefix, batch=batch) if logs else 0
    if ckpt is not None and ckpt.exists():
        ckpt.unlink()
    if counts is not None:
        counts.update(keys=count, log_records=records)
    return count
