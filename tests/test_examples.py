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


def _run_example(name: str, tmp_path: Path) -> str:
    env = dict(os.environ, KVSTORE_DATA_DIR=str(tmp_path / "unused"))
    env.pop("KVSTORE_CONFIG", None)
    r = subprocess.run([sys.executable, str(ROOT / "examples" / name), str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_persona_evolution(tmp_path):
    out = _run_example("persona_evolution.py", tmp_path)
    assert "generations: 4 (generation:000000 .. generation:000003)" in out
    assert "latest: generation 3" in out and "transcript of generation 3: 2 records" in out
    out = _run_example("persona_evolution.py", tmp_path)  # resumes from the latest generation
    assert "latest: generation 6" in out


@pytest.mark.slow
def test_messaging_with_four_processes(tmp_path):
    out = _run_example("messaging.py", tmp_path)
    assert "messages kept: 200 of 200" in out and "index: ['c0', 'c1', 'c2']" in out


@pytest.mark.slow
def test_agent_lab_resumes_after_sigkill(tmp_path):
    out = _run_example("agent_lab.py", tmp_path)
    killed = int(out.split("killed at step ")[1].split()[0])
    assert 0 < killed < 40 and f"resumed from step {killed}" in out
    assert "every step present: True" in out and "checkpoint: step 40" in out
    assert "after clean: [] False" in out


def test_langgraph_agent_resumed_by_a_second_process(tmp_path):
    pytest.importorskip("langgraph.graph")
    out = _run_example("langgraph_agent.py", tmp_path)
    first, second = (line.split("]")[0] for line in out.splitlines()[:2])
    assert "waiting for a human: {'question': 'may I send this email?'" in out
    assert first != second and "found thread waiting at ('approve',)" in out
    assert "done: [\"drafted a reply to 'refund order 1017'\", \"human said 'yes'\", 'email sent']" in out
    assert "checkpoints: 5, latest step 3" in out


def test_sage_layers(tmp_path):
    out = _run_example("sage_layers.py", tmp_path)
    assert "session:u1           -> memory         900s" in out
    assert "query_history:u1     -> cache        86400s" in out
    assert "access_patterns:u1   -> database 2.592e+06s  {'logins': 1}" in out
    assert "config file on disk: True" in out and "sqlite file beside the YAML: True" in out


@pytest.mark.slow
def test_helixcode_state(tmp_path):
    out = _run_example("helixcode_state.py", tmp_path)
    assert "stored as json+gzip" in out and "restored: 50 open files" in out
    assert "refused: SerializationError" in out and "snapshot written by autosave: True" in out
    assert "after restart, editor buffer: \"print('hello')\"" in out
