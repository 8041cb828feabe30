"""Shared benchmark helpers: time callables side by side, print ops/s and ratios, save JSON.

Ratio convention, printed in every table: ``ratio = peer ops/s / kvstore ops/s``, i.e. how many
times slower kvstore is than the peer (1.00 = as fast; 0.80 = kvstore is faster).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).resolve().parent / "results"


def server_setting(variable: str, default: str | None = None) -> str | None:
    """A ``KVSTORE_TEST_*`` server variable; empty or blank means unset, so ``default`` applies."""
    return os.environ.get(variable, "").strip() or default


@dataclass
class Row:
    group: str          # e.g. "sqlite"
    op: str             # e.g. "get"
    impl: str           # e.g. "SQLiteStore" or "raw sqlite3"
    ops_per_s: float
    ours: bool


@dataclass
class Target:
    group: str
    op: str
    peer: str           # the implementation compared against
    at_least: float     # kvstore ops/s >= at_least x the peer's


@dataclass
class Report:
    name: str
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    def add(self, group: str, op: str, impl: str, ops: float, ours: bool) -> None:
        self.rows.append(Row(group, op, impl, ops, ours))

    def target(self, group: str, op: str, peer: str, at_least: float) -> None:
        """Print, after the table, whether kvstore runs ``op`` at ``at_least`` x ``peer``."""
        self.targets.append(Target(group, op, peer, at_least))

    def verdicts(self) -> list[str]:
        lines = []
        for t in self.targets:
            rows = self._grouped().get((t.group, t.op), [])
            ours = next((r for r in rows if r.ours), None)
            peer = next((r for r in rows if r.impl == t.peer), None)
            if ours is None or peer is None:
                continue
            speed = ours.ops_per_s / peer.ops_per_s
            lines.append(f"{t.group} {t.op}: kvstore at {speed:.2f}x {t.peer} "
                         f"(target >= {t.at_least:.2f}x): {'met' if speed >= t.at_least else 'MISSED'}")
        return lines

    def print(self) -> None:
        print(f"\n{self.name} — ratio = peer ops/s / kvstore ops/s (>1: kvstore slower)")
        print(f"{'group':8} {'op':16} {'implementation':24} {'ops/s':>12} {'ratio':>7}")
        for (group, op), rows in self._grouped().items():
            ours = next((r for r in rows if r.ours), None)
            for r in rows:
                ratio = "" if r.ours or ours is None else f"{r.ops_per_s / ours.ops_per_s:7.2f}"
                print(f"{group:8} {op:16} {r.impl:24} {r.ops_per_s:12,.0f} {ratio:>7}")
        if self.targets:
            print("\ntargets (kvstore ops/s over the peer's):")
            for line in self.verdicts():
                print("  " + line)

    def _grouped(self) -> dict[tuple[str, str], list[Row]]:
        out: dict[tuple[str, str], list[Row]] = {}
        for r in self.rows:
            out.setdefault((r.group, r.op), []).append(r)
        return out

    def save(self, path: str | None) -> None:
        if not path:
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, timeout=5, cwd=Path(__file__).parent).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = "unknown"
        data = {"benchmark": self.name, "commit": commit, "python": sys.version.split()[0],
                "machine": platform.platform(), "date": dt.datetime.now(dt.timezone.utc).isoformat(),
                "ratio": "peer ops/s / kvstore ops/s", "rows": [asdict(r) for r in self.rows],
                "targets": self.verdicts()}
        target.write_text(json.dumps(data, indent=2) + "\n")
        print(f"\nresults written to {target}")


def measure(fn: Callable[[], None], ops: int, repeats: int = 3) -> float:
    """Best-of-``repeats`` ops/s for ``fn``, which performs ``ops`` operations per call."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return ops / best


def measure_pair(ours: Callable[[], None], peer: Callable[[], None], ops: int,
                 rounds: int = 3) -> tuple[float, float]:
    """Best ops/s of ``ours`` and of ``peer``, measured in alternating rounds, so a slow
    spell of the machine (or of a server) falls on both sides of the ratio."""
    best_ours = best_peer = 0.0
    for _ in range(rounds):
        best_ours = max(best_ours, measure(ours, ops, repeats=2))
        best_peer = max(best_peer, measure(peer, ops, repeats=2))
    return best_ours, best_peer


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="fewer keys: a smoke run")
    p.add_argument("--json", metavar="PATH", help="write the results (with the commit) to PATH")
    return p


VALUE = {"user": "u123", "n": 42, "tags": ["a", "b"]}
