"""FileStore: path safety of the key -> file mapping, plain JSON files, corruption, locking."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvstore import CorruptDataError, FileStore, InvalidKeyError, SQLiteStore
from kvstore.transfer import migrate

from conftest import FakeClock


@pytest.fixture
def area(tmp_path: Path) -> Path:
    """A parent folder: the store lives in ``area/store``; nothing may appear beside it."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim.txt").write_text("keep me")
    return tmp_path


@pytest.fixture
def store(area: Path):
    s = FileStore(base_path=area / "store")
    yield s
    s.close()


def files_outside(area: Path) -> list[str]:
    """Every file under ``area`` that is not inside the store's folder (or the decoy)."""
    found = []
    for folder, _, names in os.walk(area):
        for name in names:
            rel = os.path.relpath(os.path.join(folder, name), area)
            if not rel.startswith("store" + os.sep) and rel != os.path.join("outside", "victim.txt"):
                found.append(rel)
    return found


HOSTILE = [
    "..", "../x", "a/../../x", "../../outside/victim", "/etc/passwd", "nul\x00byte",
    "back\\slash", "..\\..\\x", "%2e%2e", "%2e%2e/%2e%2e/x", "%2E%2E/x", ".", "./x", "a/./b",
    ".kvstore.lock", ".tmp-0123456789abcdef", "x.json/..", "~/x", "$HOME", "a\nb", "\x7f",
    "x" * 10_000, "é" * 5000, "a/" * 2000 + "b", "con", "aux.json",
]


@pytest.mark.parametrize("key", HOSTILE, ids=lambda k: repr(k[:20]))
def test_hostile_keys_stay_inside_base_path(store, area, key):
    try:
        store.save(key, "v")
    except InvalidKeyError as exc:
        assert isinstance(exc, ValueError)
        with pytest.raises(ValueError):
            store.load(key)
    else:
        assert store.load(key) == "v"
        assert list(store.keys()) == [key]
        assert store.delete(key)
        assert list(store.keys()) == []
    assert files_outside(area) == []
    assert (area / "outside" / "victim.txt").read_text() == "keep me"
    # the store's own dot-files were never overwritten by a key
    assert all(not n.startswith(".") or n in (".kvstore.lock",)
               for _, _, names in os.walk(area / "store") for n in names)


@pytest.mark.parametrize("key", ["/etc/passwd", "a//b", "trailing/", "/", "x" * 10_000])
def test_unstorable_keys_name_the_key(store, key):
    with pytest.raises(InvalidKeyError) as info:
        store.save(key, 1)
    assert repr(key[:20])[:-1] in str(info.value)


def test_too_long_message(store):
    with pytest.raises(InvalidKeyError, match="too long for a file name"):
        store.save("x" * 300, 1)


WEIRD = ["日本語/キー", "emoji 😀/x", "Ωmega:1", "tab\there", "percent%25literal", "%", "a%b",
         "🙂", "🙂.json/inside", "a", "a.json/b", "sp ace", "-dash", "~tilde", "a.b.c",
         "..hidden", ".dot/.x",
         "zero\u200bwidth", "e\u0301combining", "name.json", "x.msgpack/y", "'quote\"",
         "*?[]<>|", "a" * 60 + "/" + "b" * 60, "ｆｕｌｌ"]


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_weird_unicode_keys_round_trip_and_list_back(area, fmt):
    s = FileStore(base_path=area / "store", format=fmt)
    for i, key in enumerate(WEIRD):
        s.save(key, {"i": i})
    assert sorted(s.keys()) == sorted(WEIRD)
    for i, key in enumerate(WEIRD):
        assert s.load(key) == {"i": i}, key
    # keys() decodes every file path back to the key that wrote it
    for key in WEIRD:
        assert s._key_for(s._path_for(key)) == key
    assert files_outside(area) == []
    s.close()


def test_prefix_is_literal(store):
    for key in ["a%b", "a_b", "a*", "ab", "a/b"]:
        store.save(key, 1)
    assert sorted(store.keys("a%")) == ["a%b"]
    assert sorted(store.keys("a_")) == ["a_b"]
    assert sorted(store.keys("a*")) == ["a*"]
    assert sorted(store.keys("a/")) == ["a/b"]


