"""FileStore's logs: one JSON Lines file per log, ``{"seq": n, "record": ...}`` per line.

A person can ``tail`` and ``jq`` the file. Damage is confined to the line it hits:

- A last line without its newline (a writer killed mid-append, a torn tail after a power cut)
  is never read as a record, and the next append cuts it off first.
- A complete line that does not decode (bit rot, a bad hand edit) keeps its place in the
  numbering: it holds the number after the line before it. A read raises
  :class:`~kvstore.CorruptDataError` naming the log and the line number only when it reaches
  that line, that is when the line could hold a record the read asks for (``seq > after``);
  records before it read normally, and a read with ``after`` at or past its number skips it.
- Appends go on after any damage: the next number is one past the number the last line holds
  (damaged or not), so a number a reader has seen is never given to another record.
"""

from __future__ import annotations

import json
import os
import re
from typing import IO, Any, Iterator

from ...errors import CorruptDataError
from ...serializers import decode_json_text

__all__ = ["tail", "read", "read_backwards", "line", "append"]

# kvstore's own lines start exactly so: a line a read only skips needs no full decode.
_SEQ_HEAD = re.compile(rb'\{"seq":(\d+),"record":')


def line(seq: int, blob: str) -> bytes:
    """The bytes appended for record ``seq`` (``blob``: its JSON text)."""
    return f'{{"seq":{seq},"record":{blob}}}\n'.encode()


def _seq_of(raw: bytes) -> int | None:
    try:
        entry = json.loads(raw)
        return int(entry["seq"])
    except (ValueError, KeyError, TypeError, IndexError, RecursionError):
        return None


def _complete_lines_backwards(fd: int) -> Iterator[tuple[int, bytes]]:
    """``(offset just past its newline, line)`` of every complete line, the last first. Reads a
    block at a time from the end (usually a single 4 KB read)."""
    pos = os.fstat(fd).st_size
    buf, step = b"", 4096
    while True:  # find the newline that ends the last complete line
        nl = buf.rfind(b"\n")
        if nl >= 0:
            buf = buf[:nl + 1]
            break
        if pos == 0:
            return
        step = min(pos, step * 2)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
    while buf:  # buf = file[pos:end of the current line], ending in its newline
        start = buf.rfind(b"\n", 0, len(buf) - 1)
        if start < 0 and pos > 0:
            step = min(pos, step * 2)
            pos -= step
            buf = os.pread(fd, step, pos) + buf
            continue
        yield pos + len(buf), buf[start + 1:-1]
        buf = buf[:start + 1]


def tail(fd: int) -> tuple[int, int]:
    """``(end of the last complete line, the number it holds)``; ``(0, 0)`` for a log with no
    complete line. A damaged last line holds one more than the line before it."""
    end, damaged = -1, 0
    for stop, raw in _complete_lines_backwards(fd):
        if end < 0:
            end = stop
        seq = _seq_of(raw)
        if seq is not None:
            return end, seq + damaged
        damaged += 1
    return max(end, 0), damaged


def read(fh: IO[bytes], after: int, limit: int | None, what: str) -> list[tuple[int, Any]]:
    """``(seq, record)`` with ``seq > after``, at most ``limit``, from an open log file.
    ``what`` names the log in the error a damaged line raises."""
    out: list[tuple[int, Any]] = []
    previous = 0
    skipping = after > 0
    for number, raw in enumerate(fh, 1):
        if not raw.endswith(b"\n"):
            break  # torn by a crash mid-append: not a record
        if skipping:
            head = _SEQ_HEAD.match(raw)
            if head is not None:
                seq = int(head.group(1))
                if seq <= after:
                    previous = seq  # skipped: no need to decode the record
                    continue
                skipping = False
        try:
            entry = decode_json_text(raw)
            seq, record = int(entry["seq"]), entry["record"]
        except (ValueError, KeyError, TypeError, IndexError, RecursionError) as exc:
            previous += 1  # a damaged line holds the next number
            if previous > after:
                raise CorruptDataError(
                    f"{what}: line {number} is damaged ({raw[:60]!r}); the records before it "
                    f"read normally and read(after={previous}) reads past it; repair or remove "
                    "the line by hand") from exc
            continue
        previous = seq
        if seq > after:
            out.append((seq, record))
            if limit is not None and len(out) >= limit:
                break
    return out


def read_backwards(fd: int, after: int, limit: int | None) -> list[tuple[int, Any]] | None:
    """``(seq, record)`` with ``seq > after``, newest first, at most ``limit``, read from the
    end of the open log ``fd`` a block at a time (then closed). None when a damaged line is met:
    only a forward read knows its number (the caller reads forwards, which raises as it should)."""
    out: list[tuple[int, Any]] = []
    try:
        for _, raw in _complete_lines_backwards(fd):
            if limit is not None and len(out) >= limit:
                break
            try:
                entry = decode_json_text(raw)
                seq, record = int(entry["seq"]), entry["record"]
            except (ValueError, KeyError, TypeError, IndexError, RecursionError):
                return None
            if seq <= after:
                break
            out.append((seq, record))
    finally:
        os.close(fd)
    return out


def append(fd: int, blob: str, fsync: bool) -> int:
    """Append the record ``blob`` to the log file open on ``fd`` (under the store's lock), a
    torn last line cut off first; returns the record's number."""
    end, last = tail(fd)
    if os.fstat(fd).st_size != end:  # a torn last line: cut it off
        os.ftruncate(fd, end)
    seq = last + 1
    view = memoryview(line(seq, blob))
    offset = end
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
    if fsync:
        os.fsync(fd)
    return seq
