"""Serializer behaviour users rely on: round trips, explicit headers, signed pickle."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import pickle
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore import ConfigError, CorruptDataError, SerializationError, Serializer
from kvstore.nesting import MAX_DEPTH

SECRET = b"test-secret"
ALL = [("json", None), ("json", "gzip"), ("msgpack", None), ("msgpack", "gzip"),
       ("pickle", None), ("pickle", "gzip")]

SAMPLE = {
    "when": dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=-8))),
    "day": dt.date(2026, 1, 1),
    "at": dt.time(12, 30, 15),
    "span": dt.timedelta(days=2, seconds=5, microseconds=7),
    "raw": b"\x00\x01\xfe",
    "id": uuid.UUID(int=42),
    "amount": Decimal("0.10"),
    "set": {1, 2, 3},
    "frozen": frozenset({"x"}),
    "tuple": (1, "two", (3.0,)),
    1: "int key",
    (1, 2): "tuple key",
    "__kv__": "a user key that looks like our tag",
    "nan_free": [1.5, -0.0],
    "big": 2**80,
}


def make(fmt: str, comp: str | None) -> Serializer:
    return Serializer(fmt, compression=comp, secret=SECRET if fmt == "pickle" else None)


@pytest.mark.parametrize("fmt,comp", ALL)
def test_round_trip_extended_types(fmt, comp):
    s = make(fmt, comp)
    out = s.deserialize(s.serialize(SAMPLE))
    assert out == SAMPLE
    assert out["when"].utcoffset() == dt.timedelta(hours=-8)
    assert type(out["tuple"]) is tuple and type(out["tuple"][2]) is tuple


@pytest.mark.parametrize("fmt,comp", ALL)
def test_non_finite_floats_round_trip(fmt, comp):
    s = make(fmt, comp)
    out = s.deserialize(s.serialize([float("inf"), float("-inf"), float("nan")]))
    assert out[0] == math.inf and out[1] == -math.inf and math.isnan(out[2])


def test_json_output_is_strict_json():
    import json

    body = Serializer("json").serialize({"x": float("nan"), "t": (1,)})[3:]
    json.loads(body, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


@pytest.mark.parametrize("fmt,comp", ALL)
def test_detect_names_the_format(fmt, comp):
    blob = make(fmt, comp).serialize({"a": 1})
    assert Serializer.detect(blob) == (fmt if comp is None else f"{fmt}+{comp}")


def test_header_is_explicit_not_guessed():
    blob = Serializer("msgpack").serialize(48)
    assert Serializer.detect(blob) == "msgpack"
    assert Serializer("json").deserialize(blob) == 48
    assert Serializer.detect(Serializer("json").serialize(48)) == "json"
    with pytest.raises(CorruptDataError):
        Serializer.detect(b"0")
    with pytest.raises(CorruptDataError):
        Serializer("json").deserialize(b'{"plain": "json without header"}')


@pytest.mark.parametrize("writer", ["json", "msgpack", "json+gzip", "msgpack+gzip"])
@pytest.mark.parametrize("reader", ["json", "msgpack"])
def test_reads_blobs_written_by_another_format(writer, reader):
    blob = Serializer.resolve(writer).serialize(SAMPLE)
    assert Serializer.resolve(reader).deserialize(blob) == SAMPLE


def test_pickle_needs_a_secret():
    with pytest.raises(ConfigError):
        Serializer("pickle")
    with pytest.raises(ConfigError):
        Serializer("pickle", secret="")
    s = Serializer("pickle", secret="a str secret works")
    assert s.deserialize(s.serialize([1, 2])) == [1, 2]


class _Marker:
    """Unpickling this creates a file: proof that a payload ran code."""

    path = ""

    def __reduce__(self):
        return (open, (self.path, "w"))


def _evil_blob(tmp_path: Path, secret: bytes) -> tuple[bytes, Path]:
    marker = tmp_path / "pwned"
    _Marker.path = str(marker)
    return Serializer("pickle", secret=secret).serialize(_Marker()), marker


def test_tampered_pickle_is_never_unpickled(tmp_path):
    blob, marker = _evil_blob(tmp_path, SECRET)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(SerializationError):
        Serializer("pickle", secret=SECRET).deserialize(tampered)
    assert not marker.exists()


def test_pickle_signed_with_another_secret_is_refused(tmp_path):
    blob, marker = _evil_blob(tmp_path, b"attacker")
    with pytest.raises(SerializationError):
        Serializer("pickle", secret=SECRET).deserialize(blob)
    assert not marker.exists()


def test_unsigned_pickle_with_forged_header_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    _Marker.path = str(marker)
    forged = b"\xc1p-" + b"\x00" * 32 + pickle.dumps(_Marker())
    for reader in (Serializer("json"), Serializer("msgpack"), Serializer("pickle", secret=SECRET)):
        with pytest.raises(SerializationError):
            reader.deserialize(forged)
    assert not marker.exists()


def test_pickle_blob_is_not_unpickled_by_a_serializer_without_secret(tmp_path):
    blob, marker = _evil_blob(tmp_path, SECRET)
    with pytest.raises(SerializationError):
        Serializer("json").deserialize(blob)
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_unsupported_type_names_the_type(fmt):
    with pytest.raises(SerializationError) as err:
        Serializer(fmt).serialize({"x": object()})
    assert "object" in str(err.value)


@pytest.mark.parametrize("fmt,comp", ALL)
def test_truncated_blob_is_corrupt(fmt, comp):
    s = make(fmt, comp)
    blob = s.serialize({"a": "b" * 100})
    with pytest.raises(CorruptDataError):
        s.deserialize(blob[: len(blob) // 2])


def test_unknown_format_and_compression_are_config_errors():
    with pytest.raises(ConfigError):
        Serializer("yaml")
    with pytest.raises(ConfigError):
        Serializer("json", compression="zstd")
    with pytest.raises(ConfigError):
        Serializer.resolve(42)  # type: ignore[arg-type]


def test_repr_hides_the_secret():
    assert "test-secret" not in repr(Serializer("pickle", secret=SECRET))


def test_gzip_shrinks_repetitive_data():
    data = {"text": "abc" * 10000}
    assert len(Serializer("json", compression="gzip").serialize(data)) < \
        len(Serializer("json").serialize(data)) / 10


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | st.binary() | st.datetimes(),
    lambda children: st.lists(children, max_size=5) | st.tuples(children, children)
    | st.dictionaries(st.text() | st.integers(), children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(json_like)
def test_property_round_trip(value):
    for fmt in ("json", "msgpack"):
        s = Serializer(fmt)
        assert s.deserialize(s.serialize(value)) == value


def test_no_marker_left_in_cwd():
    assert not os.path.exists("pwned")


# -- one nesting limit for every format (kvstore.nesting) --------------------------------------------


@dataclasses.dataclass
class _Box:
    inside: object


_WRAPS = {
    "list": lambda v, i: [v],
    "dict": lambda v, i: {"k": v},
    "tuple": lambda v, i: (v,),
    "int-key dict": lambda v, i: {1: v},
    "frozenset": lambda v, i: frozenset([v]),
    "dataclass": lambda v, i: _Box(v),
    "mixed": lambda v, i: ([v], {"k": v}, (v,), _Box(v))[i % 4],
}


def _nested(kind: str, depth: int, inner: object = 1) -> object:
    """``depth`` containers of ``kind`` in one another (``inner`` being the last, if it is one)."""
    value = inner
    for i in range(depth - (1 if isinstance(inner, (list, frozenset)) else 0)):
        value = _WRAPS[kind](value, i)
    return value


@pytest.mark.parametrize("kind", list(_WRAPS))
@pytest.mark.parametrize("fmt,comp", ALL)
def test_every_format_takes_the_limit_and_refuses_one_more(fmt, comp, kind):
    s = Serializer(fmt, compression=comp, secret=SECRET)
    empty = frozenset() if kind == "frozenset" else []
    for at_limit in (_nested(kind, MAX_DEPTH), _nested(kind, MAX_DEPTH, inner=empty)):
        back = s.deserialize(s.serialize(at_limit))
        assert back == at_limit or kind in ("dataclass", "mixed")  # dataclasses come back as dicts
    for too_deep in (_nested(kind, MAX_DEPTH + 1), _nested(kind, MAX_DEPTH + 1, inner=empty)):
        with pytest.raises(SerializationError, match=f"deeper than {MAX_DEPTH} levels"):
            s.serialize(too_deep)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_batch_encoder_applies_the_limit(fmt):
    encode = Serializer(fmt).batch_encoder()
    assert encode(_nested("list", MAX_DEPTH))
    with pytest.raises(SerializationError, match=f"deeper than {MAX_DEPTH} levels"):
        encode(_nested("list", MAX_DEPTH + 1))


def _deep_blob(name: str, depth: int) -> bytes:
    """A blob nested ``depth`` deep, written by hand (kvstore itself refuses to write it)."""
    import msgpack

    if name == "json":
        return b"\xc1j-" + b"[" * depth + b"]" * depth
    if name == "msgpack":
        return b"\xc1m-" + b"\x91" * (depth - 1) + b"\x90"
    if name == "pickle":  # EMPTY_LIST opcodes, then APPENDs: lists in one another
        return b"\xc1p-\x80\x04" + b"]" * depth + b"a" * (depth - 1) + b"."
    tuples = msgpack.packb(1)
    for _ in range(depth):
        tuples = msgpack.packb(msgpack.ExtType(9, b"\x91" + tuples))
    return b"\xc1m-" + tuples


@pytest.mark.parametrize("name", ["json", "msgpack", "msgpack-tuples", "pickle"])
def test_decoding_refuses_blobs_nested_past_the_limit(name):
    s = Serializer("json", secret=SECRET)

    def signed(blob: bytes) -> bytes:
        if not blob.startswith(b"\xc1p-"):
            return blob
        import hashlib
        import hmac

        body = blob[3:]
        return blob[:3] + hmac.new(SECRET, blob[:3] + body, hashlib.sha256).digest() + body

    assert s.deserialize(signed(_deep_blob(name, MAX_DEPTH)))
    for depth in (MAX_DEPTH + 1, 1000, 3000 if name == "msgpack-tuples" else 100_000):
        with pytest.raises(CorruptDataError, match=f"deeper than {MAX_DEPTH} levels"):
            s.deserialize(signed(_deep_blob(name, depth)))


def test_nested_tuples_do_not_crash_the_reader():
    """On 195 nested tuples, msgpack.unpackb's 40 KB C stack frames per level crashed the
    process (SIGSEGV) on load, in any thread; run in a child so that a crash is a failure."""
    import subprocess
    import sys

    code = ("import threading; from kvstore import Serializer\n"
            "v = 1\nfor _ in range(200): v = (v,)\n"
            "s = Serializer('msgpack'); b = s.serialize(v)\n"
            "t = threading.Thread(target=lambda: print(s.deserialize(b) == v)); t.start(); t.join()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    assert (done.returncode, done.stdout.strip()) == (0, "True"), done.stderr[-500:]


def test_nesting_check_keeps_no_state_between_values_or_threads():
    """The check reuses a primed unpacker per thread: interleaved values of every size, in
    several threads at once, each get their own verdict."""
    import threading

    s = Serializer("msgpack")
    at_limit, past = _nested("list", MAX_DEPTH), _nested("list", MAX_DEPTH + 1)
    wide = [[i] for i in range(20_000)]  # bigger than the reused buffer
    errors: list[str] = []

    def run() -> None:
        for _ in range(50):
            for value, ok in ((at_limit, True), (past, False), (wide, True), ({"a": 1}, True)):
                try:
                    s.deserialize(s.serialize(value))
                    if not ok:
                        errors.append("accepted one level too deep")
                except SerializationError:
                    if ok:
                        errors.append(f"refused a value within the limit ({len(str(value))})")

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("body, value", [
    ('{"a":[1,"é"]}'.encode("utf-16"), {"a": [1, "é"]}),  # a BOM: read as json.loads reads it
    ('{"a":1}'.encode("utf-16-le"), {"a": 1}),  # NULs in the first bytes: UTF-16
    ('{"a":1}'.encode("utf-8-sig"), {"a": 1}),
    ('"\ud800"'.encode("utf-8", "surrogatepass"), "\ud800"),
    ('{"__kv__":"tuple","v":[1,2]}'.encode(), (1, 2)),
    (b" [1] ", [1]),
])
def test_json_blobs_read_as_json_loads_reads_their_bytes(body, value):
    assert Serializer("json").deserialize(b"\xc1j-" + body) == value


@pytest.mark.parametrize("body", [b"[1] x", b"\xff\xfe[", b"\xc3(", b""])
def test_damaged_json_blobs_are_refused(body):
    with pytest.raises(CorruptDataError):
        Serializer("json").deserialize(b"\xc1j-" + body)