def test_non_canonical_hand_made_names_are_not_listed(store, area):
    store.save("real", 1)
    (area / "store" / "a%2Fb.json").write_text("1")   # would decode to "a/b", stored elsewhere
    (area / "store" / "bang!.json").write_text("1")   # "!" is always encoded by the store
    (area / "store" / "notes.txt").write_text("x")    # not our extension
    assert list(store.keys()) == ["real"]


# -- plain JSON files ---------------------------------------------------------------------------


def test_plain_json_is_readable_and_hand_edits_read_back(store, area):
    store.save("config/settings", {"theme": "dark", "n": 3, "tags": ["a"]})
    path = area / "store" / "config" / "settings.json"
    with open(path) as fh:
        assert json.load(fh) == {"theme": "dark", "n": 3, "tags": ["a"]}
    store.save("count", 41)
    assert (area / "store" / "count.json").read_text().strip() == "41"
    assert store.incr("count") == 42
    assert json.loads((area / "store" / "count.json").read_text()) == 42
    path.write_text('{"theme": "light"}')
    assert store.load("config/settings") == {"theme": "light"}


def test_extended_types_stay_valid_json(store, area):
    import datetime as dt
    value = {"when": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), "t": (1, 2)}
    store.save("x", value)
    json.loads((area / "store" / "x.json").read_text())
    assert store.load("x") == value


def test_ttl_wrapper_puts_expires_at_first(area):
    clock = FakeClock(1_763_830_000.5)
    s = FileStore(base_path=area / "store", clock=clock)
    s.save("otp", {"code": "123"}, ttl=30)
    text = (area / "store" / "otp.json").read_text()
    assert text.startswith('{"__kv__": "ttl", "expires_at": 1763830030.5')
    assert json.loads(text) == {"__kv__": "ttl", "expires_at": 1763830030.5,
                                "value": {"code": "123"}}
    assert s.ttl("otp") == pytest.approx(30)
    assert list(s.keys()) == ["otp"]
    clock.advance(30)
    assert s.load("otp") is None and not s.exists("otp") and list(s.keys()) == []
    assert s.load_many(["otp"]) == {}
    assert not (area / "store" / "otp.json").exists()


def test_user_dict_shaped_like_the_wrapper_is_just_data(store):
    evil = {"__kv__": "ttl", "expires_at": 1, "value": "gotcha"}
    store.save("evil", evil)
    assert store.load("evil") == evil
    assert list(store.keys()) == ["evil"]
    assert store.ttl("evil") is None
    store.save("evil2", evil, ttl=60)
    assert store.load("evil2") == evil


def test_hand_reformatted_wrapper_is_still_understood(area):
    clock = FakeClock(1000.0)
    s = FileStore(base_path=area / "store", clock=clock)
    (area / "store" / "k.json").write_text(
        '{\n\n\n   "value": [1, 2],\n "expires_at": 1010,\n "__kv__": "ttl"}')
    assert s.load("k") == [1, 2]
    assert list(s.keys()) == ["k"]
    clock.advance(20)
    assert list(s.keys()) == [] and s.load("k") is None


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_garbled_file_raises_corrupt_data_naming_the_key(area, fmt):
    s = FileStore(base_path=area / "store", format=fmt)
    s.save("good", {"a": 1})
    s.save("bad", {"b": 2}, ttl=100)
    s.save("truncated", list(range(100)))
    ext = "." + fmt
    (area / "store" / ("bad" + ext)).write_bytes(b"\xc1t\x00{garbage")
    p = area / "store" / ("truncated" + ext)
    p.write_bytes(p.read_bytes()[:-7])
    for key in ("bad", "truncated"):
        with pytest.raises(CorruptDataError, match=repr(key)):
            s.load(key)
    assert s.load("good") == {"a": 1}
    assert sorted(s.keys()) == ["bad", "good", "truncated"]
    assert s.load_many(["good"]) == {"good": {"a": 1}}
    assert s.delete("bad")  # a corrupt key can still be removed
    assert sorted(s.keys()) == ["good", "truncated"]


