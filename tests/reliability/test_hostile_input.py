"""Hostile input, generated with hypothesis: every key and value either round-trips exactly or
raises a documented error (InvalidKeyError / InvalidTTLError are ValueErrors; SerializationError),
and no file is ever created outside the file store's folder."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvstore import (FileStore, InvalidKeyError, MemoryStore, SerializationError, SQLiteStore)
from kvstore.keyrules import MAX_KEY_BYTES
from kvstore.nesting import MAX_DEPTH

COUNTER = {"inputs": 0}

PATHY = st.sampled_from(["..", ".", "../x", "a/../../x", "/etc/passwd", "a//b", "a/", "/", "\x00",
                         "a\x00b", "C:\\x", "..\\..\\x", "%2e%2e/x", "~/x", "a/./b", ".hidden",
                         "con", "x" * 10_000, "é/" * 300, "\ud800", "a\nb", " ", "-rf"])
KEYS = st.one_of(st.text(min_size=1, max_size=60), PATHY,
                 st.lists(st.sampled_from(["..", ".", "a", "%", "/", "\\", "\x00", "é"]),
                          min_size=1, max_size=8).map("".join))

LEAVES = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
          | st.text() | st.binary(max_size=64))
VALUES = st.recursive(
    LEAVES,
    lambda kids: (st.lists(kids, max_size=4) | st.tuples(kids, kids)
                  | st.dictionaries(st.text(max_size=8) | st.integers() | st.booleans(), kids, max_size=4)
                  | st.frozensets(st.integers(), max_size=3)),
    max_leaves=20)


def _same(a, b) -> bool:
    """Equality that treats NaN as equal to NaN (the stored value must be the same bits)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _files_outside(root: Path, base: Path) -> list[str]:
    out = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            if base not in path.parents:
                out.append(str(path))
    return out


@pytest.fixture(scope="module")
def stores():
    root = Path(tempfile.mkdtemp(prefix="kv-hostile-"))
    made = {
        "memory": MemoryStore(serializer="msgpack"),
        "sqlite": SQLiteStore(path=root / "db" / "h.db"),
        "file-json": FileStore(base_path=root / "files"),
        "file-msgpack": FileStore(base_path=root / "mfiles", format="msgpack"),
    }
    yield root, made
    for store in made.values():
        store.close()
    print(f"\nhostile inputs tried: {COUNTER['inputs']}")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=KEYS, value=VALUES)
def test_keys_and_values_round_trip_or_raise_documented_errors(stores, key, value):
    root, made = stores
    for name, store in made.items():
        COUNTER["inputs"] += 1
        try:
            store.save(key, value)
        except InvalidKeyError:
            with pytest.raises(InvalidKeyError):
                store.load(key)
            continue
        except SerializationError:
            continue
        assert _same(store.load(key), value), (name, key)
        assert key in set(store.keys())
        assert store.delete(key)
    outside = [p for p in _files_outside(root, root / "files") if not p.startswith(
        (str(root / "db"), str(root / "mfiles")))]
    assert outside == []
    for folder in ("files", "mfiles"):
        assert _files_outside(root / folder, root / folder) == []


def test_deep_nesting_is_refused_not_stored_unreadable(tmp_path):
    """One limit in every format: 100,000 levels (past every codec's own limit) and one level
    past MAX_DEPTH are both refused before anything is written."""
    stores = [SQLiteStore(path=tmp_path / "d.db"),
              SQLiteStore(path=tmp_path / "m.db", serializer="msgpack"),
              FileStore(base_path=tmp_path / "j"), FileStore(base_path=tmp_path / "m", format="msgpack"),
              MemoryStore(serializer="msgpack")]
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    ok: list = []
    for _ in range(MAX_DEPTH - 1):
        ok = [ok]
    for store in stores:
        for bad in (deep, [ok]):
            with pytest.raises(SerializationError, match="'deep'"):
                store.save("deep", bad)
            assert not store.exists("deep")
        store.save("ok", ok)
        assert store.load("ok") == ok


def test_huge_value_and_huge_key(tmp_path):
    store = SQLiteStore(path=tmp_path / "h.db")
    big = os.urandom(20 * 1024 * 1024)
    store.save("big", big)
    assert store.load("big") == big
    longest = "k" * MAX_KEY_BYTES
    store.save(longest, 1)
    assert store.load(longest) == 1
    # One byte more would not fit PostgreSQL's key index: refused on every store alike.
    for target in (store, MemoryStore(), FileStore(base_path=tmp_path / "f")):
        with pytest.raises(InvalidKeyError):
            target.save(longest + "k", 1)
        with pytest.raises(InvalidKeyError):
            target.save("k" * 10_000, 1)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), {1: "a", (2, 3): "b"},
                                   {True: 1, None: 2}, [[[[]]]], ""])
def test_special_values_round_trip_in_every_format(tmp_path, value):
    for store in (SQLiteStore(path=tmp_path / "s.db"), FileStore(base_path=tmp_path / "j"),
                  FileStore(base_path=tmp_path / "m", format="msgpack"),
                  MemoryStore(serializer="json")):
        store.save("special", value)
        assert _same(store.load("special"), value), type(store).__name__


def test_nul_keys_left_by_older_versions_stay_listed_and_removable(tmp_path):
    """Older versions let SQLite store a key with NUL. It is still listed and read by keys() and
    items(), removed by clear(prefix), and copying it to another store (import, migrate, the
    restore of a backup into another kind of store) is refused with the key named."""
    import io
    import sqlite3

    from kvstore.transfer import export_jsonl, import_jsonl, migrate

    store = SQLiteStore(path=tmp_path / "old.db")
    store.save("legacy:ok", 1)
    with sqlite3.connect(store.path) as db:  # what an older version wrote
        db.execute("INSERT INTO kvstore (key, value) VALUES (?, ?)", ("legacy:a\x00b", b"\xc1j-2"))
    assert list(store.keys()) == ["legacy:a\x00b", "legacy:ok"]
    assert dict(store.items()) == {"legacy:a\x00b": 2, "legacy:ok": 1}
    with pytest.raises(InvalidKeyError, match=r"'legacy:a\\x00b'"):
        store.load("legacy:a\x00b")
    out = io.StringIO()
    assert export_jsonl(store, out) == 2
    for copy in (lambda t: import_jsonl(t, io.StringIO(out.getvalue())), lambda t: migrate(store, t)):
        with pytest.raises(InvalidKeyError, match=r"'legacy:a\\x00b'"):
            copy(MemoryStore(serializer="json"))
    assert store.clear(prefix="legacy:a") == 1
    assert list(store.keys()) == ["legacy:ok"]
