"""FileStore specifics: the key -> path mapping, plain editable JSON, TTL wrapper, path safety."""

from __future__ import annotations

import json
import os

import pytest

from kvstore import FileStore, InvalidKeyError

from conftest import FakeClock


@pytest.fixture
def store(tmp_path):
    s = FileStore(base_path=tmp_path / "files")
    yield s
    s.close()


def test_key_maps_to_a_readable_json_file(store, tmp_path):
    store.save("config/settings", {"theme": "dark", "size": 14})
    path = tmp_path / "files" / "config" / "settings.json"
    assert json.loads(path.read_text()) == {"theme": "dark", "size": 14}


def test_hand_edits_are_read_back(store, tmp_path):
    store.save("config/settings", {"theme": "dark"})
    path = tmp_path / "files" / "config" / "settings.json"
    path.write_text('{\n  "theme": "light",\n  "added": [1, 2]\n}\n')
    assert store.load("config/settings") == {"theme": "light", "added": [1, 2]}
    (tmp_path / "files" / "handmade.json").write_text('"written by a person"')
    assert store.load("handmade") == "written by a person"
    assert "handmade" in list(store.keys())


def test_ttl_lives_in_a_small_wrapper_and_expired_files_are_removed(tmp_path):
    clock = FakeClock()
    store = FileStore(base_path=tmp_path / "f", clock=clock)
    store.save("otp", "123456", ttl=30)
    data = json.loads((tmp_path / "f" / "otp.json").read_text())
    assert data == {"__kv__": "ttl", "expires_at": clock.now + 30, "value": "123456"}
    clock.advance(31)
    assert store.load("otp") is None
    assert not (tmp_path / "f" / "otp.json").exists()


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
def test_key_to_path_mapping(store, tmp_path, key, relpath):
    store.save(key, 1)
    assert (tmp_path / "files" / relpath).is_file()
    assert list(store.keys()) == [key]


def test_a_folder_never_collides_with_a_key(store):
    store.save("a", "file a")
    store.save("a.json/b", "inside")
    store.save("a/b", "nested")
    assert store.load("a") == "file a"
    assert store.load("a.json/b") == "inside"
    assert sorted(store.keys()) == ["a", "a.json/b", "a/b"]


@pytest.mark.parametrize("key", ["/etc/passwd", "a//b", "trailing/", "/", "x" * 300])
def test_unstorable_keys_raise_value_error(store, tmp_path, key):
    with pytest.raises(InvalidKeyError):
        store.save(key, 1)
    with pytest.raises(ValueError):
        store.load(key)
    assert [e.name for e in os.scandir(tmp_path)] == ["files"]
    assert [e.name for e in os.scandir(tmp_path / "files")] == []  # nothing written


def test_no_temp_files_left_behind(store, tmp_path):
    for i in range(20):
        store.save(f"k/{i}", i)
    store.save_many({f"m/{i}": i for i in range(20)})
    leftovers = [n for _, _, files in os.walk(tmp_path) for n in files if n.startswith(".tmp-")]
    assert leftovers == []


def test_empty_folders_are_removed_after_delete(store, tmp_path):
    store.save("deep/er/key", 1)
    store.delete("deep/er/key")
    assert not (tmp_path / "files" / "deep").exists()