def test_file_and_folder_modes(area):
    s = FileStore(base_path=area / "store" / "deep")
    s.save("a/b/c", 1)
    for folder in [area / "store", area / "store" / "deep", area / "store" / "deep" / "a",
                   area / "store" / "deep" / "a" / "b"]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE((area / "store" / "deep" / "a" / "b" / "c.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((area / "store" / "deep" / ".kvstore.lock").stat().st_mode) == 0o600


def test_no_temp_files_after_saves_and_stale_ones_are_swept(store, area):
    for i in range(30):
        store.save(f"k/{i % 3}/{i}", i, ttl=None if i % 2 else 60)
    store.save_many({f"m/{i}": i for i in range(30)})
    for i in range(5):
        store.incr("counter")
    temps = [n for _, _, names in os.walk(area) for n in names if n.startswith(".tmp-")]
    assert temps == []
    stale = area / "store" / "k" / ".tmp-deadbeef"
    fresh = area / "store" / "k" / ".tmp-feedface"
    stale.write_text("x")
    fresh.write_text("y")
    os.utime(stale, (0, 0))
    FileStore(base_path=area / "store").close()
    assert not stale.exists() and fresh.exists()
    assert "k/0/0" in set(store.keys())


def test_failed_apply_changes_nothing(store, area, monkeypatch):
    store.save("a", 1)
    store.save("b", 2)
    from kvstore.stores.file import atomic

    real = atomic._write
    calls = []

    def flaky(dir_fd, data, fsync):  # the disk fills up at the second temp file
        calls.append(data)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(dir_fd, data, fsync)

    monkeypatch.setattr(atomic, "_write", flaky)
    from kvstore.store import MISSING
    with pytest.raises(Exception):
        store.raw_apply([("a", store.encode("a", 10), None), ("c", store.encode("c", 3), None),
                      ("b", MISSING, None)])
    assert store.load("a") == 1 and store.load("b") == 2 and not store.exists("c")
    assert [n for _, _, names in os.walk(area) for n in names if n.startswith(".tmp-")] == []


def test_snapshot_blobs_migrate_to_another_store(store, area):
    store.save("n", 5)
    store.save("d", {"t": (1, 2)}, ttl=100)
    db = SQLiteStore(path=area / "store-db" / "x.db")
    try:
        assert migrate(store, db) == 2
        assert db.load("n") == 5 and db.load("d") == {"t": (1, 2)}
        assert 0 < db.ttl("d") <= 100
        back = FileStore(base_path=area / "store" / "copy", format="msgpack")
        assert migrate(db, back) == 2
        assert back.load("d") == {"t": (1, 2)} and back.incr("n") == 6
    finally:
        db.close()


def test_configuration_errors():
    from kvstore import ConfigError
    with pytest.raises(ConfigError, match="format"):
        FileStore(base_path=tempfile.mkdtemp(), format="yaml")
    with pytest.raises(ConfigError, match="secret"):
        FileStore(base_path=tempfile.mkdtemp(), format="pickle")
    s = FileStore(base_path=tempfile.mkdtemp(), format="pickle", secret="s3cret")
    s.save("k", {1, 2})
    assert s.load("k") == {1, 2} and s._path_for("k").name == "k.pickle"
    assert s._path_for("k").read_bytes()[:1] == b"\xc1"


def test_tilde_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    s = FileStore(base_path="~/kv")
    assert s.base_path == (tmp_path / "kv").resolve()
    assert "base_path" in repr(s) and "json" in repr(s)
    s.close()


# -- concurrency ----------------------------------------------------------------------------------


def _incr_worker(base: str, n: int) -> None:
    s = FileStore(base_path=base, fsync=False)
    for _ in range(n):
        s.incr("hits")
    s.close()


def test_incr_is_exact_across_processes(tmp_path):
    base = str(tmp_path / "store")
    FileStore(base_path=base).close()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_incr_worker, args=(base, 100)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert FileStore(base_path=base).load("hits") == 400


def test_incr_is_exact_across_threads(store):
    import threading

    def work() -> None:
        for _ in range(50):
            store.incr("t")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.load("t") == 400


# -- property test -----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.text(min_size=1, max_size=60) | st.lists(
    st.sampled_from(["..", ".", "", "a", "%2e", "\\", "\x00", "é", ".json", "%", " "]),
    min_size=1, max_size=6).map("/".join))
