"""The examples run as a user would run them: started as processes, sent real requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _request(url: str, method: str = "GET", body: object = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_fastapi_example_with_two_workers(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from redis_servers import free_port

    port = free_port()
    env = dict(os.environ, KVSTORE_DATA_DIR=str(tmp_path / "data"))
    env.pop("KVSTORE_CONFIG", None)
    log = open(tmp_path / "uvicorn.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--port", str(port),
         "--workers", "2", "--log-level", "warning"], cwd=ROOT, env=env, stdout=log,
        stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _request(base + "/health") == (200, {"status": "ok"}):
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.2)
        assert _request(base + "/session/s1", "PUT", {"user": "ann"}) == (200, {"saved": "s1"})
        assert _request(base + "/session/s1") == (200, {"user": "ann"})
        assert _request(base + "/session/nope")[0] == 404
        with ThreadPoolExecutor(8) as pool:  # both workers append at once: nothing is lost
            list(pool.map(lambda i: _request(base + "/chat/r1", "POST", {"n": i}), range(40)))
        status, chat = _request(base + "/chat/r1")
        assert status == 200 and sorted(m["n"] for m in chat) == list(range(40))
        assert _request(base + "/report/r1") == (200, {"room": "r1", "messages": 40})
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
        print((tmp_path / "uvicorn.log").read_text())  # shown by pytest when the test fails
