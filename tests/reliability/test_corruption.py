"""Damaged data and hostile pickles: the damaged key raises CorruptDataError naming it, every
other key still loads, keys() still works, and no unsigned or tampered pickle is ever unpickled."""

from __future__ import annotations

import os
import pickle
import sqlite3
import uuid
from pathlib import Path

import pytest

from kvstore import (CorruptDataError, FileStore, RedisStore, SerializationError, Serializer,
                     SQLiteStore)

from conftest import REDIS_URL  # noqa: E402  (empty means unset)


def _redis() -> RedisStore:
    if REDIS_URL:
        return RedisStore(url=REDIS_URL, key_prefix=f"kvtest:{uuid.uuid4().hex[:8]}:", ttl_default=None)
    import fakeredis

    return RedisStore(client=fakeredis.FakeRedis(), ttl_default=None)


def _fill(store):
    for i in range(5):
        store.save(f"good:{i}", {"i": i})
    store.save("victim", {"precious": True})


def _assert_isolated(store):
    with pytest.raises(CorruptDataError) as err:
        store.load("victim")
    assert "victim" in str(err.value)
    for i in range(5):
        assert store.load(f"good:{i}") == {"i": i}
    assert sorted(store.keys()) == ["good:0", "good:1", "good:2", "good:3", "good:4", "victim"]
    assert store.load_many(["good:1", "good:2"]) == {"good:1": {"i": 1}, "good:2": {"i": 2}}
    with pytest.raises(CorruptDataError) as err:
        store.load_many(["good:1", "victim", "good:2"])
    assert "victim" in str(err.value)
    store.save("victim", "repaired")  # a damaged key can be overwritten
    assert store.load("victim") == "repaired"


@pytest.mark.parametrize("damage", ["truncate", "garble", "empty", "binary-noise"])
@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_damaged_value_file(tmp_path, damage, fmt):
    store = FileStore(base_path=tmp_path / "f", format=fmt)
    _fill(store)
    path = next(p for p in (tmp_path / "f").iterdir() if p.name.startswith("victim"))
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garble": data[:3] + b"\x00garbage{[",
                      "empty": b"", "binary-noise": os.urandom(64)}[damage])
    _assert_isolated(store)
    # A key under a TTL wrapper, damaged, names itself too; a damaged key can still be removed.
    store.save("wrapped", {"w": 1}, ttl=100)
    wrapped = next(p for p in (tmp_path / "f").iterdir() if p.name.startswith("wrapped"))
    wrapped.write_bytes(b"\xc1t\x00{garbage")
    with pytest.raises(CorruptDataError, match="'wrapped'"):
        store.load("wrapped")
    assert "wrapped" in set(store.keys())
    assert store.delete("wrapped") and "wrapped" not in set(store.keys())


@pytest.mark.parametrize("blob", [b"\xc1j-{not json", b"\xc1m-\xc1\xc1", b"\xc1z-???", b"garbage",
                                  b"\xc1j-"])
def test_garbled_sqlite_row(tmp_path, blob):
    store = SQLiteStore(path=tmp_path / "c.db")
    _fill(store)
    con = sqlite3.connect(tmp_path / "c.db")
    con.execute("UPDATE kvstore SET value = ? WHERE key = 'victim'", (blob,))
    con.commit()
    con.close()
    _assert_isolated(store)


@pytest.mark.parametrize("blob", [b"\xc1m-\xc1", b"random bytes", b"\xc1j-[1,2"])
def test_garbled_redis_value(blob):
    store = _redis()
    try:
        _fill(store)
        store._client.set(store.key_prefix + "victim", blob)
        _assert_isolated(store)
    finally:
        store.clear()


def test_damaged_sqlite_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CorruptDataError) as err:
        SQLiteStore(path=path)
    assert str(path) in str(err.value)


# -- pickle ---------------------------------------------------------------------------------------


class Evil:
    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _payloads(marker: Path) -> dict[str, bytes]:
    Evil.marker = str(marker)
    raw = pickle.dumps(Evil())
    signed = Serializer("pickle", secret=b"someone-else").serialize(Evil())
    ours = Serializer("pickle", secret=b"our-secret").serialize({"fine": 1})
    return {
        "raw-pickle": raw,
        "unsigned-with-header": b"\xc1p-" + b"\x00" * 32 + raw,
        "signed-with-wrong-secret": signed,
        "tampered": ours[:-2] + raw[-2:],
        "gzip-unsigned": b"\xc1pz" + b"\x00" * 32 + raw,
    }


def _stores(tmp_path: Path):
    secret = b"our-secret"
    sqlite_store = SQLiteStore(path=tmp_path / "p.db", serializer="pickle", secret=secret)

    def put_sqlite(blob):
        con = sqlite3.connect(tmp_path / "p.db")
        con.execute("INSERT OR REPLACE INTO kvstore VALUES ('evil', ?, NULL)", (blob,))
        con.commit()
        con.close()

    file_store = FileStore(base_path=tmp_path / "pf", format="pickle", secret=secret)

    def put_file(blob):
        (tmp_path / "pf" / "evil.pickle").write_bytes(blob)

    redis_store = _redis()
    redis_store.serializer = Serializer("pickle", secret=secret)

    def put_redis(blob):
        redis_store._client.set(redis_store.key_prefix + "evil", blob)

    return [(sqlite_store, put_sqlite), (file_store, put_file), (redis_store, put_redis)]


@pytest.mark.parametrize("name", ["raw-pickle", "unsigned-with-header", "signed-with-wrong-secret",
                                  "tampered", "gzip-unsigned"])
def test_hostile_pickle_is_never_unpickled(tmp_path, name):
    marker = tmp_path / f"pwned-{name}"
    blob = _payloads(marker)[name]
    for store, put in _stores(tmp_path):
        put(blob)
        with pytest.raises(SerializationError):
            store.load("evil")
        with pytest.raises(SerializationError):
            store.load_many(["evil"])
        assert not marker.exists(), f"{type(store).__name__} ran the payload"
        store.save("fine", {"ok": [1, 2]})
        assert store.load("fine") == {"ok": [1, 2]}
        if isinstance(store, RedisStore):
            store.clear()
