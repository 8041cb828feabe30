"""pm.health() / await pm.health() / ``kvstore health``: every store's status within a bound, even
when a Redis hangs (a private redis-server stopped with SIGSTOP)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kvstore import Health, InvalidArgumentError, PersistenceManager
from kvstore.aio import AsyncPersistenceManager

from redis_servers import HAVE_REDIS_SERVER, RedisServer, free_port

STORES = ["memory", "cache", "database", "file"]


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path / "data"))


def _config(tmp_path, url, fallback=False, socket_timeout=30):
    redis = {"url": url, "socket_timeout": socket_timeout, "connect_timeout": socket_timeout}
    if fallback:
        redis["fallback"] = "database"
    return {"sqlite": {"path": str(tmp_path / "app.db")}, "redis": redis,
            "file": {"base_path": str(tmp_path / "files")}}


def test_embedded_default_is_healthy():
    with PersistenceManager() as pm:
        report = pm.health()
    assert list(report) == STORES
    for h in report.values():
        assert isinstance(h, Health) and h.ok and h.status == "ok" and h.error is None
        assert h.required and 0 <= h.seconds < 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        report["file"].status = "down"  # type: ignore[misc]


def test_async_embedded_default_is_healthy():
    async def main():
        async with AsyncPersistenceManager() as pm:
            return await pm.health(timeout=5)

    report = asyncio.run(main())
    assert list(report) == STORES and all(h.ok for h in report.values())


def test_timeout_must_be_positive():
    with PersistenceManager() as pm:
        for bad in (0, -1, "2", True):
            with pytest.raises(InvalidArgumentError, match="timeout"):
                pm.health(timeout=bad)


@pytest.mark.parametrize("fallback", [False, True])
def test_refused_redis_is_down_and_required_unless_it_has_a_fallback(tmp_path, fallback):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with PersistenceManager.from_config(_config(tmp_path, url, fallback)) as pm:
        report = pm.health()
    cache = report["cache"]
    assert cache.status == "down" and not cache.ok and cache.required is (not fallback)
    assert "unavailable" in cache.error
    assert all(report[name].ok for name in ("memory", "database", "file"))


def test_secrets_never_appear_in_the_error(tmp_path):
    url = f"redis://app:s3cret-pw@127.0.0.1:{free_port()}/0"
    with PersistenceManager.from_config(_config(tmp_path, url)) as pm:
        error = pm.health()["cache"].error
    assert error and "s3cret-pw" not in error


@pytest.fixture
def hung_redis(tmp_path):
    if not HAVE_REDIS_SERVER:
        pytest.skip("redis-server / redis-cli not on PATH")
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()  # resumes it first


@pytest.mark.slow
def test_a_hung_redis_is_reported_down_within_the_bound(tmp_path, hung_redis):
    with PersistenceManager.from_config(_config(tmp_path, hung_redis.url)) as pm:
        assert pm.health()["cache"].ok  # connected while it answered
        os.kill(hung_redis.proc.pid, signal.SIGSTOP)
        start = time.monotonic()
        report = pm.health(timeout=0.5)
        elapsed = time.monotonic() - start
        assert elapsed < 2.0, elapsed  # the socket timeout is 30 s: the bound is health's own
        assert report["cache"].status == "down" and "no answer within 0.5 s" in report["cache"].error
        assert report["cache"].seconds == 0.5
        assert all(report[name].ok for name in ("memory", "database", "file"))
        os.kill(hung_redis.proc.pid, signal.SIGCONT)


@pytest.mark.slow
def test_async_a_hung_redis_is_reported_down_within_the_bound(tmp_path, hung_redis):
    async def main():
        async with AsyncPersistenceManager.from_config(_config(tmp_path, hung_redis.url)) as pm:
            assert (await pm.health())["cache"].ok
            os.kill(hung_redis.proc.pid, signal.SIGSTOP)
            start = time.monotonic()
            report = await pm.health(timeout=0.5)
            elapsed = time.monotonic() - start
            os.kill(hung_redis.proc.pid, signal.SIGCONT)
            return report, elapsed

    report, elapsed = asyncio.run(main())
    assert elapsed < 2.0, elapsed
    assert report["cache"].status == "down" and "no answer within 0.5 s" in report["cache"].error
    assert all(report[name].ok for name in ("memory", "database", "file"))


def _kvstore_health(tmp_path, body, *args):
    path = tmp_path / "kv.yaml"
    path.write_text(json.dumps({"persistence": body}))  # JSON is YAML
    env = dict(os.environ, KVSTORE_DATA_DIR=str(tmp_path / "data"))
    return subprocess.run([sys.executable, "-m", "kvstore", "--config", str(path), "health",
                           *args], env=env, capture_output=True, text=True, timeout=60)


def test_kvstore_health_prints_one_line_per_store_and_exits_0(tmp_path):
    r = _kvstore_health(tmp_path, {"sqlite": {"path": str(tmp_path / "a.db")}})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [[name, "ok"] for name in STORES]
    assert all(line.split()[3] == "ms" for line in lines)


@pytest.mark.parametrize("fallback, code", [(False, 3), (True, 0)])
def test_kvstore_health_exits_3_when_a_required_store_is_down(tmp_path, fallback, code):
    body = _config(tmp_path, f"redis://127.0.0.1:{free_port()}/0", fallback)
    r = _kvstore_health(tmp_path, body)
    assert r.returncode == code, (r.stdout, r.stderr)
    cache = next(line for line in r.stdout.splitlines() if line.startswith("cache"))
    assert cache.split()[1] == "down" and "unavailable" in cache
    assert ("not required" in cache) is fallback
    r = _kvstore_health(tmp_path, body, "--json", "--timeout", "1")
    assert r.returncode == code
    report = json.loads(r.stdout)
    assert report["ok"] is fallback and list(report["stores"]) == STORES
    assert report["stores"]["cache"]["status"] == "down"
    assert report["stores"]["cache"]["required"] is (not fallback)
    assert report["stores"]["database"] == {**report["stores"]["database"], "status": "ok",
                                            "error": None, "required": True}