def test_any_text_key_round_trips_or_is_refused(key):
    area = Path(tempfile.mkdtemp())
    try:
        s = FileStore(base_path=area / "store", fsync=False)
        try:
            s.save(key, {"k": key})
        except InvalidKeyError:
            pass
        else:
            assert s.load(key) == {"k": key}
            assert list(s.keys()) == [key]
            assert s.exists(key)
        assert files_outside(area) == []
        s.close()
    finally:
        shutil.rmtree(area)


# -- links and replaced folders (issue 21: every step walked from a descriptor) ----------------


def test_a_linked_lock_namespace_or_lock_file_is_refused(area):
    """``.kvstore-meta`` (the lock namespace) and ``.kvstore.lock`` are reached like any key's
    file: a link there is refused, and nothing is created outside the store's folder."""
    base = area / "store"
    base.mkdir()
    (base / ".kvstore-meta").symlink_to(area / "outside", target_is_directory=True)
    store = FileStore(base_path=base)
    store.save("k", 1)
    with pytest.raises(InvalidKeyError) as err:
        with store.lock("report", timeout=0):
            pass
    assert ".kvstore-meta" in str(err.value) and "symbolic link" in str(err.value)
    store.close()
    other = base / "second"  # a second store (inside the first's folder: files_outside)
    other.mkdir()
    (other / ".kvstore.lock").symlink_to(area / "outside" / "planted.lock")
    store = FileStore(base_path=other)
    with pytest.raises(InvalidKeyError) as err:
        store.save("k", 1)
    assert "'k'" in str(err.value) and ".kvstore.lock" in str(err.value)
    assert store.load("k") is None  # reads take no lock
    store.close()
    assert files_outside(area) == [] and not (area / "outside" / "planted.lock").exists()


def test_a_replaced_folder_is_used_from_the_next_call(area):
    """The store's folder is looked up on every call, never held open: after a restore-style
    swap (or a delete and recreate by hand) writes land in the folder that is there now, and
    the lock file that excludes other writers is the new one."""
    base = area / "store"
    store = FileStore(base_path=base)
    store.save("a/k", 1)
    store.save("top", 1)
    fresh = area / "fresh"
    FileStore(base_path=fresh).save("a/k", 2)
    os.rename(base, area / "old")
    os.rename(fresh, base)
    assert store.load("a/k") == 2 and store.load("top") is None
    store.save("top", 3)
    assert json.loads((base / "top.json").read_text()) == 3
    assert not (area / "old" / "top.json").exists() or store.load("top") == 3
    with store.lock("x", timeout=0):
        assert (base / ".kvstore-meta").is_dir()
    # A writer opened after the swap and one opened before it still exclude each other.
    late = FileStore(base_path=base, fsync=False)
    threads = [threading.Thread(target=lambda s=s: [s.incr("n") for _ in range(150)])
               for s in (store, late)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.load("n") == 300
    late.close()
    shutil.rmtree(base)
    store.save("b/c", 4)  # recreated, not written into the deleted folder
    assert json.loads((base / "b" / "c.json").read_text()) == 4
    assert sorted(store.keys()) == ["b/c"]
    store.close()


def test_a_fifo_under_a_keys_name_never_hangs_a_read(store, area):
    """Only regular files are values: a FIFO planted as ``pipe.json`` reads as no key (an open
    for reading would wait for a writer forever)."""
    os.mkfifo(area / "store" / "pipe.json")
    found: list[object] = []
    reader = threading.Thread(target=lambda: found.append(store.load("pipe", "none")), daemon=True)
    reader.start()
    reader.join(5)
    assert found == ["none"]
    assert list(store.keys()) == []
