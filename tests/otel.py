"""The real OpenTelemetry SDK with in-memory export, for tests in any folder.

OpenTelemetry takes one tracer and one meter provider per process (a second ``set_*_provider`` is
ignored), so every test module that reads spans or counters installs these same ones.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

EXPORTER = InMemorySpanExporter()
READER = InMemoryMetricReader()
_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))
    _installed = True


def counter(name: str) -> dict[tuple[tuple[str, Any], ...], int]:
    data = READER.get_metrics_data()
    out: dict[tuple[tuple[str, Any], ...], int] = {}
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        out[tuple(sorted(point.attributes.items()))] = int(point.value)
    return out
