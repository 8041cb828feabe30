"""What the ``kvstore`` command's parts share: exit codes, opening the manager, checks, output."""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from typing import IO, Any, Callable, Iterator

__all__ = ["EXIT_OK", "EXIT_NOT_FOUND", "EXIT_USAGE", "EXIT_STORE", "Usage", "open_manager",
           "check_store", "count_keys", "json_out", "progress_counter", "refuse_memory", "records_note"]

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_STORE = 0, 1, 2, 3


class Usage(Exception):
    """A usage mistake found after parsing (exit 2)."""


def open_manager(args: argparse.Namespace) -> Any:
    from ..manager import PersistenceManager

    return PersistenceManager.from_yaml(args.config) if args.config else PersistenceManager()


def check_store(pm: Any, name: str | None, option: str = "--store") -> str | None:
    if name is not None and name not in pm.stores:
        raise Usage(f"{option} {name}: unknown store (known: {', '.join(pm.stores)})")
    return name


def count_keys(n: int) -> str:
    return f"{n:,} key" + ("" if n == 1 else "s")


def records_note(counts: dict[str, int]) -> str:
    n = counts.get("log_records", 0)
    return f" and {n} log record{'' if n == 1 else 's'}" if n else ""


def json_out(value: Any) -> str:
    from ..serializers import encode_json_text

    return encode_json_text(value, indent=2)


def refuse_memory(pm: Any, name: str, store: str | None, what: str) -> None:
    if (store or pm.route(name).store) == "memory" and pm.config.memory.snapshot is None:
        raise Usage(f"{name!r} routes to the memory store, which lives in one process: "
                    f"the {what} would be gone when this command exits (configure "
                    "memory.snapshot to keep it, or pass --store)")


@contextmanager
def progress_counter(label: str, stream: IO[str] | None = None) -> Iterator[Callable[[int], None]]:
    """A one-line progress counter with a rate on a terminal; silent when not a terminal."""
    out = stream or sys.stderr
    tty = out.isatty()
    start = time.monotonic()
    last = [0.0, 0]

    def update(count: int) -> None:
        last[1] = count
        now = time.monotonic()
        if tty and now - last[0] >= 0.1:
            last[0] = now
            rate = count / max(now - start, 1e-9)
            out.write(f"\r{label}: {count:,} keys ({rate:,.0f}/s)")
            out.flush()

    yield update
    if tty:
        elapsed = time.monotonic() - start
        out.write(f"\r{label}: {last[1]:,} keys in {elapsed:.1f}s\n")
        out.flush()
