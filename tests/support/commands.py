"""Command payload builders for tests (plain dicts, as any producer would send)."""

from __future__ import annotations

import uuid
from typing import Any


def new_id(prefix: str = "req") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def submit(
    request_id: str,
    *,
    actor: str = "submitter",
    requirements: list[dict[str, Any]] | None = None,
    initial_status: str | None = None,
    expires_at: str | None = None,
    expected_state_version: str | None = None,
    command_id: str | None = None,
) -> dict[str, Any]:
    args: dict[str, Any] = {
        "state_id": "state-1",
        "state_type": "config",
        "mutation_type": "update",
        "intent": {"operation_name": "update-config", "risk_level": "medium"},
    }
    if requirements is not None:
        args["approval_requirements"] = requirements
    if initial_status is not None:
        args["initial_status"] = initial_status
    if expires_at is not None:
        args["expires_at"] = expires_at
    if expected_state_version is not None:
        args["expected_state_version"] = expected_state_version
    return {
        "command_id": command_id or new_id("cmd"),
        "type": "submit",
        "request_id": request_id,
        "actor": {"id": actor},
        "args": args,
    }


def command(
    type_: str,
    request_id: str,
    expected_revision: int,
    *,
    actor: str = "operator",
    args: dict[str, Any] | None = None,
    command_id: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "command_id": command_id or new_id("cmd"),
        "type": type_,
        "request_id": request_id,
        "expected_revision": expected_revision,
        "actor": {"id": actor},
    }
    if args:
        body["args"] = args
    if reason is not None:
        body["reason"] = reason
    return body


def due_soon(seconds: float = 0.5) -> str:
    """An ``expires_at`` ``seconds`` from now (wire form): a request that will be due for
    expiry once the test has waited that long."""
    from datetime import UTC, datetime, timedelta

    instant = datetime.now(UTC) + timedelta(seconds=seconds)
    return instant.isoformat(timespec="microseconds").replace("+00:00", "Z")
