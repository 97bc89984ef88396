"""Traces across the broker: the worker continues each command's trace and hands it on to
the outcome event.

A producer puts the W3C ``traceparent`` of its span in the command message's headers; the
worker starts its span for the command as that span's child, stores the worker span's context
on the outbox row, and publishes it as the outcome event's ``traceparent`` header (also when
the relay publishes the event later), so that a subscriber's span can link to it.

With no OpenTelemetry SDK configured (the API's no-op provider) :func:`enabled` is False and
nothing else here runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import IO, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
SPAN_NAME = "governance.apply_command"
DEFAULT_SERVICE_NAME = "governance-worker"

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER = trace.get_tracer("governance.worker")


def enabled() -> bool:
    """Whether an SDK (a real tracer provider) is installed: the one check on the hot path."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def parent_of(headers: Mapping[str, Any] | None) -> Context | None:
    """The context a message's ``traceparent`` header carries, if any."""
    if not headers or TRACEPARENT not in headers:
        return None
    value = headers[TRACEPARENT]
    return _PROPAGATOR.extract({TRACEPARENT: value}) if isinstance(value, str) else None


def traceparent_of(span: Span) -> str | None:
    """The W3C ``traceparent`` of ``span``."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get(TRACEPARENT)


def start_command_span(payload: object, headers: Mapping[str, Any] | None, batch_size: int) -> Span:
    """The worker's span for one command, a child of the producer's span when the message
    names one."""
    attributes: dict[str, str | int] = {"governance.batch_size": batch_size}
    if isinstance(payload, Mapping):
        for key in ("command_id", "request_id", "type"):
            value = payload.get(key)
            if isinstance(value, str):
                attributes[f"governance.{key}"] = value[:200]
    return _TRACER.start_span(
        SPAN_NAME, context=parent_of(headers), kind=SpanKind.CONSUMER, attributes=attributes
    )


def finish_command_span(span: Span, fields: Mapping[str, Any]) -> None:
    """Record a command's outcome on its span and end it."""
    for key in ("type", "outcome", "code", "revision"):
        value = fields.get(key)
        if value is not None and value != "":
            span.set_attribute(f"governance.{key}", value)
    span.end()


def fail_spans(spans: Sequence[Span], error: BaseException) -> None:
    """End spans whose run produced no outcome (it goes back to the broker or is retried)."""
    for span in spans:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()


def configure(
    exporter_name: str, traces_file: str | None, service_name: str = DEFAULT_SERVICE_NAME
) -> bool:
    """Install the OpenTelemetry SDK with the exporter ``OTEL_TRACES_EXPORTER`` names
    (``otlp``: the OTLP exporter, configured by the standard ``OTEL_EXPORTER_OTLP_*``
    variables; ``console``: one JSON span a line on standard output, or appended to
    ``traces_file``). Returns whether tracing is on. An SDK installed already (by
    ``opentelemetry-instrument``, say) is kept as it is.
    """
    if exporter_name not in ("none", "otlp", "console"):
        raise ValueError(
            f"OTEL_TRACES_EXPORTER={exporter_name!r} must be one of none, otlp, console"
        )
    if exporter_name == "none" or enabled():
        return enabled()
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
        SpanExporter,
    )

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if exporter_name == "otlp":
        exporter: SpanExporter = _otlp_exporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    else:
        out: IO[str] | None = (
            open(traces_file, "a", encoding="utf-8")  # noqa: SIM115 (lives with the process)
            if traces_file
            else None
        )
        exporter = ConsoleSpanExporter(
            service_name=name,
            formatter=lambda span: span.to_json(indent=None) + "\n",
            **({"out": out} if out is not None else {}),
        )
        # Written as each span ends: a file a test or an operator reads right away.
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def _otlp_exporter() -> Any:
    """The OTLP exporter of ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf`` by default,
    or ``grpc``), from the optional ``opentelemetry-exporter-otlp`` package."""
    try:
        if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise RuntimeError(
            "OTEL_TRACES_EXPORTER=otlp needs the opentelemetry-exporter-otlp package "
            "(pip install -e '.[otlp]' in the project's checkout)"
        ) from exc
    return OTLPSpanExporter()
