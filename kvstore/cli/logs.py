"""``kvstore log list|read|tail|append|delete``: append-only logs from the shell."""

from __future__ import annotations

import argparse
import sys
import time
from typing import IO, Any

from .common import EXIT_NOT_FOUND, EXIT_OK, Usage, check_store, refuse_memory

__all__ = ["cmd_log"]


def _record_line(seq: int, record: Any) -> str:
    from ..serializers import encode_json_text

    return encode_json_text({"seq": seq, "record": record}) + "\n"


def cmd_log(pm: Any, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    store = check_store(pm, args.store)
    sub = args.log_command
    if sub == "list":
        for name in pm.logs(args.prefix, store=store):
            out.write(name + "\n")
        return EXIT_OK
    log = pm.log(args.name, store=store)
    if sub == "append":
        from ..serializers import decode_json_text

        text = sys.stdin.read() if args.record == "-" else args.record
        try:
            record = decode_json_text(text)
        except ValueError:
            raise Usage(f"RECORD for log {args.name!r} is not JSON "
                         "(quote text: '\"hello\"')") from None
        refuse_memory(pm, args.name, store, "record")
        out.write(f"{log.append(record)}\n")
    elif sub == "delete":
        if not log.delete():
            err.write(f"kvstore: log {args.name!r} not found\n")
            return EXIT_NOT_FOUND
    elif sub == "read":
        if args.after < 0 or (args.limit is not None and args.limit < 0):
            raise Usage("--after and --limit must not be negative")
        for seq, record in log.read(args.after, args.limit, reverse=args.reverse):
            out.write(_record_line(seq, record))
    else:  # tail
        if args.n < 1:
            raise Usage("-n must be at least 1")
        rows = log.tail(args.n)
        for seq, record in rows:
            out.write(_record_line(seq, record))
        if args.follow:
            return _follow(log, rows[-1][0] if rows else 0, out)
    return EXIT_OK


def _follow(log: Any, seq: int, out: IO[str]) -> int:
    """Print the records appended after ``seq`` as they come, polling every 0.5 s, until Ctrl-C."""
    try:
        while True:
            out.flush()
            time.sleep(0.5)
            for seq, record in log.read(seq):
                out.write(_record_line(seq, record))
    except KeyboardInterrupt:
        out.flush()
        return EXIT_OK
