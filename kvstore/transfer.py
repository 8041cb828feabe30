"""Moving keys between stores: JSON Lines export/import and resumable, batched migration.

A JSON Lines record is one key per line::

    {"key": "user:1", "value": {"name": "Ann"}, "ttl": 3599.2}     # export: portable JSON value
    {"key": "user:1", "blob": "wWot...", "ttl": null}               # backup: the exact stored bytes

``value`` uses kvstore's tagged JSON (datetimes, tuples, bytes... survive); ``blob`` is base64 of
the self-describing bytes the store held, so pickled values survive a backup byte for byte.
``ttl`` is the remaining time in seconds at export (null: permanent). Everything streams in
batches, so memory stays flat however many keys move.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

from .errors import CorruptDataError, KVStoreError
from .serializers import _TAG, Serializer, _json_hook, encode_json_text
from .store import MISSING, PersistenceStore, decode_stored

__all__ = ["iter_rows", "iter_records", "export_jsonl", "import_jsonl", "migrate", "Progress"]

Progress = Callable[[int], None]
BATCH = 1000
_READER = Serializer("json")  # reads json and msgpack blobs alike (the header says which)
_PLAIN_JSON = Serializer("json").serialize(None)[:3]  # the header of uncompressed JSON


def iter_rows(store: PersistenceStore, prefix: str = "", after: str | None = None,
              batch: int = BATCH) -> Iterator[list[tuple[str, Any, float | None]]]:
    """Pages of ``(key, blob, ttl)`` of the live keys with ``prefix`` after ``after``, sorted,
    ``batch`` keys per query (one query per page where the store can: SQLite, PostgreSQL)."""
    while True:
        rows = store._rows(prefix, after, batch)
        if not rows:
            return
        live = [row for row in rows if row[1] is not MISSING]  # deleted or expired meanwhile
        if live:
            yield live
        after = rows[-1][0]


def iter_records(store: PersistenceStore, prefix: str = "", *, raw: bool = False,
                 batch: int = BATCH) -> Iterator[tuple[str, Any, float | None]]:
    """``(key, value, ttl)`` for every live key; with ``raw=True`` the stored blob, not the value."""
    decode = store._decode
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


def export_jsonl(store: PersistenceStore, out: IO[str], prefix: str = "", *, raw: bool = False,
                 progress: Progress | None = None) -> int:
    """Write every live key with ``prefix`` to ``out``; returns how many.

    A value stored as plain JSON is written as its stored text, without decoding it and
    encoding it again (the store's JSON and the export's are the same tagged JSON).
    """
    count = 0
    decode = store._decode
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


def parse_line(line: str, where: str) -> tuple[str, Any, float | None, bool]:
    """``(key, value_or_blob, ttl, is_blob)`` from one JSON Lines record (one parse: the
    value's tagged JSON is decoded on the way)."""
    try:
        # The tag hook only where a tag can be (most values are plain JSON).
        record = json.loads(line, object_hook=_json_hook) if _TAG in line else json.loads(line)
        key = record["key"]
        ttl = record.get("ttl")
        if "blob" in record:
            return key, base64.b64decode(record["blob"], validate=True), ttl, True
        return key, record["value"], ttl, False
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptDataError(f"{where}: not a kvstore JSON Lines record ({exc})") from None


def import_jsonl(store: PersistenceStore | Callable[[str], PersistenceStore],
                 lines: Iterable[str], *, source: str = "input",
                 progress: Progress | None = None, batch: int = BATCH) -> int:
    """Write the records to ``store`` (or to ``store(key)``, a router) in batches, each batch
    atomic per store. Records whose TTL ran out are skipped. Returns how many were written."""
    route = store if not isinstance(store, PersistenceStore) else (lambda key: store)
    pending: dict[int, tuple[PersistenceStore, list[tuple[str, Any, float | None]]]] = {}
    count = 0

    def flush(target: PersistenceStore, ops: list[tuple[str, Any, float | None]]) -> None:
        nonlocal count
        target._put_rows(ops)
        count += len(ops)
        ops.clear()
        if progress is not None:
            progress(count)

    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        key, payload, ttl, is_blob = parse_line(line, f"{source}:{number}")
        target = route(key)
        target._check_key(key)
        if ttl is not None and ttl <= 0:
            continue  # expired in transit
        if is_blob:
            if target.serializer is None:  # a MemoryStore that holds objects
                payload = decode_stored(key, payload, _READER)
        else:
            payload = target._encode(key, payload)
        entry = pending.setdefault(id(target), (target, []))
        entry[1].append((key, payload, ttl))
        if len(entry[1]) >= batch:
            flush(*entry)
    for target, ops in pending.values():
        if ops:
            flush(target, ops)
    if progress is not None:
        progress(count)
    return count


def migrate(source: PersistenceStore, target: PersistenceStore, prefix: str = "", *,
            batch: int = BATCH, checkpoint: str | os.PathLike[str] | None = None,
            progress: Progress | None = None) -> int:
    """Copy every live key with ``prefix`` from ``source`` to ``target`` with its remaining TTL.

    Batches of ``batch`` keys; each batch is applied atomically on the target. With
    ``checkpoint``, the last copied key is recorded after each batch, and a rerun skips keys up
    to it (for sources that list keys in order: SQLite, PostgreSQL, files; for Redis a rerun
    simply copies again, which is harmless). Returns how many keys were copied.
    """
    ckpt = Path(checkpoint) if checkpoint is not None else None
    done_up_to = ckpt.read_text(encoding="utf-8") if ckpt is not None and ckpt.exists() else None
    same_bytes = source.serializer is not None and target.serializer is not None
    count = 0
    for rows in iter_rows(source, prefix, done_up_to or None, batch):
        ops = []
        for key, blob, ttl in rows:
            target._check_key(key)
            if not same_bytes:
                blob = target._encode(key, source._decode(key, blob))
            ops.append((key, blob, ttl))
        target._put_rows(ops)
        count += len(ops)
        if ckpt is not None:
            tmp = ckpt.with_name(ckpt.name + ".tmp")
            tmp.write_text(rows[-1][0], encoding="utf-8")
            os.replace(tmp, ckpt)
        if progress is not None:
            progress(count)
    if ckpt is not None and ckpt.exists():
        ckpt.unlink()
    return count
