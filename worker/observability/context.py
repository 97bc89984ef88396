"""The trace context of each command of the run in progress, for its outbox row and event.

Kept apart from :mod:`worker.observability.tracing` so that the hot path's writers read a
context variable without importing OpenTelemetry.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar, Token

_NONE: Mapping[str, str] = {}

#: command_id → the W3C ``traceparent`` of the worker's span for it, while its run lasts.
_RUN_TRACE_CONTEXTS: ContextVar[Mapping[str, str]] = ContextVar(
    "governance_run_trace_contexts", default=_NONE
)


def trace_context_of(command_id: object) -> str | None:
    """The ``traceparent`` to store and publish with the outcome of ``command_id`` (None when
    the command is not traced)."""
    return _RUN_TRACE_CONTEXTS.get().get(command_id) if isinstance(command_id, str) else None


def bind(trace_contexts: Mapping[str, str]) -> Token[Mapping[str, str]]:
    """Make ``trace_contexts`` the run's until :func:`unbind` with the returned token."""
    return _RUN_TRACE_CONTEXTS.set(trace_contexts)


def unbind(token: Token[Mapping[str, str]]) -> None:
    _RUN_TRACE_CONTEXTS.reset(token)
