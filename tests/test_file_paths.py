"""FileStore: where a key's file lives (the key -> path mapping, and back by ``keys()``), and
that no key, link, FIFO or swapped folder ever makes the store read or write outside its folder.
(The files' contents: tests/test_file_store.py.)"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvstore import FileStore, InvalidKeyError, StoreUnavailableError


@pytest.fixture
def area(tmp_path: Path) -> Path:
    """A parent folder: the store lives in ``area/store``; nothing may appear beside it."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim.txt").write_text("keep me")
    return tmp_path


@pytest.fixture
def file_store(area: Path):
    """A FileStore in ``area / "store"``."""
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
    "x" * 10_000, "é" * 5000, "a/" * 2000 + "b", "con", "aux.json", "a//b", "%2e%2e/escape",
    "\\..\\..\\x",
]


@pytest.mark.parametrize("key", HOSTILE, ids=lambda k: repr(k[:20]))
def test_hostile_keys_stay_inside_base_path(file_store, area, key):
    try:
        file_store.save(key, "v")
    except InvalidKeyError as exc:
        assert isinstance(exc, ValueError)
        with pytest.raises(ValueError):
            file_store.load(key)
    else:
        assert file_store.load(key) == "v"
        assert list(file_store.keys()) == [key]
        assert file_store.delete(key)
        assert list(file_store.keys()) == []
    assert files_outside(area) == []
    assert (area / "outside" / "victim.txt").read_text() == "keep me"
    # the store's own dot-files were never overwritten by a key
    assert all(not n.startswith(".") or n in (".kvstore.lock",)
               for _, _, names in os.walk(area / "store") for n in names)


@pytest.mark.parametrize("key", ["/etc/passwd", "a//b", "trailing/", "/", "x" * 300, "x" * 10_000])
def test_unstorable_keys_are_refused_by_name_and_write_nothing(file_store, area, key):
    with pytest.raises(InvalidKeyError) as info:
        file_store.save(key, 1)
    assert repr(key[:20])[:-1] in str(info.value)
    if len(key) == 300:  # the portable key limit (2048 bytes) comes first for longer ones
        assert "too long for a file name" in str(info.value)
    with pytest.raises(ValueError):
        file_store.load(key)
    assert [e.name for e in os.scandir(area / "store")] == []  # nothing written


@pytest.mark.parametrize("key,relpath", [
    ("session:1", "session:1.json"),
    ("a/b/c", "a/b/c.json"),
    ("..", "%2E..json"),
    ("../x", "%2E./x.json"),
    ("50%/off", "50%25/off.json"),
    ("back\\slash", "back%5Cslash.json"),
    ("ctl\x01byte", "ctl%01byte.json"),
    ("ünïcödé/日本", "ünïcödé/日本.json"),
    ("folder.json/x", "folder%2Ejson/x.json"),
])
def test_key_to_path_mapping(file_store, area, key, relpath):
    file_store.save(key, 1)
    assert (area / "store" / relpath).is_file()
    assert list(file_store.keys()) == [key]


def test_a_folder_never_collides_with_a_key(file_store):
    file_store.save("a", "file a")
    file_store.save("a.json/b", "inside")
    file_store.save("a/b", "nested")
    assert file_store.load("a") == "file a"
    assert file_store.load("a.json/b") == "inside"
    assert sorted(file_store.keys()) == ["a", "a.json/b", "a/b"]


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


def test_prefix_is_literal_across_folders(file_store):
    """The prefix is text, not a path: it matches file names and folder names alike (the
    wildcard characters are checked on every store by kvstore.testing)."""
    for key in ["a%b", "a_b", "a*", "ab", "a/b", "a.json/c"]:
        file_store.save(key, 1)
    assert sorted(file_store.keys("a/")) == ["a/b"]
    assert sorted(file_store.keys("a.")) == ["a.json/c"]
    assert sorted(file_store.keys("a")) == ["a%b", "a*", "a.json/c", "a/b", "a_b", "ab"]


def test_non_canonical_hand_made_names_are_not_listed(file_store, area):
    file_store.save("real", 1)
    (area / "store" / "a%2Fb.json").write_text("1")   # would decode to "a/b", stored elsewhere
    (area / "store" / "bang!.json").write_text("1")   # "!" is always encoded by the store
    (area / "store" / "notes.txt").write_text("x")    # not our extension
    assert list(file_store.keys()) == ["real"]


def test_empty_folders_are_removed_after_delete(file_store, area):
    file_store.save("deep/er/key", 1)
    file_store.delete("deep/er/key")
    assert not (area / "store" / "deep").exists()


# -- property test -----------------------------------------------------------------------


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


