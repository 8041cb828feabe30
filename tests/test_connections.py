"""Connections follow their users: SQLite closes a finished thread's connection, and a database
this process cannot write still opens for reads."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import kvstore
from kvstore import StoreUnavailableError
from kvstore.stores.sqlite import SQLiteStore

ROOT = Path(kvstore.__file__).resolve().parent.parent   # the kvstore under test, for children


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _in_thread(fn, *args):
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn(*args)))
    thread.start()
    thread.join()
    return out[0]


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")


# -- a finished thread's connection is closed ---------------------------------------------------


@needs_proc
def test_short_lived_threads_leave_no_open_files(tmp_path):
    store = SQLiteStore(path=tmp_path / "kv.db")
    store.save("k", 1)
    _in_thread(store.load, "k")  # the first thread's files, whatever SQLite keeps per process
    before = _open_fds()
    for _ in range(2000):
        assert _in_thread(store.load, "k") == 1
    assert _open_fds() <= before + 2  # main: +4000 (two descriptors per thread's connection)
    assert len(store._connections) <= 2   # this thread's, at most one finishing thread's
    store.close()


def test_thread_per_request_server_under_a_low_descriptor_limit(tmp_path):
    """A server starting a thread per request, with ``ulimit -n 256``: 1,500 requests all
    served (main failed every call after ~120 with "unable to open database file")."""
    script = textwrap.dedent(f"""
        import resource, sys, threading
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        from kvstore.stores.sqlite import SQLiteStore
        store = SQLiteStore(path={str(tmp_path / "kv.db")!r})
        failures = []
        def request(i):
            try:
                store.save(f"req:{{i % 10}}", i)
                store.load(f"req:{{i % 10}}")
            except Exception as exc:
                failures.append(f"{{i}}: {{exc}}")
        for i in range(1500):
            t = threading.Thread(target=request, args=(i,))
            t.start()
            t.join()
        print(len(failures), failures[:1])
        sys.exit(1 if failures else 0)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_proc
def test_close_closes_every_live_threads_connection_and_the_store_reopens(tmp_path):
    store = SQLiteStore(path=tmp_path / "kv.db")
    store.save("k", 1)
    before = _open_fds()
    started, release = threading.Barrier(21), threading.Event()
    results = []

    def worker():
        store.load("k")           # opens this thread's connection
        started.wait()
        release.wait()
        results.append(store.load("k"))   # after close(): a new connection, same data

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    started.wait()
    assert len(store._connections) == 21
    assert _open_fds() >= before + 20
    store.close()
    assert len(store._connections) == 0
    assert _open_fds() < before
    release.set()
    for t in threads:
        t.join()
    assert results == [1] * 20
    assert store.load("k") == 1
    store.close()


def test_locks_share_the_threads_connection_and_close_with_it(tmp_path):
    """The lock table's sibling store uses the same per-thread connection: a thread taking a
    lock and writing opens one connection, closed when the thread ends."""
    store = SQLiteStore(path=tmp_path / "kv.db")
    store.save("n", 0)

    def locked_write():
        with store.lock("n", timeout=5):
            store.save("n", store.load("n") + 1)
        return len(store._connections)

    counts = [_in_thread(locked_write) for _ in range(50)]
    assert store.load("n") == 50
    assert max(counts) <= 3   # this thread's and the running one's (maybe one finishing)
    assert len(store._connections) <= 2
    store.close()
    assert len(store._connections) == 0


def test_many_threads_at_once_then_gone(tmp_path):
    store = SQLiteStore(path=tmp_path / "kv.db")
    go = threading.Barrier(64)

    def work(i):
        go.wait()
        for j in range(20):
            store.incr("count")
            store.save(f"t{i}", j)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.load("count") == 64 * 20
    assert [store.load(f"t{i}") for i in range(64)] == [19] * 64
    assert len(store._connections) <= 1
    store.close()


def test_a_fork_child_never_closes_the_parents_connections(tmp_path):
    import multiprocessing

    store = SQLiteStore(path=tmp_path / "kv.db")
    store.save("k", 1)
    ctx = multiprocessing.get_context("fork")

    def child():
        store.save("child", store.load("k") + 1)
        store.close()

    proc = ctx.Process(target=child)
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    assert store.load("child") == 2   # the parent's connection still works
    store.save("k", 3)
    assert store.load("k") == 3
    store.close()


# -- a database this process cannot write opens for reads -------------------------------------------


def _fill(path: Path) -> None:
    store = SQLiteStore(path=path)
    store.save("a", {"x": 1})
    store.save("t", 2, ttl=3600)
    store.log("events").append({"n": 1})
    store.log("events").append({"n": 2})
    store.close()


