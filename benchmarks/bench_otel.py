"""OpenTelemetry's cost: ``pm.load``/``pm.save`` instrumented vs not (memory and SQLite stores).

    python benchmarks/bench_otel.py [--quick] [--json PATH]

Three runs of the same calls, alternating in three rounds (best kept): not instrumented (after
``uninstrument()`` from the second round on); ``instrument()`` with the API's no-op providers (no
SDK configured); with the SDK (every span kept and exported to an exporter that drops it,
metrics aggregated in memory). The ratio
column is the not-instrumented rate over each run's rate: what instrumenting costs. No target:
tracing every call is the user's choice; this says what it costs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

from _harness import VALUE, Report, measure, parser


def _calls(pm: Any, category: str, n: int) -> dict[str, Callable[[], None]]:
    keys = [f"{category}:k{i}" for i in range(n)]
    for key in keys:
        pm.save(key, VALUE)

    def load() -> None:
        for key in keys:
            pm.load(key)

    def save() -> None:
        for key in keys:
            pm.save(key, VALUE)

    return {"load": load, "save": save}


def _sdk() -> tuple[Any, Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(Drop()))
    return tracer_provider, MeterProvider(metric_readers=[InMemoryMetricReader()])


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    n = 2_000 if args.quick else 20_000
    from kvstore import PersistenceManager
    from kvstore.contrib.otel import instrument, uninstrument

    report = Report("otel")
    with tempfile.TemporaryDirectory(prefix="kvbench-") as tmp:
        config = {"sqlite": {"path": str(Path(tmp) / "app.db")},
                  "file": {"base_path": str(Path(tmp) / "files")},
                  "categories": {"m": {"store": "memory"}, "s": {"store": "database"}}}
        with PersistenceManager.from_config(config) as pm:
            stores = {"memory": _calls(pm, "m", n), "sqlite": _calls(pm, "s", n)}
            sdk = _sdk()
            runs: list[tuple[str, Callable[[], None], bool]] = [
                ("not instrumented", uninstrument, True),
                ("no-op API", instrument, False),
                ("SDK, spans + metrics", lambda: instrument(*sdk), False)]
            best: dict[tuple[str, str, str], float] = {}
            for _ in range(3):  # rounds alternate, so a slow spell falls on every run
                for label, switch, _ours in runs:
                    switch()
                    for group, calls in stores.items():
                        for op, fn in calls.items():
                            ops = measure(fn, n, repeats=1)
                            best[(group, op, label)] = max(best.get((group, op, label), 0), ops)
            uninstrument()
            for group, calls in stores.items():
                for op in calls:
                    for label, _switch, ours in runs:
                        report.add(group, f"pm.{op}", label, best[(group, op, label)], ours)
    report.print()
    report.save(args.json)


if __name__ == "__main__":
    main()
