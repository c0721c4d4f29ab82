"""OpenTelemetry set-up shared by every service.

Traces and metrics are exported over OTLP only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
(protocol from `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the default, or `grpc`).
Without it the API's no-op providers stay in place: instrumented code costs next to nothing,
and the SDK is not even imported (envd starts inside slow sandboxes, where imports count).
"""

from __future__ import annotations

import os

_configured = False


def otlp_enabled() -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def setup_telemetry(service_name: str) -> None:
    """Installs global tracer and meter providers for `service_name` (once per process)."""
    global _configured
    if _configured or not otlp_enabled():
        return
    _configured = True
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    resource = Resource.create({SERVICE_NAME: f"corral-{service_name}"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