READER = textwrap.dedent("""
    import json, sys
    from kvstore import StoreUnavailableError
    from kvstore.stores.sqlite import SQLiteStore
    path = sys.argv[1]
    store = SQLiteStore(path=path)
    out = {"read_only": store.read_only, "a": store.load("a"), "keys": list(store.keys()),
           "exists": store.exists("a"), "ttl": store.ttl("t") is not None,
           "log": [r for _, r in store.log("events").read()], "missing": store.load("zz", 7)}
    refused = []
    for name, write in [("save", lambda: store.save("b", 1)), ("delete", lambda: store.delete("a")),
                        ("incr", lambda: store.incr("n")), ("clear", lambda: store.clear()),
                        ("append", lambda: store.log("events").append(3))]:
        try:
            write()
        except StoreUnavailableError as exc:
            refused.append(name if path in str(exc) and "read-only" in str(exc) else str(exc))
    out["refused"] = refused
    print(json.dumps(out))
""")

_EXPECTED_READS = {"read_only": True, "a": {"x": 1}, "keys": ["a", "t"], "exists": True,
                   "ttl": True, "log": [{"n": 1}, {"n": 2}], "missing": 7,
                   "refused": ["save", "delete", "incr", "clear", "append"]}


def _read_as_other_process(path: Path, wrap: list[str] = []) -> dict:  # noqa: B006
    import json

    script = path.parent.parent / "reader.py"
    script.write_text(READER)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([*wrap, sys.executable, str(script), str(path)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _can_bind_read_only(tmp_path: Path) -> bool:
    if not shutil.which("unshare") or not shutil.which("mount"):
        return False
    (tmp_path / "probe-src").mkdir()
    (tmp_path / "probe-ro").mkdir()
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           f"mount --bind {tmp_path}/probe-src {tmp_path}/probe-ro && "
                           f"mount -o remount,bind,ro {tmp_path}/probe-ro"],
                          capture_output=True, timeout=30)
    return done.returncode == 0


def _read_only_mount(tmp_path: Path) -> list[str]:
    """A command prefix: the command runs with ``tmp_path/ro`` a read-only view of
    ``tmp_path/src``, in a private mount namespace (the mount ends with the command)."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            f"mount --bind {tmp_path}/src {tmp_path}/ro && "
            f'mount -o remount,bind,ro {tmp_path}/ro && exec "$@"', "sh"]


@pytest.mark.parametrize("state", ["closed cleanly", "backup copy", "still open elsewhere"])
def test_database_on_a_read_only_mount_serves_reads(tmp_path, state):
    if not _can_bind_read_only(tmp_path):
        pytest.skip("needs unshare and mount (a read-only bind mount)")
    (tmp_path / "src").mkdir()
    (tmp_path / "ro").mkdir()
    keeper = None
    if state == "backup copy":       # rollback journal mode, one self-contained file
        _fill(tmp_path / "live.db")
        SQLiteStore(path=tmp_path / "live.db").backup_to(tmp_path / "src" / "kv.db")
    else:
        _fill(tmp_path / "src" / "kv.db")
        if state == "still open elsewhere":   # the -wal and -shm files exist on the medium
            keeper = SQLiteStore(path=tmp_path / "src" / "kv.db")
            keeper.load("a")
    try:
        out = _read_as_other_process(tmp_path / "ro" / "kv.db", _read_only_mount(tmp_path))
    finally:
        if keeper is not None:
            keeper.close()
    assert out == _EXPECTED_READS


def _chattr(flag: str, path: Path) -> bool:
    return shutil.which("chattr") is not None and subprocess.run(
        ["chattr", flag, str(path)], capture_output=True).returncode == 0


@pytest.mark.parametrize("what", ["file", "folder"])
def test_immutable_database_or_folder_serves_reads(tmp_path, what):
    """``chattr +i``: even root cannot write (file modes would not stop root)."""
    folder = tmp_path / "data"
    folder.mkdir()
    _fill(folder / "kv.db")
    target = folder / "kv.db" if what == "file" else folder
    if not _chattr("+i", target):
        pytest.skip("chattr +i not permitted here")
    try:
        assert _read_as_other_process(folder / "kv.db") == _EXPECTED_READS
    finally:
        _chattr("-i", target)


@pytest.mark.skipif(os.geteuid() == 0, reason="file modes do not stop root")
def test_read_only_file_mode_serves_reads(tmp_path):
    _fill(tmp_path / "kv.db")
    os.chmod(tmp_path / "kv.db", 0o400)
    try:
        assert _read_as_other_process(tmp_path / "kv.db") == _EXPECTED_READS
    finally:
        os.chmod(tmp_path / "kv.db", 0o600)


def test_read_only_database_without_kvstore_tables_reads_as_empty(tmp_path):
    import sqlite3

    folder = tmp_path / "data"
    folder.mkdir()
    other = sqlite3.connect(folder / "other.db")
    other.execute("CREATE TABLE unrelated (x)")
    other.commit()
    other.close()
    if not _chattr("+i", folder / "other.db"):
        pytest.skip("chattr +i not permitted here")
    try:
        store = SQLiteStore(path=folder / "other.db")
        assert store.read_only
        assert store.load("a", "none") == "none" and list(store.keys()) == []
        assert store.log("x").read() == []
        with pytest.raises(StoreUnavailableError, match="read-only"):
            store.save("a", 1)
        store.close()
    finally:
        _chattr("-i", folder / "other.db")
