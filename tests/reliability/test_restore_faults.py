"""Restore under faults: a store failing at a random step leaves every store as it was.

60 rounds over a manager with Redis (or fakeredis) as the cache tier, SQLite as the database and
a file store. Each round injects one failure at a random point of the restore: a file-system
call of the file store's replacement (a temp file, a hard link, a rename, an unlink: a full disk,
an I/O error), the insert of a random key inside the database's transaction, or the Redis
script. After every failed restore each store holds exactly what it held before (keys, values,
TTL'd or not, logs and their numbers); a restore without a fault then brings the backup back.
"""

from __future__ import annotations

import errno
import os
import random
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import REDIS_URL, _redis_build  # noqa: E402

from kvstore import KVStoreError, PersistenceManager, StoreUnavailableError  # noqa: E402

ROUNDS = 60
CATEGORIES = {"p": {"store": "database"}, "f": {"store": "file"}, "c": {"store": "cache"}}


def _contents(pm: PersistenceManager) -> Any:
    out = {}
    for name in ("cache", "database", "file"):
        s = pm.stores[name]
        out[name] = ({k: (s.load(k), s.ttl(k) is not None) for k in s.keys()},
                     {n: s.log(n).read() for n in s.logs()})
    return out


def _write(pm: PersistenceManager, tag: str) -> None:
    for prefix, n in (("p", 40), ("f", 12), ("c", 40)):
        store = pm.stores[CATEGORIES[prefix]["store"]]
        store.save_many({f"{prefix}:{tag}:{i:02d}": {"i": i, "tag": tag} for i in range(n)})
        store.save(f"{prefix}:{tag}:ttl", tag, ttl=600)
        store.log(f"{prefix}:log").append({"tag": tag})
        store.log(f"{prefix}:log-{tag}").append(tag)


class _FileFaults:
    """Counts the file store's file-system calls during a restore; fails the n-th one."""

    def __init__(self, base: Path, fail_at: int | None) -> None:
        self.base, self.fail_at, self.calls = str(base), fail_at, 0
        self.real = {name: getattr(os, name) for name in ("open", "replace", "link", "unlink")}

    def wrap(self, name: str) -> Any:
        real = self.real[name]

        def call(*args: Any, **kw: Any) -> Any:
            # The file store works relative to folder descriptors (dir_fd=...), never by path.
            fd = kw.get("dir_fd", kw.get("src_dir_fd"))
            touched = [a for a in args[:2] if isinstance(a, (str, os.PathLike))]
            ours = fd is not None or any(str(a).startswith(self.base) for a in touched)
            if ours and self._counts(name, args, fd):
                self.calls += 1
                if self.calls == self.fail_at:
                    raise OSError(errno.ENOSPC, "No space left on device (injected)", str(args[0]))
            return real(*args, **kw)

        return call

    @staticmethod
    def _counts(name: str, args: tuple[Any, ...], fd: int | None) -> bool:
        """The calls whose failure fails the restore: a new temp file, a hard link, a rename,
        the unlink of a key's file (not the clean-up of temp files, which never raises)."""
        if name == "open":
            return bool(args[1] & os.O_CREAT)
        if name == "unlink":
            try:
                os.stat(args[0], dir_fd=fd, follow_symlinks=False)
            except OSError:
                return False
            return not os.path.basename(args[0]).startswith(".tmp-")
        return True

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in self.real:
            monkeypatch.setattr(os, name, self.wrap(name))


