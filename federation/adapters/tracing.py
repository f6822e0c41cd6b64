"""Tracing set-up: the OpenTelemetry SDK, configured once per process.

OTLP export follows the standard ``OTEL_*`` variables (it is on when
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set);
``--trace-file PATH`` also writes every finished span as one JSON line, for the demo and offline
use. The rest of the code uses only the OpenTelemetry *API*; without this set-up, the agent
makes no spans at all. W3C ``traceparent`` travels in NATS headers (see the runtime's consuming
and publishing), so one trace spans the exporting and the importing cluster.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)


class JsonLinesExporter(SpanExporter):
    """Finished spans as JSON lines: trace and span ids, parent, kind, times, attributes."""

    def __init__(self, path: Path) -> None:
        self._file: IO[str] = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            ctx = span.get_span_context()
            if ctx is None:
                continue
            lines.append(
                json.dumps(
                    {
                        "trace_id": f"{ctx.trace_id:032x}",
                        "span_id": f"{ctx.span_id:016x}",
                        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
                        "name": span.name,
                        "kind": span.kind.name,
                        "start_ns": span.start_time,
                        "end_ns": span.end_time,
                        "attributes": dict(span.attributes or {}),
                    }
                )
            )
        with self._lock:
            self._file.write("".join(line + "\n" for line in lines))
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def setup_tracing(
    service: str, trace_file: Path | None = None, *, install: bool = True
) -> TracerProvider | None:
    """A TracerProvider when anything exports its spans (a trace file, or OTLP by the
    ``OTEL_*`` variables), installed as this process's unless ``install`` is False (tests and
    the demo hand its tracer to the agents instead); call ``shutdown()`` on it to flush.

    None when nothing would export them: the agent then makes no spans at all. An SDK span that
    no processor takes still costs its ids, its attributes and a context, and even the API's
    no-op spans cost a third of an event's handling, on every event received from every peer.
    """
    exporters: list[SpanProcessor] = []
    if trace_file is not None:
        exporters.append(SimpleSpanProcessor(JsonLinesExporter(trace_file)))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters.append(BatchSpanProcessor(OTLPSpanExporter()))
    if not exporters:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    for processor in exporters:
        provider.add_span_processor(processor)
    if install:
        trace.set_tracer_provider(provider)
    return provider


__all__ = ["JsonLinesExporter", "TracerProvider", "setup_tracing"]
