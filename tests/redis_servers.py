"""Private redis-server processes for tests: a single server to kill, or a 3-node Cluster.

Each is started on free loopback ports with ``subprocess.Popen`` and stopped by its own pid;
nothing else on the machine is touched.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HAVE_REDIS_SERVER = shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A free loopback port below 55535 whose cluster-bus port (+10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free loopback port pair found")


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One private redis-server; ``kill()`` and ``start()`` again on the same port."""

    folder: Path
    port: int = field(default_factory=free_port)
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(self.folder),
             "--logfile", str(self.folder / f"redis-{self.port}.log"), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM (after SIGCONT: a server a test stopped with SIGSTOP takes it only once
        resumed), SIGKILL if it does not end within 10 s."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class RedisCluster:
    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_cluster(folder: Path, size: int = 3) -> RedisCluster:
    """Start ``size`` masters with cluster mode on, join them, wait for cluster_state:ok."""
    nodes = []
    try:
        for i in range(size):
            port = free_port()
            node_dir = folder / f"node-{i}"
            nodes.append(RedisServer(node_dir, port, extra=(
                "--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"),
                # Long enough that a busy 2-core machine stalling a node never gets it marked
                # as failed (the cluster then answers "The cluster is down"); no test fails over.
                "--cluster-node-timeout", "30000")).start())
        subprocess.run(["redis-cli", "--cluster", "create",
                        *[f"127.0.0.1:{n.port}" for n in nodes], "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while True:  # every node must see the whole cluster, not just the first one
            infos = [subprocess.run(["redis-cli", "-p", str(n.port), "cluster", "info"],
                                    capture_output=True, text=True, timeout=10).stdout
                     for n in nodes]
            if all("cluster_state:ok" in info and f"cluster_known_nodes:{size}" in info
                   and "cluster_slots_ok:16384" in info for info in infos):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster did not become ok: {infos}")
            time.sleep(0.2)
        return RedisCluster(nodes)
    except BaseException:
        for node in nodes:
            node.stop()
        raise


class Ticker:
    """Measures event-loop stalls: ``async with Ticker() as t: ...`` ticks every 10 ms in a
    task; ``t.worst`` is the longest extra delay a tick saw (seconds)."""

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.worst = 0.0
        self._task: Any = None

    async def _tick(self) -> None:
        import asyncio

        last = time.perf_counter()
        while True:
            await asyncio.sleep(self.period)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last - self.period)
            last = now

    async def __aenter__(self) -> "Ticker":
        import asyncio

        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._task.cancel()
