"""``kvstore backup|restore|export|import|migrate``: moving data in and out of the stores."""

from __future__ import annotations

import argparse
import sys
from typing import IO, Any

from .common import (EXIT_OK, Usage, check_store, count_keys, progress_counter, records_note)

__all__ = ["cmd_backup", "cmd_restore", "cmd_export", "cmd_import", "cmd_migrate"]


def cmd_backup(pm: Any, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    with progress_counter("backup", err) as progress:
        path = pm.backup(args.dest, progress=progress, skip_unavailable=args.skip_unavailable)
    out.write(f"{path}\n")
    return EXIT_OK


def cmd_restore(pm: Any, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    with progress_counter("restore", err) as progress:
        counts = pm.restore(args.path, progress=progress)
    for name, count in counts.items():
        out.write(f"{name:9} {count_keys(count):>12} restored\n")
    return EXIT_OK


def cmd_migrate(pm: Any, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from ..transfer import migrate

    source = check_store(pm, args.source, "--from")
    target = check_store(pm, args.target, "--to")
    if source == target:
        raise Usage("--from and --to name the same store")
    if args.batch < 1:
        raise Usage("--batch must be at least 1")
    copied: dict[str, int] = {}
    with progress_counter(f"migrate {source} -> {target}", err) as progress:
        count = migrate(pm.stores[source], pm.stores[target], args.prefix,
                        batch=args.batch, checkpoint=args.checkpoint, progress=progress,
                        logs=not args.no_logs, counts=copied)
    out.write(f"{count_keys(count)}{records_note(copied)} copied from {source} to {target}\n")
    return EXIT_OK


def cmd_export(pm: Any, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from ..transfer import export_jsonl, export_logs

    prefix = args.prefix
    names = [check_store(pm, args.store)] if args.store else list(pm.stores)
    if args.category:
        prefix = f"{args.category}:{prefix}"
        if not args.store:
            names = [pm.route(prefix + "x").store]
    target = open(args.output, "w", encoding="utf-8") if args.output else out
    total, records = 0, 0
    try:
        with progress_counter("export", err) as progress:
            for name in names:
                base = total
                total += export_jsonl(pm.stores[name], target, prefix,
                                      progress=lambda n: progress(base + n))
                if not args.no_logs:
                    records += export_logs(pm.stores[name], target, prefix)[1]
    finally:
        if args.output:
            target.close()
    if args.output:
        out.write(f"{count_keys(total)}{records_note({'log_records': records})} exported to "
                  f"{args.output}\n")
    return EXIT_OK


def cmd_import(pm: Any, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from ..transfer import import_jsonl

    store = check_store(pm, args.store)
    router = pm.stores[store] if store else (lambda key: pm.stores[pm.route(key).store])
    try:
        source = sys.stdin if args.path == "-" else open(args.path, encoding="utf-8")
    except OSError as exc:
        raise Usage(f"import: cannot read {args.path}: {exc.strerror or exc}") from None
    counts: dict[str, int] = {}
    try:
        with progress_counter("import", err) as progress:
            count = import_jsonl(router, source, source=args.path, progress=progress,
                                 counts=counts)
    finally:
        if source is not sys.stdin:
            source.close()
    out.write(f"{count_keys(count)}{records_note(counts)} imported\n")
    return EXIT_OK


