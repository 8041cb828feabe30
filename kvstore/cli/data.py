"""``kvstore get|set|delete|keys|route|stats|health|config check``: keys and the stores.

``get``/``delete`` without ``--store`` agree with ``keys`` (which lists every store's keys): a
key is looked up where it routes, then in the other stores, so a key that ``keys`` lists,
``get`` finds, and ``delete`` removes it from every store that holds it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import IO, Any

from ..errors import KVStoreError, StoreUnavailableError
from .common import (EXIT_NOT_FOUND, EXIT_OK, EXIT_STORE, Usage, check_store, count_keys,
                     json_out, refuse_memory)

__all__ = ["cmd_get", "cmd_set", "cmd_delete", "cmd_keys", "cmd_route", "cmd_stats",
           "cmd_health", "cmd_config_check", "search_order"]


def search_order(pm: Any, key: str, store: str | None) -> list[str]:
    """``[store]``; without one, where ``key`` routes first, then the others in ``pm.stores``
    order."""
    if store is not None:
        return [store]
    routed = pm.route(key).store
    return [routed] + [name for name in pm.stores if name != routed]


def _unreachable(err: IO[str], key: str, failed: list[tuple[str, Exception]]) -> int:
    for name, exc in failed:
        err.write(f"kvstore: {key!r}: the {name} store could not be read: {exc}\n")
    return EXIT_STORE


def cmd_get(pm: Any, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from ..store import MISSING

    store = check_store(pm, args.store)
    failed: list[tuple[str, Exception]] = []
    value: Any = MISSING
    for name in search_order(pm, args.key, store):
        try:
            value = pm.load(args.key, MISSING, store=name)
        except StoreUnavailableError as exc:
            if store is not None:
                raise
            failed.append((name, exc))  # another store may still hold it
            continue
        if value is not MISSING:
            if store is None and name != pm.route(args.key).store:
                err.write(f"kvstore: {args.key!r} is in the {name} store "
                          f"(it routes to {pm.route(args.key).store})\n")
            break
    if value is MISSING:
        if failed:  # not found where it could be read: that is no "not found"
            return _unreachable(err, args.key, failed)
        err.write(f"kvstore: key {args.key!r} not found\n")
        return EXIT_NOT_FOUND
    if args.raw and isinstance(value, (bytes, str)):
        data = value if isinstance(value, bytes) else value.encode("utf-8")
        out.flush()
        binary = getattr(out, "buffer", None)
        if binary is not None:
            binary.write(data)
            binary.flush()
        else:  # a text stream without bytes (tests): the text, as UTF-8 would read
            out.write(data.decode("utf-8", "surrogateescape"))
        return EXIT_OK
    out.write(json_out(value) + "\n")
    return EXIT_OK


def _value_bytes(args: argparse.Namespace) -> bytes:
    """The input named by VALUE ``-`` (stdin) or ``--file PATH``, read as bytes."""
    if args.file is not None:
        if args.value is not None:
            raise Usage("give VALUE or --file, not both")
        try:
            with open(os.path.expanduser(args.file), "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise Usage(f"--file {args.file}: cannot read: {exc.strerror or exc}") from None
    if args.value == "-":
        return sys.stdin.buffer.read()
    if args.value is None:
        raise Usage("set needs VALUE, - (stdin) or --file PATH")
    return os.fsencode(args.value)


def cmd_set(pm: Any, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from ..serializers import decode_json_text
    from ..store import parse_ttl

    data = _value_bytes(args)
    if args.bytes:
        value: Any = data
    else:
        try:  # the same rule for every source: the text is JSON (UTF-8, -16 or -32)
            value = decode_json_text(data)
        except ValueError:
            where = ("VALUE" if args.file is None and args.value != "-"
                     else f"--file {args.file}" if args.file is not None else "stdin")
            hint = "" if where == "VALUE" else "; --bytes stores the bytes as they are"
            raise Usage(f"{where} for {args.key!r} is not JSON (quote text: '\"hello\"'"
                        f"{hint})") from None
    ttl = None if args.ttl is None else parse_ttl(args.ttl, "--ttl")
    store = check_store(pm, args.store)
    refuse_memory(pm, args.key, store, "value")
    pm.save(args.key, value, ttl=ttl, store=store)
    return EXIT_OK


def cmd_delete(pm: Any, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    store = check_store(pm, args.store)
    deleted: list[str] = []
    failed: list[tuple[str, Exception]] = []
    for name in search_order(pm, args.key, store):
        try:
            if pm.delete(args.key, store=name):
                deleted.append(name)
        except StoreUnavailableError as exc:
            if store is not None:
                raise
            failed.append((name, exc))
    if store is None and deleted and deleted != [pm.route(args.key).store]:
        err.write(f"kvstore: {args.key!r} deleted from {', '.join(deleted)}\n")
    if failed:  # it may still be in a store that could not be reached
        return _unreachable(err, args.key, failed)
    if not deleted:
        err.write(f"kvstore: key {args.key!r} not found\n")
        return EXIT_NOT_FOUND
    return EXIT_OK


def cmd_keys(pm: Any, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    for key in sorted(pm.keys(args.prefix, store=check_store(pm, args.store))):
        out.write(key + "\n")
    return EXIT_OK


def cmd_route(pm: Any, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    out.write(str(pm.route(args.key)) + "\n")
    return EXIT_OK


def cmd_stats(pm: Any, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    failed = 0
    for name, store in pm.stores.items():
        try:
            what = count_keys(sum(1 for _ in store.keys()))
        except KVStoreError as exc:
            failed += 1
            what = f"unavailable: {exc}"
        out.write(f"{name:9} {what:>12}  {store!r}\n")
    return EXIT_STORE if failed else EXIT_OK  # every store was reported; the code says one failed


def cmd_health(pm: Any, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    report = pm.health(timeout=args.timeout)
    ready = all(h.ok for h in report.values() if h.required)
    if args.json:
        out.write(json.dumps({"ok": ready, "stores": {name: h.as_dict()
                                                       for name, h in report.items()}}) + "\n")
    else:
        for name, h in report.items():
            note = "" if h.required else "  (not required: redis.fallback serves it)"
            error = f"  {h.error}" if h.error else ""
            out.write(f"{name:9} {h.status:4} {h.seconds * 1000:9.1f} ms{note}{error}\n")
    return EXIT_OK if ready else EXIT_STORE


def cmd_config_check(args: argparse.Namespace, out: IO[str]) -> int:
    import dataclasses

    from ..config import Config, load_config, locations, mask_secrets

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
