"""What an operator sees of a worker: Prometheus metrics, OpenTelemetry traces and one log
line per command outcome.

:mod:`worker.observability.observer` is the one place the Celery wiring calls; the guarded
transaction knows nothing of it. Every piece is off, or nearly free, unless configured:
metrics need ``GOVERNANCE_METRICS_PORT``, traces an OpenTelemetry SDK (``OTEL_TRACES_EXPORTER``).
"""
