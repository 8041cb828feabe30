"""The ``kvstore`` command: look inside and operate the stores without writing Python.

Exit codes: 0 ok, 1 not found, 2 usage or configuration error, 3 a store failed (unavailable,
damaged data or backup). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from typing import IO, Any, Callable, Iterator, Sequence

from .errors import ConfigError, KVStoreError

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_STORE = 0, 1, 2, 3


class _Usage(Exception):
    """A usage mistake found after parsing (exit 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvstore", description="Look inside and operate kvstore's stores.",
        epilog="Exit codes: 0 ok, 1 not found, 2 usage or config error, 3 store error.")
    parser.add_argument("--config", metavar="PATH", default=os.environ.get("KVSTORE_CONFIG"),
                        help="YAML configuration (default: $KVSTORE_CONFIG, else the embedded "
                             "default with no server)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("get", help="print a key's value as JSON")
    p.add_argument("key")
    p.add_argument("--store", help="read this store instead of the routed one")

    p = sub.add_parser("set", help="store a value given as JSON")
    p.add_argument("key")
    p.add_argument("value", help='JSON: 42, "text", {"a": 1}')
    p.add_argument("--ttl", help="seconds or a duration such as 90s, 15m, 1h, 7d")
    p.add_argument("--store")

    p = sub.add_parser("delete", help="delete a key")
    p.add_argument("key")
    p.add_argument("--store")

    p = sub.add_parser("keys", help="list live keys")
    p.add_argument("prefix", nargs="?", default="")
    p.add_argument("--store")

    p = sub.add_parser("route", help="which store and TTL a key goes to, and why")
    p.add_argument("key")

    sub.add_parser("stats", help="keys per store, and where each store keeps them")

    p = sub.add_parser("config", help="configuration commands")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    csub.add_parser("check", help="validate and print the resolved configuration (secrets masked)")

    p = sub.add_parser("backup", help="write a backup of every durable store")
    p.add_argument("--dest", help="folder to create the backup in (default: the configured one)")
    p.add_argument("--skip-unavailable", action="store_true",
                   help="back up the other stores when one is unavailable (default: fail)")

    p = sub.add_parser("restore", help="replace the stores' contents with a backup")
    p.add_argument("path")

    p = sub.add_parser("export", help="write keys (key, value, remaining ttl) and logs (log, "
                                      "seq, record) as JSON Lines")
    p.add_argument("--store", help="only this store (default: every store)")
    p.add_argument("--category", help="only this category's keys and logs (from its routed store)")
    p.add_argument("--prefix", default="", help="only keys and logs whose names start with this")
    p.add_argument("--no-logs", action="store_true", help="keys only, no log records")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")

    p = sub.add_parser("import", help="read JSON Lines written by export (keys and logs)")
    p.add_argument("path", help="file to read, or - for stdin")
    p.add_argument("--store", help="write every key and log to this store (default: route each)")

    p = sub.add_parser("migrate", help="copy keys from one store to another with their TTLs")
    p.add_argument("--from", dest="source", required=True)
    p.add_argument("--to", dest="target", required=True)
    p.add_argument("--prefix", default="")
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--checkpoint", help="file that records progress, so a rerun resumes")
    p.add_argument("--no-logs", action="store_true", help="keys only: leave the logs behind")

    sub.add_parser("demo", help="a short tour on the embedded default")
    _log_parser(sub)
    return parser


_LINES = 'one JSON line per record: {"seq": N, "record": RECORD} (jq: .record)'


def _log_parser(sub: Any) -> None:
    p = sub.add_parser("log", help="append-only logs: list, read, tail, append, delete")
    lsub = p.add_subparsers(dest="log_command", required=True, metavar="SUBCOMMAND")
    q = lsub.add_parser("list", help="log names, one per line")
    q.add_argument("prefix", nargs="?", default="")
    q.add_argument("--store")
    q = lsub.add_parser("read", help="read a log oldest first; " + _LINES, description=_LINES)
    q.add_argument("name")
    q.add_argument("--after", type=int, default=0, metavar="N", help="only records with seq > N")
    q.add_argument("--limit", type=int, metavar="N", help="at most N records")
    q.add_argument("--reverse", action="store_true", help="newest first")
    q.add_argument("--store")
    q = lsub.add_parser("tail", help="the last N records, oldest first; " + _LINES,
                        description=_LINES)
    q.add_argument("name")
    q.add_argument("-n", type=int, default=10, metavar="N", help="how many (default 10)")
    q.add_argument("-f", "--follow", action="store_true",
                   help="keep printing records as they are appended (Ctrl-C stops)")
    q.add_argument("--store")
    q = lsub.add_parser("append", help="append a record given as JSON; prints its seq")
    q.add_argument("name")
    q.add_argument("record", help='JSON: {"text": "hi"}, or - to read it from stdin')
    q.add_argument("--store")
    q = lsub.add_parser("delete", help="delete a whole log (exit 1 when it did not exist)")
    q.add_argument("name")
    q.add_argument("--store")


# -- progress ------------------------------------------------------------------------------------


@contextmanager
def _progress(label: str, stream: IO[str] | None = None) -> Iterator[Callable[[int], None]]:
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


# -- commands ------------------------------------------------------------------------------------


def _open(args: argparse.Namespace) -> Any:
    from .manager import PersistenceManager

    return PersistenceManager.from_yaml(args.config) if args.config else PersistenceManager()


def _check_store(pm: Any, name: str | None, option: str = "--store") -> str | None:
    if name is not None and name not in pm.stores:
        raise _Usage(f"{option} {name}: unknown store (known: {', '.join(pm.stores)})")
    return name


def _keys(n: int) -> str:
    return f"{n:,} key" + ("" if n == 1 else "s")


def _json_out(value: Any) -> str:
    from .serializers import encode_json_text

    return encode_json_text(value, indent=2)


def _cmd_config_check(args: argparse.Namespace, out: IO[str]) -> int:
    import dataclasses

    from .config import Config, load_config, locations, mask_secrets

    config = load_config(args.config) if args.config else Config()

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        return value

    data = plain(config)
    if data.get("pickle_secret"):
        data["pickle_secret"] = "***"
    source = args.config or "the embedded default"
    out.write(f"# {source}: OK\n")
    where = {name: None if value is None else str(value)
             for name, value in dataclasses.asdict(locations(config)).items()}
    out.write(mask_secrets(json.dumps({"persistence": data, "locations": where}, indent=2)) + "\n")
    return EXIT_OK


def _run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(lambda line: out.write(line + "\n"))
    if args.command == "config":
        return _cmd_config_check(args, out)

    with _open(args) as pm:
        cmd = args.command
        if cmd == "log":
            return _cmd_log(pm, args, out, err)
        if cmd == "get":
            from .store import MISSING

            value = pm.load(args.key, MISSING, store=_check_store(pm, args.store))
            if value is MISSING:
                err.write(f"kvstore: key {args.key!r} not found\n")
                return EXIT_NOT_FOUND
            out.write(_json_out(value) + "\n")
        elif cmd == "set":
            from .serializers import decode_json_text
            from .store import parse_ttl

            try:
                value = decode_json_text(args.value)
            except ValueError:
                raise _Usage(f"VALUE for {args.key!r} is not JSON (quote text: '\"hello\"')") from None
            ttl = None if args.ttl is None else parse_ttl(args.ttl, "--ttl")
            store = _check_store(pm, args.store)
            _refuse_memory(pm, args.key, store, "value")
            pm.save(args.key, value, ttl=ttl, store=store)
        elif cmd == "delete":
            if not pm.delete(args.key, store=_check_store(pm, args.store)):
                err.write(f"kvstore: key {args.key!r} not found\n")
                return EXIT_NOT_FOUND
        elif cmd == "keys":
            for key in sorted(pm.keys(args.prefix, store=_check_store(pm, args.store))):
                out.write(key + "\n")
        elif cmd == "route":
            out.write(str(pm.route(args.key)) + "\n")
        elif cmd == "stats":
            failed = 0
            for name, store in pm.stores.items():
                try:
                    what = _keys(sum(1 for _ in store.keys()))
                except KVStoreError as exc:
                    failed += 1
                    what = f"unavailable: {exc}"
                out.write(f"{name:9} {what:>12}  {store!r}\n")
            if failed:  # every store was reported; the exit code says one failed
                return EXIT_STORE
        elif cmd == "backup":
            with _progress("backup", err) as progress:
                path = pm.backup(args.dest, progress=progress,
                                 skip_unavailable=args.skip_unavailable)
            out.write(f"{path}\n")
        elif cmd == "restore":
            with _progress("restore", err) as progress:
                counts = pm.restore(args.path, progress=progress)
            for name, count in counts.items():
                out.write(f"{name:9} {_keys(count):>12} restored\n")
        elif cmd == "export":
            return _cmd_export(pm, args, out, err)
        elif cmd == "import":
            return _cmd_import(pm, args, out, err)
        elif cmd == "migrate":
            from .transfer import migrate

            source = _check_store(pm, args.source, "--from")
            target = _check_store(pm, args.target, "--to")
            if source == target:
                raise _Usage("--from and --to name the same store")
            if args.batch < 1:
                raise _Usage("--batch must be at least 1")
            copied: dict[str, int] = {}
            with _progress(f"migrate {source} -> {target}", err) as progress:
                count = migrate(pm.stores[source], pm.stores[target], args.prefix,
                                batch=args.batch, checkpoint=args.checkpoint, progress=progress,
                                logs=not args.no_logs, counts=copied)
            out.write(f"{_keys(count)}{_records(copied)} copied from {source} to {target}\n")
    return EXIT_OK


def _refuse_memory(pm: Any, name: str, store: str | None, what: str) -> None:
    if (store or pm.route(name).store) == "memory" and pm.config.memory.snapshot is None:
        raise _Usage(f"{name!r} routes to the memory store, which lives in one process: "
                     f"the {what} would be gone when this command exits (configure "
                     "memory.snapshot to keep it, or pass --store)")


def _record_line(seq: int, record: Any) -> str:
    from .serializers import encode_json_text

    return encode_json_text({"seq": seq, "record": record}) + "\n"


def _cmd_log(pm: Any, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    store = _check_store(pm, args.store)
    sub = args.log_command
    if sub == "list":
        for name in pm.logs(args.prefix, store=store):
            out.write(name + "\n")
        return EXIT_OK
    log = pm.log(args.name, store=store)
    if sub == "append":
        from .serializers import decode_json_text

        text = sys.stdin.read() if args.record == "-" else args.record
        try:
            record = decode_json_text(text)
        except ValueError:
            raise _Usage(f"RECORD for log {args.name!r} is not JSON "
                         "(quote text: '\"hello\"')") from None
        _refuse_memory(pm, args.name, store, "record")
        out.write(f"{log.append(record)}\n")
    elif sub == "delete":
        if not log.delete():
            err.write(f"kvstore: log {args.name!r} not found\n")
            return EXIT_NOT_FOUND
    elif sub == "read":
        if args.after < 0 or (args.limit is not None and args.limit < 0):
            raise _Usage("--after and --limit must not be negative")
        for seq, record in log.read(args.after, args.limit, reverse=args.reverse):
            out.write(_record_line(seq, record))
    else:  # tail
        if args.n < 1:
            raise _Usage("-n must be at least 1")
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


def _records(counts: dict[str, int]) -> str:
    n = counts.get("log_records", 0)
    return f" and {n} log record{'' if n == 1 else 's'}" if n else ""


def _cmd_export(pm: Any, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from .transfer import export_jsonl, export_logs

    prefix = args.prefix
    names = [_check_store(pm, args.store)] if args.store else list(pm.stores)
    if args.category:
        prefix = f"{args.category}:{prefix}"
        if not args.store:
            names = [pm.route(prefix + "x").store]
    target = open(args.output, "w", encoding="utf-8") if args.output else out
    total, records = 0, 0
    try:
        with _progress("export", err) as progress:
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
        out.write(f"{_keys(total)}{_records({'log_records': records})} exported to "
                  f"{args.output}\n")
    return EXIT_OK


def _cmd_import(pm: Any, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from .transfer import import_jsonl

    store = _check_store(pm, args.store)
    router = pm.stores[store] if store else (lambda key: pm.stores[pm.route(key).store])
    try:
        source = sys.stdin if args.path == "-" else open(args.path, encoding="utf-8")
    except OSError as exc:
        raise _Usage(f"import: cannot read {args.path}: {exc.strerror or exc}") from None
    counts: dict[str, int] = {}
    try:
        with _progress("import", err) as progress:
            count = import_jsonl(router, source, source=args.path, progress=progress,
                                 counts=counts)
    finally:
        if source is not sys.stdin:
            source.close()
    out.write(f"{_keys(count)}{_records(counts)} imported\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None,
         err: IO[str] | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = _parser().parse_args(argv)
    try:
        return _run(args, out, err)
    except (_Usage, ConfigError) as exc:
        err.write(f"kvstore: {exc}\n")
        return EXIT_USAGE
    except ValueError as exc:  # InvalidKeyError / InvalidTTLError are ValueErrors too
        err.write(f"kvstore: {exc}\n")
        return EXIT_USAGE
    except KVStoreError as exc:
        err.write(f"kvstore: {exc}\n")
        return EXIT_STORE
    except OSError as exc:
        err.write(f"kvstore: {exc}\n")
        return EXIT_STORE
    except KeyboardInterrupt:
        err.write("kvstore: interrupted\n")
        return 130
