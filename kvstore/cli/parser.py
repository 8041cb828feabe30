"""The ``kvstore`` command's arguments."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .. import __version__

__all__ = ["build_parser"]

_FINDS = ("Without --store, the key is looked up where it routes, then in every other store "
          "(as `kvstore keys` lists every store's keys): get prints the first found, delete "
          "deletes it from every store that holds it.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvstore", description="Look inside and operate kvstore's stores.",
        epilog="Exit codes: 0 ok, 1 not found, 2 usage or config error, 3 store error.")
    parser.add_argument("--config", metavar="PATH", default=os.environ.get("KVSTORE_CONFIG"),
                        help="YAML configuration (default: $KVSTORE_CONFIG, else the embedded "
                             "default with no server)")
    parser.add_argument("--version", action="version", version=f"kvstore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("get", help="print a key's value as JSON", description=_FINDS)
    p.add_argument("key")
    p.add_argument("--store", help="read only this store")
    p.add_argument("--raw", action="store_true",
                   help="write a text or bytes value as it is, not as JSON (binary-safe)")

    p = sub.add_parser("set", help="store a value given as JSON (or read from stdin or a file)")
    p.add_argument("key")
    p.add_argument("value", nargs="?",
                   help='JSON: 42, "text", {"a": 1}; - reads the JSON from stdin')
    p.add_argument("--file", metavar="PATH", help="read the value from this file instead")
    p.add_argument("--bytes", action="store_true",
                   help="store the input's bytes as they are (a bytes value), not as JSON")
    p.add_argument("--ttl", help="seconds or a duration such as 90s, 15m, 1h, 7d")
    p.add_argument("--store")

    p = sub.add_parser("delete", help="delete a key", description=_FINDS)
    p.add_argument("key")
    p.add_argument("--store", help="delete from this store only")

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
    _health_parser(sub)
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


def _health_parser(sub: Any) -> None:
    p = sub.add_parser("health", help="each store's status and round trip; exit 3 when a "
                                      "required store is down",
                       description="One line per store: ok or down, the round trip, the error. "
                                   "Every store is required except the cache when "
                                   "redis.fallback serves it during an outage.")
    p.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    p.add_argument("--timeout", type=float, default=2.0, metavar="SECONDS",
                   help="wait at most this long for the stores' answers (default 2)")
