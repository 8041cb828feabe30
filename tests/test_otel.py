"""kvstore.contrib.otel: spans and metrics per operation and commit, read back from the SDK's
in-memory exporters, on both managers and on plain stores; never a key, a value or a secret."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any, Iterator

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter)
from opentelemetry.trace import StatusCode  # noqa: E402

from conftest import HAVE_REDIS_SERVER  # noqa: E402
from kvstore import (MemoryStore, PersistenceManager, SerializationError,  # noqa: E402
                     observe)
from kvstore.aio import AsyncPersistenceManager, async_store  # noqa: E402
from kvstore.contrib.otel import instrument, is_instrumented, uninstrument  # noqa: E402

CATEGORIES = {"preferences": {"store": "database"}, "config": {"store": "file"},
              "session": {"store": "memory"}}
# Text that must never appear in an attribute: the keys' own part, the values.
KEY_TEXT = "ann-4f1c"
VALUE_TEXT = "dark-theme-9e2"


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        instrument(tracer_provider=tracer_provider,
                   meter_provider=MeterProvider(metric_readers=[self.reader]))

    def finished(self) -> list[Any]:
        return list(self.spans.get_finished_spans())

    def by_name(self) -> list[tuple[str, dict[str, Any]]]:
        return [(s.name, dict(s.attributes)) for s in self.finished()]

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """{metric name: [(attributes, value or histogram count)]}."""
        found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        found.setdefault(metric.name, []).append(
                            (dict(point.attributes), point.count if value is None else value))
        return found

    def assert_nothing_secret(self) -> None:
        texts = [str(v) for s in self.finished() for v in s.attributes.values()]
        texts += [str(s.status.description) for s in self.finished()]
        texts += [str(v) for points in self.metrics().values() for attrs, _ in points
                  for v in attrs.values()]
        for text in texts:
            assert KEY_TEXT not in text and VALUE_TEXT not in text, text
            assert "s3cr3t" not in text, text


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    try:
        yield telemetry
    finally:
        uninstrument()
    assert not is_instrumented()


def _config(tmp_path: Any) -> dict[str, Any]:
    return {"persistence": {"sqlite": {"path": str(tmp_path / "app.db")},
                            "file": {"base_path": str(tmp_path / "files")},
                            "categories": CATEGORIES}}


def test_a_span_per_manager_operation_with_store_category_and_outcome(otel, tmp_path, data_dir):
    with PersistenceManager.from_config(_config(tmp_path)) as pm:
        pm.save(f"preferences:{KEY_TEXT}", {"theme": VALUE_TEXT})
        assert pm.load(f"preferences:{KEY_TEXT}") == {"theme": VALUE_TEXT}
        assert pm.load(f"preferences:{KEY_TEXT}-nope", "dflt") == "dflt"
        assert pm.load(f"preferences:{KEY_TEXT}-nope", default=7) == 7
        assert pm.exists(f"config:{KEY_TEXT}") is False
        assert pm.incr(f"session:{KEY_TEXT}") == 1
        pm.save_many({f"config:{KEY_TEXT}{i}": VALUE_TEXT for i in range(3)})
        keys = (f"config:{KEY_TEXT}{i}" for i in range(4))  # a generator: read once, still
        assert len(pm.load_many(keys)) == 3
        assert pm.load(KEY_TEXT) is None  # no category: default_store
        assert pm.delete(f"other:{KEY_TEXT}", store="file") is False
        with pytest.raises(SerializationError):
            pm.save(f"preferences:{KEY_TEXT}", object())
    spans = otel.by_name()
    assert [name for name, _ in spans] == [
        "kvstore.save", "kvstore.load", "kvstore.load", "kvstore.load", "kvstore.exists",
        "kvstore.incr", "kvstore.save_many", "kvstore.load_many", "kvstore.load",
        "kvstore.delete", "kvstore.save"]  # one per call: the store calls inside are not spans
    first = spans[0][1]
    assert first == {"kvstore.operation": "save", "kvstore.store": "database",
                     "kvstore.store.kind": "sqlite", "kvstore.category": "preferences",
                     "kvstore.outcome": "ok"}
    assert [a["kvstore.outcome"] for _, a in spans] == [
        "ok", "ok", "miss", "miss", "miss", "ok", "ok", "ok", "miss", "miss",
        "SerializationError"]
    assert spans[4][1]["kvstore.store.kind"] == "file" and spans[5][1]["kvstore.store"] == "memory"
    assert spans[6][1]["kvstore.keys"] == 3 and spans[7][1]["kvstore.keys"] == 4
    assert spans[7][1]["kvstore.category"] == "config" and spans[7][1]["kvstore.store"] == "file"
    assert "kvstore.category" not in spans[8][1] and spans[8][1]["kvstore.store"] == "database"
    assert spans[9][1]["kvstore.store"] == "file" and "kvstore.category" not in spans[9][1]
    failed = otel.finished()[-1]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "SerializationError" and not failed.events
    otel.assert_nothing_secret()
    metrics = otel.metrics()
    ops: dict[tuple[str, str], int] = {}
    for a, n in metrics["kvstore.operations"]:
        if a.get("kvstore.store") == "database":
            op = (a["kvstore.operation"], a["kvstore.outcome"])
            ops[op] = ops.get(op, 0) + n
    assert ops[("save", "ok")] == 1 and ops[("load", "miss")] == 3  # two misses + no category
    assert ops[("save", "SerializationError")] == 1
    [(error_attrs, errors)] = metrics["kvstore.errors"]
    assert errors == 1 and error_attrs["kvstore.outcome"] == "SerializationError"
    durations = sum(n for _, n in metrics["kvstore.operation.duration"])
    assert durations == len(spans)


def test_a_transaction_commit_is_a_span(otel, tmp_path, data_dir):
    with PersistenceManager.from_config(_config(tmp_path)) as pm:
        with pm.transaction() as tx:
            tx.save(f"preferences:{KEY_TEXT}", VALUE_TEXT)
            tx.save(f"config:{KEY_TEXT}", VALUE_TEXT)
        with pytest.raises(RuntimeError):
            with pm.transaction() as tx:  # an exception in the block: nothing committed
                tx.save(f"preferences:{KEY_TEXT}", 2)
                raise RuntimeError("no")
        assert pm.load(f"config:{KEY_TEXT}") == VALUE_TEXT
    assert otel.by_name() == [("kvstore.commit", {"kvstore.operation": "commit",
                                                  "kvstore.outcome": "ok"}),
                              ("kvstore.load", {"kvstore.operation": "load",
                                                "kvstore.store": "file",
                                                "kvstore.store.kind": "file",
                                                "kvstore.category": "config",
                                                "kvstore.outcome": "ok"})]
    otel.assert_nothing_secret()


def test_the_async_manager_and_its_commits_are_traced_the_same(otel, tmp_path, data_dir):
    async def main() -> None:
        async with AsyncPersistenceManager.from_config(_config(tmp_path)) as pm:
            await pm.save(f"preferences:{KEY_TEXT}", VALUE_TEXT)
            assert await pm.load(f"preferences:{KEY_TEXT}-nope", "d") == "d"
            async with pm.transaction() as tx:
                tx.save(f"config:{KEY_TEXT}", VALUE_TEXT)
            await pm.log(f"config:{KEY_TEXT}").append(VALUE_TEXT)

    asyncio.run(main())
    spans = otel.by_name()
    assert [(n, a["kvstore.outcome"]) for n, a in spans] == [
        ("kvstore.save", "ok"), ("kvstore.load", "miss"), ("kvstore.commit", "ok"),
        ("kvstore.log_append", "ok")]
    assert spans[0][1]["kvstore.store"] == "database" and spans[0][1]["kvstore.store.kind"] == "sqlite"
    assert spans[3][1]["kvstore.store.kind"] == "file"
    otel.assert_nothing_secret()


def test_plain_stores_sync_and_async(otel):
    store = MemoryStore()
    store.save(KEY_TEXT, VALUE_TEXT)
    assert store.load(KEY_TEXT) == VALUE_TEXT and store.load("nope", 5) == 5
    assert store.get_or_set(KEY_TEXT + "2", lambda: VALUE_TEXT) == VALUE_TEXT  # one span
    log = store.log(f"t:{KEY_TEXT}")
    log.append(VALUE_TEXT)
    assert log.read() == [(1, VALUE_TEXT)]

    async def main() -> None:
        face = async_store(MemoryStore())
        await face.save(KEY_TEXT, VALUE_TEXT)
        assert await face.load("nope") is None

    asyncio.run(main())
    assert [(n, a["kvstore.outcome"], a["kvstore.store.kind"]) for n, a in otel.by_name()] == [
        ("kvstore.save", "ok", "memory"), ("kvstore.load", "ok", "memory"),
        ("kvstore.load", "miss", "memory"), ("kvstore.get_or_set", "ok", "memory"),
        ("kvstore.log_append", "ok", "memory"), ("kvstore.log_read", "ok", "memory"),
        ("kvstore.save", "ok", "memory"), ("kvstore.load", "miss", "memory")]
    otel.assert_nothing_secret()


def test_uninstrument_stops_the_spans_and_puts_the_methods_back(tmp_path, data_dir):
    original = PersistenceManager.save
    telemetry = Telemetry()
    assert PersistenceManager.save is not original
    uninstrument()
    assert PersistenceManager.save is original and "save" not in PersistenceManager.__dict__
    with PersistenceManager.from_config(_config(tmp_path)) as pm:
        pm.save("preferences:x", 1)
        seen: list[Any] = []
        pm.on("save", seen.append)
        pm.save("preferences:y", 1)
    assert telemetry.finished() == [] and seen[0].size  # events' sizes are as before


def test_save_events_keep_their_size_while_instrumented(otel, tmp_path, data_dir):
    with PersistenceManager.from_config(_config(tmp_path)) as pm:
        seen: list[Any] = []
        pm.on("save", seen.append)
        pm.save("preferences:y", VALUE_TEXT)
    assert seen[0].size and seen[0].size > len(VALUE_TEXT)


def test_near_cache_hook_and_fallback_counter(otel):
    observe.near("cache", True)
    observe.near("cache", True)
    observe.near("cache", False)
    observe.signal("fallback", store="RedisStore(url='redis://***@h:1/0')", kind="RedisStore",
                   error=RuntimeError("x"))
    metrics = otel.metrics()
    near = {a["kvstore.result"]: n for a, n in metrics["kvstore.near_cache"]}
    assert near == {"hit": 2, "miss": 1}
    assert metrics["kvstore.fallbacks"] == [({"kvstore.store.kind": "RedisStore"}, 1)]


@pytest.mark.skipif(not HAVE_REDIS_SERVER, reason="redis-server / redis-cli not on PATH")
def test_a_real_redis_outage_counts_one_fallback_and_masks_the_url(otel, tmp_path, data_dir):
    import redis

    from redis_servers import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    try:
        redis.Redis(port=server.port).config_set("requirepass", "s3cr3t")
        config = _config(tmp_path)
        config["persistence"]["redis"] = {
            "url": f"redis://:s3cr3t@127.0.0.1:{server.port}/0", "socket_timeout": 0.3,
            "connect_timeout": 0.3, "fallback": "database"}
        config["persistence"]["categories"]["q"] = {"store": "cache"}
        with PersistenceManager.from_config(config) as pm:
            pm.save(f"q:{KEY_TEXT}", VALUE_TEXT)
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                pm.save(f"q:{KEY_TEXT}", VALUE_TEXT)  # served by the fallback
                pm.save(f"q:{KEY_TEXT}2", VALUE_TEXT)
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
    finally:
        server.stop()
    metrics = otel.metrics()
    assert metrics["kvstore.fallbacks"] == [({"kvstore.store.kind": "redis"}, 1)]
    saves = [a for n, a in otel.by_name() if n == "kvstore.save"]
    assert [a["kvstore.store.kind"] for a in saves] == ["fallback"] * 3
    assert all(a["kvstore.outcome"] == "ok" for a in saves)
    otel.assert_nothing_secret()


def test_a_manager_call_inside_a_factory_is_its_own_span(otel, tmp_path, data_dir):
    with PersistenceManager.from_config(_config(tmp_path)) as pm:
        pm.save("config:seed", 1)
        assert pm.get_or_set("preferences:k", lambda: pm.load("config:seed") + 1) == 2
    finished = otel.finished()
    names = [s.name for s in finished]
    assert names == ["kvstore.save", "kvstore.load", "kvstore.get_or_set"]
    inner, outer = finished[1], finished[2]
    assert inner.attributes["kvstore.store"] == "file"
    assert outer.attributes["kvstore.store"] == "database"
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id


def test_a_store_replaced_in_pm_stores_is_named_by_its_new_kind(otel, tmp_path, data_dir):
    with PersistenceManager.from_config(_config(tmp_path)) as pm:
        pm.save("config:a", 1)
        pm.stores["file"] = MemoryStore()
        pm.save("config:a", 1)
    assert [a["kvstore.store.kind"] for _, a in otel.by_name()] == ["file", "memory"]


def test_the_yaml_switch_instruments_when_a_manager_opens(tmp_path, data_dir):
    from kvstore import ConfigError
    from kvstore.config import parse_config

    config = _config(tmp_path)
    config["persistence"]["telemetry"] = {"otel": True}
    assert not is_instrumented()
    try:
        with PersistenceManager.from_config(config) as pm:
            assert is_instrumented()  # with OpenTelemetry's global providers
            pm.save("config:a", 1)
    finally:
        uninstrument()
    telemetry = Telemetry()  # an application's own providers ...
    try:
        with PersistenceManager.from_config(config) as pm:
            pm.save("config:a", 1)
        assert [n for n, _ in telemetry.by_name()] == ["kvstore.save"]  # ... are kept
    finally:
        uninstrument()
    assert parse_config({"telemetry": {"otel": "off"}}).telemetry.otel is False
    with pytest.raises(ConfigError, match=r"persistence\.telemetry\.otle: unknown setting"):
        parse_config({"telemetry": {"otle": True}})
    with pytest.raises(ConfigError, match=r"persistence\.telemetry\.otel: expected true or false"):
        parse_config({"telemetry": {"otel": "maybe"}})


def test_the_yaml_switch_without_opentelemetry_names_the_extra(monkeypatch):
    import importlib.util

    from kvstore import ConfigError
    from kvstore.config import parse_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "opentelemetry" else real(name, *a))
    with pytest.raises(ConfigError, match=r"telemetry\.otel: needs OpenTelemetry: pip install "
                                          r"kvstore\[otel\]"):
        parse_config({"telemetry": {"otel": True}})
    assert parse_config({"telemetry": {"otel": False}}).telemetry.otel is False