@pytest.fixture
def linked(tmp_path):
    from kvstore import FileStore

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.json").write_text('"outside data"')
    (outside / "x.json").write_text('"outside x"')
    store = FileStore(base_path=tmp_path / "base")
    store.save("inside", 1)
    (store.base_path / "linkdir").symlink_to(outside, target_is_directory=True)
    (store.base_path / "leak.json").symlink_to(outside / "secret.json")
    yield store, outside
    store.close()


def test_a_linked_folder_is_refused_for_writes_and_reads(linked):
    from kvstore import InvalidKeyError

    store, outside = linked
    with pytest.raises(InvalidKeyError) as err:
        store.save("linkdir/new", 1)
    assert "symbolic link" in str(err.value) and "linkdir" in str(err.value)
    assert not (outside / "new.json").exists()
    with pytest.raises(InvalidKeyError):
        store.load("linkdir/x")
    with pytest.raises(InvalidKeyError):
        store.delete("linkdir/x")
    with pytest.raises(InvalidKeyError):
        store.save_many({"ok": 1, "linkdir/y": 2})
    assert (outside / "x.json").exists() and not store.exists("ok")


def test_a_linked_file_is_refused_and_left_alone(linked):
    from kvstore import InvalidKeyError

    store, outside = linked
    for call in (lambda: store.load("leak"), lambda: store.save("leak", "overwrite"),
                 lambda: store.delete("leak"), lambda: store.incr("leak"),
                 lambda: store.update("leak", lambda v: v)):
        with pytest.raises(InvalidKeyError):
            call()
    assert (outside / "secret.json").read_text() == '"outside data"'
    assert sorted(store.keys()) == ["inside"]


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


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (links not followed), with its bytes."""
    out = {}
    for where, _, names in os.walk(folder):
        for name in names:
            path = Path(where, name)
            rel = str(path.relative_to(folder))
            out[rel] = b"<link>" if path.is_symlink() else path.read_bytes()
    return out


def test_a_folder_swapped_for_a_link_while_writing_is_never_followed(tmp_path):
    """Two threads save, save_many, delete, read and append logs under ``sub/`` while a third
    swaps ``sub`` for a symbolic link to a folder outside the store, at least 50 times (the
    check-then-open race found in issue 21): nothing outside is ever created, changed, removed
    or read. A call that meets the link raises kvstore's own error; no other error escapes."""
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("k0.json", "k1.json", "m0.json", "t.jsonl"):
        (outside / name).write_text('"outside"\n')
    before = _tree(outside)
    store = FileStore(base_path=tmp_path / "store", fsync=False)
    base = store.base_path
    stop = threading.Event()
    unexpected: list[BaseException] = []
    leaked: list[object] = []

    def work(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                store.save(f"sub/k{i % 2}", i)
                store.save_many({f"sub/m{n}": i, f"sub/deep/d{n}": i})
                store.log("sub/t").append(i)
                for key in (f"sub/k{(i + 1) % 2}", f"sub/m{n}"):
                    if store.load(key) == "outside":
                        leaked.append(key)
                if [seq for seq, r in store.log("sub/t").read() if r == "outside"]:
                    leaked.append("sub/t")
                store.delete(f"sub/k{(i + 1) % 2}")
                list(store.keys("sub/"))
            except (InvalidKeyError, StoreUnavailableError):
                pass  # the call met the link (or its folder vanished): refused, as it should be
            except BaseException as exc:  # noqa: BLE001 - anything else fails the test
                unexpected.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for t in workers:
        t.start()
    swaps, tries, started = 0, 0, time.monotonic()
    try:
        while swaps < 400 and (swaps < 50 or time.monotonic() - started < 3.0):
            if time.monotonic() - started > 30:
                break
            tries += 1
            try:
                os.rename(base / "sub", base / f".held-{tries}")
            except FileNotFoundError:
                pass
            os.symlink(outside, base / ".link", target_is_directory=True)
            try:
                os.rename(base / ".link", base / "sub")
            except OSError:  # a writer recreated `sub` meanwhile: try again
                os.unlink(base / ".link")
                continue
            swaps += 1
            time.sleep(0.0005)
            os.unlink(base / "sub")
            time.sleep(0.0005)
    finally:
        stop.set()
        for t in workers:
            t.join(30)
        store.close()
    assert swaps >= 50
    assert _tree(outside) == before, "the store wrote or removed files outside its folder"
    assert not leaked, f"read outside data through the link: {leaked[:5]}"
    assert not unexpected, unexpected[:3]


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


def test_a_fifo_under_a_keys_name_never_hangs_a_read(file_store, area):
    """Only regular files are values: a FIFO planted as ``pipe.json`` reads as no key (an open
    for reading would wait for a writer forever)."""
    os.mkfifo(area / "store" / "pipe.json")
    found: list[object] = []
    reader = threading.Thread(target=lambda: found.append(file_store.load("pipe", "none")), daemon=True)
    reader.start()
    reader.join(5)
    assert found == ["none"]
    assert list(file_store.keys()) == []