def test_a_fault_at_any_step_of_a_restore_leaves_every_store_as_it_was(tmp_path, monkeypatch):
    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path / "data"))
    pm = PersistenceManager.from_config({"persistence": {
        "categories": CATEGORIES, "backup": {"path": str(tmp_path / "bk")}}})
    redis = _redis_build(REDIS_URL, f"kvtest:{uuid.uuid4().hex[:8]}:")(ttl_default=None)
    pm.stores["cache"].close()
    pm.stores["cache"] = redis
    rng = random.Random(int(os.environ.get("KVSTORE_TEST_SEED", "21")))
    try:
        _write(pm, "old")
        path = pm.backup()
        backed_up = _contents(pm)
        counter = _FileFaults(pm.stores["file"].base_path, None)
        with monkeypatch.context() as m:  # how many file-system calls a restore makes
            counter.install(m)
            pm.restore(path)
        assert _contents(pm) == backed_up and counter.calls > 20
        _write(pm, "new")
        pm.stores["file"].delete("f:old:03")
        pm.stores["database"].log("p:log-old").delete()
        before = _contents(pm)
        failed = {"file": 0, "database": 0, "cache": 0}
        for _ in range(ROUNDS):
            where = rng.choice(["file", "file", "database", "cache"])
            with monkeypatch.context() as m:
                if where == "file":
                    _FileFaults(pm.stores["file"].base_path,
                                rng.randint(1, counter.calls)).install(m)
                elif where == "database":
                    key = f"p:old:{rng.randrange(40):02d}"
                    pm.stores["database"]._conn().execute(
                        "CREATE TEMP TRIGGER IF NOT EXISTS boom BEFORE INSERT ON main.kvstore "
                        f"WHEN NEW.key = '{key}' BEGIN SELECT RAISE(ABORT, 'injected'); END")
                else:
                    def unavailable(*args: Any, **kw: Any) -> None:
                        raise StoreUnavailableError("Redis went away (injected)")

                    m.setattr(redis, "raw_replace_all", unavailable)
                with pytest.raises(KVStoreError, match=f"store '{where}' failed"):
                    pm.restore(path)
                pm.stores["database"]._conn().execute("DROP TRIGGER IF EXISTS temp.boom")
            failed[where] += 1
            assert _contents(pm) == before, f"round with a fault in {where}"
        print(f"faults injected per store: {failed}; stores changed by a failed restore: 0")
        assert min(failed.values()) >= 5
        pm.restore(path)
        assert _contents(pm) == backed_up
    finally:
        redis.clear()
        for name in redis.logs():
            redis.log(name).delete()
        pm.close()


KILLS = 50


def test_a_killed_restore_is_finished_by_the_next_manager(tmp_path, monkeypatch):
    """SIGKILL a restore (SQLite, files, embedded cache) at a random moment, 50 times, then open
    a manager: every store holds either what it held before or the backup, all of them the
    same one, never a mix (a restore killed after its first change is finished by the next
    manager that opens, from its backup)."""
    import signal
    import time

    monkeypatch.setenv("KVSTORE_DATA_DIR", str(tmp_path / "data"))
    config = {"persistence": {"categories": CATEGORIES, "backup": {"path": str(tmp_path / "bk")}}}
    rng = random.Random(int(os.environ.get("KVSTORE_TEST_SEED", "21")))
    with PersistenceManager.from_config(config) as pm:
        _write(pm, "old")
        target = pm.backup()
        backed_up = _contents(pm)
        _write(pm, "new")
        pm.stores["file"].log("f:log-old").delete()
        changed = pm.backup()
        before = _contents(pm)
        start = time.perf_counter()
        pm.restore(target)
        took = time.perf_counter() - start
    outcomes = {"before": 0, "backup": 0}
    window = took * 1.2  # widened while no kill lands after the first change (a busy machine
    for round_ in range(KILLS):  # forks and runs the child slower than the parent's restore)
        if round_ and round_ % 10 == 0 and not outcomes["backup"]:
            window *= 2
        with PersistenceManager.from_config(config) as pm:
            pm.restore(changed)
            pid = os.fork()
            if pid == 0:  # the child restores, and is killed somewhere along the way
                try:
                    pm.restore(target)
                finally:
                    os._exit(0)
            time.sleep(rng.uniform(0, window))
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        with PersistenceManager.from_config(config) as pm:  # opening finishes a killed restore
            now = _contents(pm)
        assert now in (before, backed_up), "a killed restore left the stores out of step"
        outcomes["before" if now == before else "backup"] += 1
    print(f"{KILLS} restores killed: {outcomes['backup']} finished by the next manager, "
          f"{outcomes['before']} had changed nothing; 0 out of step")
    assert outcomes["before"] and outcomes["backup"]  # the kills hit both sides
