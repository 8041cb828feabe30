"""FileStore's files on disk: plain editable JSON, the TTL wrapper, atomic writes and their
temporary files, the formats and options. (Where a key's file lives, and that it never lives
outside the folder: tests/test_file_paths.py; damage: reliability/test_corruption.py; modes:
reliability/test_security.py.)"""

from __future__ import annotations

import json
import os
import tempfile

import pytest

from kvstore import FileStore, SQLiteStore
from kvstore.testing import FakeClock
from kvstore.transfer import migrate


@pytest.fixture
def file_store(tmp_path):
    """A FileStore in ``tmp_path / "files"``."""
    s = FileStore(base_path=tmp_path / "files")
    yield s
    s.close()


def test_plain_json_is_readable_and_hand_edits_read_back(file_store, tmp_path):
    file_store.save("config/settings", {"theme": "dark", "n": 3, "tags": ["a"]})
    path = tmp_path / "files" / "config" / "settings.json"
    with open(path) as fh:
        assert json.load(fh) == {"theme": "dark", "n": 3, "tags": ["a"]}
    file_store.save("count", 41)
    assert (tmp_path / "files" / "count.json").read_text().strip() == "41"
    assert file_store.incr("count") == 42
    assert json.loads((tmp_path / "files" / "count.json").read_text()) == 42
    path.write_text('{\n  "theme": "light",\n  "added": [1, 2]\n}\n')  # edited by hand
    assert file_store.load("config/settings") == {"theme": "light", "added": [1, 2]}
    (tmp_path / "files" / "handmade.json").write_text('"written by a person"')
    assert file_store.load("handmade") == "written by a person"
    assert "handmade" in list(file_store.keys())


def test_extended_types_stay_valid_json(file_store, tmp_path):
    import datetime as dt
    value = {"when": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), "t": (1, 2)}
    file_store.save("x", value)
    json.loads((tmp_path / "files" / "x.json").read_text())
    assert file_store.load("x") == value


def test_ttl_wrapper_puts_expires_at_first(tmp_path):
    clock = FakeClock(1_763_830_000.5)
    s = FileStore(base_path=tmp_path / "files", clock=clock)
    s.save("otp", {"code": "123"}, ttl=30)
    text = (tmp_path / "files" / "otp.json").read_text()
    assert text.startswith('{"__kv__": "ttl", "expires_at": 1763830030.5')
    assert json.loads(text) == {"__kv__": "ttl", "expires_at": 1763830030.5,
                                "value": {"code": "123"}}
    assert s.ttl("otp") == pytest.approx(30)
    assert list(s.keys()) == ["otp"]
    clock.advance(30)
    assert s.load("otp") is None and not s.exists("otp") and list(s.keys()) == []
    assert s.load_many(["otp"]) == {}
    assert not (tmp_path / "files" / "otp.json").exists()


def test_user_dict_shaped_like_the_wrapper_is_just_data(file_store):
    evil = {"__kv__": "ttl", "expires_at": 1, "value": "gotcha"}
    file_store.save("evil", evil)
    assert file_store.load("evil") == evil
    assert list(file_store.keys()) == ["evil"]
    assert file_store.ttl("evil") is None
    file_store.save("evil2", evil, ttl=60)
    assert file_store.load("evil2") == evil


def test_hand_reformatted_wrapper_is_still_understood(tmp_path):
    clock = FakeClock(1000.0)
    s = FileStore(base_path=tmp_path / "files", clock=clock)
    (tmp_path / "files" / "k.json").write_text(
        '{\n\n\n   "value": [1, 2],\n "expires_at": 1010,\n "__kv__": "ttl"}')
    assert s.load("k") == [1, 2]
    assert list(s.keys()) == ["k"]
    clock.advance(20)
    assert list(s.keys()) == [] and s.load("k") is None


def test_no_temp_files_after_saves_and_stale_ones_are_swept(file_store, tmp_path):
    for i in range(30):
        file_store.save(f"k/{i % 3}/{i}", i, ttl=None if i % 2 else 60)
    file_store.save_many({f"m/{i}": i for i in range(30)})
    for i in range(5):
        file_store.incr("counter")
    temps = [n for _, _, names in os.walk(tmp_path) for n in names if n.startswith(".tmp-")]
    assert temps == []
    stale = tmp_path / "files" / "k" / ".tmp-deadbeef"
    fresh = tmp_path / "files" / "k" / ".tmp-feedface"
    stale.write_text("x")
    fresh.write_text("y")
    os.utime(stale, (0, 0))
    FileStore(base_path=tmp_path / "files").close()
    assert not stale.exists() and fresh.exists()
    assert "k/0/0" in set(file_store.keys())


def test_failed_apply_changes_nothing(file_store, tmp_path, monkeypatch):
    file_store.save("a", 1)
    file_store.save("b", 2)
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
        file_store.raw_apply([("a", file_store.encode("a", 10), None),
                              ("c", file_store.encode("c", 3), None), ("b", MISSING, None)])
    assert file_store.load("a") == 1 and file_store.load("b") == 2 and not file_store.exists("c")
    assert [n for _, _, names in os.walk(tmp_path) for n in names if n.startswith(".tmp-")] == []


def test_snapshot_blobs_migrate_to_another_store(file_store, tmp_path):
    file_store.save("n", 5)
    file_store.save("d", {"t": (1, 2)}, ttl=100)
    db = SQLiteStore(path=tmp_path / "store-db" / "x.db")
    try:
        assert migrate(file_store, db) == 2
        assert db.load("n") == 5 and db.load("d") == {"t": (1, 2)}
        assert 0 < db.ttl("d") <= 100
        back = FileStore(base_path=tmp_path / "files" / "copy", format="msgpack")
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
