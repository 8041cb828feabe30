"""The ``kvstore`` command: look inside and operate the stores without writing Python.

Exit codes: 0 ok, 1 not found, 2 usage or configuration error, 3 a store failed (unavailable,
damaged data or backup; ``health``: a required store is down). Errors are one line on stderr,
never a traceback.

The parts: :mod:`.parser` (the arguments), :mod:`.data` (keys, stats, health, config check),
:mod:`.logs` (``kvstore log ...``), :mod:`.transfer` (backup, restore, export, import, migrate).
"""

from __future__ import annotations

import argparse
import sys
from typing import IO, Any, Callable, Sequence

from ..errors import ConfigError, KVStoreError
from . import data, logs, transfer
from .common import EXIT_NOT_FOUND, EXIT_OK, EXIT_STORE, EXIT_USAGE, Usage, open_manager
from .parser import build_parser

__all__ = ["main", "EXIT_OK", "EXIT_NOT_FOUND", "EXIT_USAGE", "EXIT_STORE"]

#: Commands run on an open manager: ``fn(pm, args, out, err) -> exit code``.
COMMANDS: dict[str, Callable[[Any, argparse.Namespace, IO[str], IO[str]], int]] = {
    "get": data.cmd_get, "set": data.cmd_set, "delete": data.cmd_delete, "keys": data.cmd_keys,
    "route": data.cmd_route, "stats": data.cmd_stats, "health": data.cmd_health,
    "log": logs.cmd_log, "backup": transfer.cmd_backup, "restore": transfer.cmd_restore,
    "export": transfer.cmd_export, "import": transfer.cmd_import,
    "migrate": transfer.cmd_migrate,
}


def _run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if args.command == "demo":
        from ..demo import run_demo

        return run_demo(lambda line: out.write(line + "\n"))
    if args.command == "config":
        return data.cmd_config_check(args, out)
    with open_manager(args) as pm:
        return COMMANDS[args.command](pm, args, out, err)


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None,
         err: IO[str] | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        return _run(args, out, err)
    except (Usage, ConfigError) as exc:
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
