"""Command validation: every malformed command names its field and says what was expected;
every valid command parses."""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance.commands import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    MAX_METADATA_BYTES,
    Command,
    CommandAuth,
    CommandType,
    InvalidCommand,
    MoveToPendingArgs,
    NoArgs,
    RequirementArgs,
    ResolutionStrategy,
    ResolveVersionArgs,
    SubmitArgs,
    SupersedeArgs,
    canonical_json,
    check_timestamp,
    command_digest,
    command_id_of,
    parse_command,
    payload_hash,
)
from governance.model import ActorType, BlastScope, PendingReason, RiskLevel, Status

from .builders import (
    ALL_TYPES,
    SIGNATURE,
    THREE_APPROVERS,
    command_payload,
    submit_payload,
    valid_commands,
)

VALID_COMMANDS = valid_commands()

DELETE = object()
MAX_INT = 2**63 - 1


def changed(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``payload`` with the dotted ``path`` set to ``value`` (or removed, for DELETE)."""
    result = copy.deepcopy(payload)
    *parents, last = path.split(".")
    target = result
    for part in parents:
        target = target.setdefault(part, {})
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return result


def approve(path: str, value: Any) -> dict[str, Any]:
    return changed(command_payload("approve", expected_revision=3), path, value)


def submit(path: str, value: Any) -> dict[str, Any]:
    return changed(submit_payload(), path, value)


def of(type_: str, path: str, value: Any) -> dict[str, Any]:
    return changed(command_payload(type_, expected_revision=3), path, value)


def nested(levels: int) -> Any:
    """``levels`` objects inside one another, the innermost holding a number."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def with_requirement_step(step_order: int) -> dict[str, Any]:
    return submit_payload(approval_requirements=[{"approver_id": "bob", "step_order": step_order}])


ACTOR_TYPES = "user, service, system, scheduler, administrator"
TIMESTAMP_RANGE = "expected a timestamp between 0001-01-02 and 9999-12-30 UTC"
PAST_YEAR_9999 = "9999-12-31T23:00:00-14:00"
STRATEGIES = "reject_stale, require_renewed_approval, revalidate_on_latest_state"

# (payload, the field named, a fragment of the message after "<field>: ")
BAD_COMMANDS = [
    # ---- the envelope
    pytest.param(["approve"], "command", "expected a JSON object, got a list", id="not-an-object"),
    pytest.param(approve("command_id", DELETE), "command_id", "required", id="no-command-id"),
    pytest.param(
        approve("command_id", ""),
        "command_id",
        "expected at least 1 character(s), got an empty string",
        id="empty-command-id",
    ),
    pytest.param(
        approve("command_id", "c" * 129),
        "command_id",
        "expected at most 128 characters, got 129",
        id="command-id-over-128",
    ),
    pytest.param(
        approve("command_id", 42), "command_id", "expected a string, got the number 42", id="int-id"
    ),
    pytest.param(
        approve("command_id", ("a",)), "command_id", "expected a string, got tuple", id="tuple-id"
    ),
    pytest.param(
        approve("command_id", "   "), "command_id", "expected a non-blank string", id="blank-id"
    ),
    pytest.param(
        approve("command_id", "cmd\n1"),
        "command_id",
        "expected no control characters",
        id="control-char-id",
    ),
    pytest.param(approve("type", DELETE), "type", "required", id="no-type"),
    pytest.param(
        approve("type", "approve_all"),
        "type",
        "expected one of submit, move_to_pending, approve, reject, cancel, expire, supersede, "
        "mark_executed, approve_requirement, reject_requirement, resolve_version, "
        'got "approve_all"',
        id="unknown-type",
    ),
    pytest.param(approve("type", None), "type", "got null", id="null-type"),
    pytest.param(
        approve("priority", "high"),
        "priority",
        "unknown field; expected one of actor, args, audience, auth, command_id, "
        "expected_revision, issued_at, metadata, reason, request_id, type",
        id="unknown-top-level-field",
    ),
    pytest.param(approve("request_id", DELETE), "request_id", "required", id="no-request-id"),
    pytest.param(
        approve("request_id", "req 42"),
        "request_id",
        'expected 1..128 characters of [A-Za-z0-9._:-], got "req 42"',
        id="request-id-space",
    ),
    pytest.param(
        approve("request_id", "req/42"),
        "request_id",
        "expected 1..128 characters of [A-Za-z0-9._:-]",
        id="request-id-slash",
    ),
    pytest.param(
        approve("request_id", "r" * 129),
        "request_id",
        f'got "{"r" * 37}..."',
        id="request-id-over-128",
    ),
    pytest.param(approve("request_id", ""), "request_id", 'got ""', id="request-id-empty"),
    pytest.param(
        approve("request_id", 5), "request_id", "expected a string, got the number 5", id="int-rid"
    ),
    # ---- expected_revision
    pytest.param(
        approve("expected_revision", DELETE),
        "expected_revision",
        "required for approve",
        id="no-expected-revision",
    ),
    pytest.param(
        approve("expected_revision", None),
        "expected_revision",
        "required for approve",
        id="null-expected-revision",
    ),
    pytest.param(
        approve("expected_revision", -1),
        "expected_revision",
        f"expected an integer from 0 to {MAX_INT}, got -1",
        id="negative-revision",
    ),
    pytest.param(
        approve("expected_revision", True),
        "expected_revision",
        "expected an integer, got a boolean",
        id="boolean-revision",
    ),
    pytest.param(
        approve("expected_revision", "3"),
        "expected_revision",
        'expected an integer, got "3"',
        id="string-revision",
    ),
    pytest.param(
        approve("expected_revision", 3.0),
        "expected_revision",
        "expected an integer, got the number 3.0",
        id="float-revision",
    ),
    pytest.param(
        approve("expected_revision", 2**63),
        "expected_revision",
        f"expected an integer from 0 to {MAX_INT}, got {2**63}",
        id="revision-over-bigint",
    ),
    pytest.param(
        approve("expected_revision", 10**5000),
        "expected_revision",
        f"expected an integer from 0 to {MAX_INT}, got an integer of 16610 bits",
        id="revision-too-long-to-print",
    ),
    pytest.param(
        with_requirement_step(10**5000),
        "args.approval_requirements[0].step_order",
        "expected an integer from 1 to 1000, got an integer of 16610 bits",
        id="step-order-too-long-to-print",
    ),
    pytest.param(
        submit("expected_revision", 1),
        "expected_revision",
        "expected an integer from 0 to 0, got 1",
        id="submit-expects-a-revision",
    ),
    # ---- actor
    pytest.param(approve("actor", DELETE), "actor", "required", id="no-actor"),
    pytest.param(
        approve("actor", "alice"),
        "actor",
        'expected a JSON object, got "alice"',
        id="actor-not-object",
    ),
    pytest.param(approve("actor.id", DELETE), "actor.id", "required", id="actor-without-id"),
    pytest.param(
        approve("actor.id", "a" * 129),
        "actor.id",
        "expected at most 128 characters, got 129",
        id="actor-id-over-128",
    ),
    pytest.param(
        approve("actor.type", "robot"),
        "actor.type",
        f'expected one of {ACTOR_TYPES}, got "robot"',
        id="unknown-actor-type",
    ),
    pytest.param(
        approve("actor.email", "a@example.org"),
        "actor.email",
        "unknown field; expected one of id, name, type",
        id="unknown-actor-field",
    ),
    pytest.param(
        approve("actor.name", "n" * 201),
        "actor.name",
        "expected at most 200 characters, got 201",
        id="actor-name-over-200",
    ),
    # ---- reason, metadata, issued_at
    pytest.param(
        approve("reason", "r" * 2001),
        "reason",
        "expected at most 2000 characters, got 2001",
        id="reason-over-2000",
    ),
    pytest.param(
        approve("reason", 1), "reason", "expected a string, got the number 1", id="reason-number"
    ),
    pytest.param(
        approve("reason", "ok\x00"), "reason", "expected no NUL characters", id="reason-with-nul"
    ),
    pytest.param(
        approve("metadata", {"blob": "x" * MAX_METADATA_BYTES}),
        "metadata",
        f"expected at most {MAX_METADATA_BYTES} bytes serialized, got {MAX_METADATA_BYTES + 11}",
        id="metadata-over-16KiB",
    ),
    pytest.param(
        approve("metadata", [1, 2]),
        "metadata",
        "expected a JSON object, got a list",
        id="metadata-not-object",
    ),
    pytest.param(
        approve("metadata", {"score": math.nan}),
        "metadata.score",
        "expected a finite number, got nan",
        id="metadata-nan",
    ),
    pytest.param(
        approve("metadata", {"limit": math.inf}),
        "metadata.limit",
        "expected a finite number, got inf",
        id="metadata-infinity",
    ),
    pytest.param(
        approve("metadata", {"values": [1, -math.inf]}),
        "metadata.values[1]",
        "expected a finite number, got -inf",
        id="metadata-negative-infinity-in-list",
    ),
    pytest.param(
        approve("metadata", nested(40)),
        "metadata" + ".a" * 33,
        "expected at most 32 levels of nesting",
        id="metadata-nested-40-levels",
    ),
    pytest.param(
        approve("metadata", {"tags": {"a", "b"}}),
        "metadata.tags",
        "expected a JSON value, got set",
        id="metadata-non-json-value",
    ),
    pytest.param(
        approve("metadata", {1: "one"}),
        "metadata",
        "expected an object with string keys",
        id="metadata-non-string-key",
    ),
    pytest.param(
        approve("metadata", {"inner": {2: "two"}}),
        "metadata.inner",
        "expected an object with string keys",
        id="metadata-nested-non-string-key",
    ),
    pytest.param(
        approve("issued_at", "2026-11-28T14:00:00"),
        "issued_at",
        'expected a timestamp with a time zone (e.g. Z), got "2026-11-28T14:00:00"',
        id="timestamp-without-zone",
    ),
    pytest.param(
        approve("issued_at", "yesterday"),
        "issued_at",
        'expected an ISO-8601 timestamp, got "yesterday"',
        id="not-a-timestamp",
    ),
    pytest.param(
        approve("issued_at", 1_700_000_000),
        "issued_at",
        "expected an ISO-8601 timestamp string, got the number 1700000000",
        id="epoch-timestamp",
    ),
    pytest.param(
        approve("issued_at", "0001-01-01T00:00:00+14:00"),
        "issued_at",
        f'{TIMESTAMP_RANGE}, got "0001-01-01T00:00:00+14:00"',
        id="timestamp-before-year-1-in-utc",
    ),
    pytest.param(
        approve("issued_at", "9999-12-31T23:00:00-14:00"),
        "issued_at",
        f'{TIMESTAMP_RANGE}, got "9999-12-31T23:00:00-14:00"',
        id="timestamp-after-year-9999-in-utc",
    ),
    pytest.param(
        approve("issued_at", "9999-12-31T23:59:59.999999Z"),
        "issued_at",
        TIMESTAMP_RANGE,
        id="timestamp-at-the-very-end-of-year-9999",
    ),
    pytest.param(
        approve("issued_at", "0001-01-01T00:00:00Z"),
        "issued_at",
        TIMESTAMP_RANGE,
        id="timestamp-at-the-very-start-of-year-1",
    ),
    # ---- what JSONB cannot hold, at any depth
    pytest.param(
        approve("metadata", {"a": {"b\x00": 1}}),
        "metadata.a",
        'expected keys without NUL characters, got "b\\u0000"',
        id="metadata-nested-key-with-nul",
    ),
    pytest.param(
        approve("metadata", {"a": ["x\x00y"]}),
        "metadata.a[0]",
        "expected no NUL characters",
        id="metadata-nested-value-with-nul",
    ),
    pytest.param(
        approve("metadata", {"a": {"b": {"c": "\x00"}}}),
        "metadata.a.b.c",
        "expected no NUL characters",
        id="metadata-deep-value-with-nul",
    ),
    pytest.param(
        approve("metadata", {"\x00": 1}),
        "metadata",
        "expected keys without NUL characters",
        id="metadata-key-with-nul",
    ),
    pytest.param(
        approve("metadata", {"n": 10**5000}),
        "metadata.n",
        "expected an integer of at most",
        id="metadata-integer-too-long-to-print",
    ),
    pytest.param(
        approve("metadata", {"n": [-(10**100_000)]}),
        "metadata.n[0]",
        "expected an integer of at most",
        id="metadata-enormous-negative-integer",
    ),
    # ---- args of the simple commands
    pytest.param(
        approve("args", [1]), "args", "expected a JSON object, got a list", id="args-not-object"
    ),
    pytest.param(
        approve("args", {"note": "x"}),
        "args.note",
        "unknown field; approve takes no args",
        id="args-on-a-command-without-args",
    ),
    pytest.param(
        of("resolve_version", "args.strategy", "later"),
        "args.strategy",
        f'expected one of {STRATEGIES}, got "later"',
        id="unknown-strategy",
    ),
    pytest.param(
        of("resolve_version", "args.force", True),
        "args.force",
        "unknown field; expected one of current_state_version, strategy",
        id="unknown-args-field",
    ),
    pytest.param(
        of("resolve_version", "args.current_state_version", DELETE),
        "args.current_state_version",
        "required",
        id="resolve-without-current-version",
    ),
    pytest.param(
        of("resolve_version", "args.strategy", DELETE),
        "args.strategy",
        "required",
        id="resolve-without-strategy",
    ),
    pytest.param(
        of("resolve_version", "args.current_state_version", "v" * 129),
        "args.current_state_version",
        "expected at most 128 characters, got 129",
        id="state-version-over-128",
    ),
    pytest.param(
        of("move_to_pending", "args.pending_reason", DELETE),
        "args.pending_reason",
        "required",
        id="pending-without-reason",
    ),
    pytest.param(
        of("move_to_pending", "args.pending_reason", "vacation"),
        "args.pending_reason",
        "expected one of approval, external_check, schedule, dependency, quota, manual_review, "
        'got "vacation"',
        id="unknown-pending-reason",
    ),
    pytest.param(
        of("move_to_pending", "args.expires_at", "2026-12-01"),
        "args.expires_at",
        "expected a timestamp with a time zone",
        id="expiry-without-zone",
    ),
    pytest.param(
        of("move_to_pending", "args.expires_at", "9999-12-31T23:00:00-14:00"),
        "args.expires_at",
        f'{TIMESTAMP_RANGE}, got "9999-12-31T23:00:00-14:00"',
        id="expiry-after-year-9999-in-utc",
    ),
    pytest.param(
        of("move_to_pending", "args.expires_at", "0001-01-01T00:00:00+14:00"),
        "args.expires_at",
        f'{TIMESTAMP_RANGE}, got "0001-01-01T00:00:00+14:00"',
        id="expiry-before-year-1-in-utc",
    ),
    pytest.param(
        of("supersede", "args.superseding_request_id", DELETE),
        "args.superseding_request_id",
        "required",
        id="supersede-without-successor",
    ),
    pytest.param(
        of("supersede", "args.superseding_request_id", "req 43!"),
        "args.superseding_request_id",
        "expected 1..128 characters of [A-Za-z0-9._:-]",
        id="supersede-bad-successor-id",
    ),
    pytest.param(
        of("approve_requirement", "args.approval_id", DELETE),
        "args.approval_id",
        "required",
        id="requirement-without-approval-id",
    ),
    pytest.param(
        of("reject_requirement", "args.approval_id", "a" * 129),
        "args.approval_id",
        "expected at most 128 characters, got 129",
        id="approval-id-over-128",
    ),
    # ---- submit
    pytest.param(submit("args.state_id", DELETE), "args.state_id", "required", id="no-state-id"),
    pytest.param(submit("args.intent", DELETE), "args.intent", "required", id="no-intent"),
    pytest.param(
        submit("args.state_id", "s" * 129),
        "args.state_id",
        "expected at most 128 characters, got 129",
        id="state-id-over-128",
    ),
    pytest.param(
        submit("args.state_type", "  "),
        "args.state_type",
        "expected a non-blank string",
        id="blank-state-type",
    ),
    pytest.param(
        submit("args.priority", 1),
        "args.priority",
        "unknown field; expected one of approval_requirements, expected_state_version,",
        id="unknown-submit-field",
    ),
    pytest.param(
        submit("args.expected_state_version", "v" * 129),
        "args.expected_state_version",
        "expected at most 128 characters, got 129",
        id="expected-state-version-over-128",
    ),
    pytest.param(
        submit("args.intent", "rotate"),
        "args.intent",
        'expected a JSON object, got "rotate"',
        id="intent-not-object",
    ),
    pytest.param(
        submit("args.intent.operation_name", DELETE),
        "args.intent.operation_name",
        "required",
        id="intent-without-operation",
    ),
    pytest.param(
        submit("args.intent.risk_level", "extreme"),
        "args.intent.risk_level",
        'expected one of low, medium, high, critical, got "extreme"',
        id="unknown-risk-level",
    ),
    pytest.param(
        submit("args.intent.is_reversible", "yes"),
        "args.intent.is_reversible",
        'expected true or false, got "yes"',
        id="reversible-not-boolean",
    ),
    pytest.param(
        submit("args.intent.tags", "a,b"),
        "args.intent.tags",
        'expected a list of strings, got "a,b"',
        id="tags-not-list",
    ),
    pytest.param(
        submit("args.intent.tags", ["t"] * 65),
        "args.intent.tags",
        "expected at most 64 tags, got 65",
        id="too-many-tags",
    ),
    pytest.param(
        submit("args.intent.tags", ["ok", 7]),
        "args.intent.tags[1]",
        "expected a string, got the number 7",
        id="tag-not-string",
    ),
    pytest.param(
        submit("args.intent.owner", "alice"),
        "args.intent.owner",
        "unknown field; expected one of blast_radius, category,",
        id="unknown-intent-field",
    ),
    pytest.param(
        submit("args.intent.metadata", {"x": math.nan}),
        "args.intent.metadata.x",
        "expected a finite number, got nan",
        id="intent-metadata-nan",
    ),
    pytest.param(
        submit("args.intent.blast_radius.scope", "universe"),
        "args.intent.blast_radius.scope",
        'expected one of single, module, system, global, got "universe"',
        id="unknown-blast-scope",
    ),
    pytest.param(
        submit("args.intent.blast_radius.estimated_affected_count", -1),
        "args.intent.blast_radius.estimated_affected_count",
        "expected an integer from 0 to",
        id="negative-affected-count",
    ),
    pytest.param(
        submit("args.intent.blast_radius.radius", 3),
        "args.intent.blast_radius.radius",
        "unknown field; expected one of description, estimated_affected_count, scope",
        id="unknown-blast-field",
    ),
    pytest.param(
        submit("args.initial_status", "rejected"),
        "args.initial_status",
        'expected one of created, pending, approved, got "rejected"',
        id="initial-status-terminal",
    ),
    pytest.param(
        submit("args.initial_status", "draft"),
        "args.initial_status",
        "expected one of created, pending, approved, rejected, canceled, expired, superseded, "
        'executed, got "draft"',
        id="initial-status-unknown",
    ),
    pytest.param(
        changed(
            submit("args.approval_requirements", THREE_APPROVERS), "args.initial_status", "approved"
        ),
        "args.initial_status",
        "approval_requirements imply pending; expected pending or no initial_status, "
        'got "approved"',
        id="requirements-but-approved",
    ),
    pytest.param(
        changed(
            submit("args.approval_requirements", THREE_APPROVERS), "args.pending_reason", "quota"
        ),
        "args.pending_reason",
        'approval_requirements imply pending_reason approval, got "quota"',
        id="requirements-but-another-reason",
    ),
    pytest.param(
        changed(submit("args.initial_status", "approved"), "args.pending_reason", "quota"),
        "args.pending_reason",
        "only allowed when initial_status is pending, got initial_status approved",
        id="pending-reason-when-approved",
    ),
    pytest.param(
        submit("args.expires_at", "2026-11-29T00:00:00Z"),
        "args.expires_at",
        "only allowed when initial_status is pending",
        id="expiry-when-created",
    ),
    pytest.param(
        submit("args.approval_requirements", {"approver_id": "bob"}),
        "args.approval_requirements",
        "expected a list of requirement objects, got an object",
        id="requirements-not-list",
    ),
    pytest.param(
        submit("args.approval_requirements", {}),
        "args.approval_requirements",
        "expected a list of requirement objects, got an object",
        id="requirements-empty-object",
    ),
    pytest.param(
        submit("args.approval_requirements", False),
        "args.approval_requirements",
        "expected a list of requirement objects, got a boolean",
        id="requirements-false",
    ),
    pytest.param(
        submit("args.approval_requirements", [{"approver_id": "bob"}] * 101),
        "args.approval_requirements",
        "expected at most 100 requirements, got 101",
        id="too-many-requirements",
    ),
    pytest.param(
        submit("args.approval_requirements", ["bob"]),
        "args.approval_requirements[0]",
        'expected a JSON object, got "bob"',
        id="requirement-not-object",
    ),
    pytest.param(
        submit("args.approval_requirements", [{"approval_id": "a-1"}]),
        "args.approval_requirements[0].approver_id",
        "required",
        id="requirement-without-approver",
    ),
    pytest.param(
        submit(
            "args.approval_requirements",
            [{"approver_id": "alice"}, {"approver_id": "bob", "step_order": 0}],
        ),
        "args.approval_requirements[1].step_order",
        "expected an integer from 1 to 1000, got 0",
        id="requirement-step-zero",
    ),
    pytest.param(
        submit(
            "args.approval_requirements",
            [{"approval_id": "x", "approver_id": "a"}, {"approval_id": "x", "approver_id": "b"}],
        ),
        "args.approval_requirements",
        "expected unique approval_id values",
        id="duplicate-approval-ids",
    ),
    pytest.param(
        submit("args.approval_requirements", [{"approver_id": "bob", "weight": 2}]),
        "args.approval_requirements[0].weight",
        "unknown field; expected one of approval_id, approver_group, approver_id,",
        id="unknown-requirement-field",
    ),
    pytest.param(
        submit("args.metadata", {"blob": "x" * MAX_METADATA_BYTES}),
        "args.metadata",
        f"expected at most {MAX_METADATA_BYTES} bytes serialized",
        id="submit-metadata-over-16KiB",
    ),
    pytest.param(
        changed(submit("args.initial_status", "pending"), "args.expires_at", PAST_YEAR_9999),
        "args.expires_at",
        f'{TIMESTAMP_RANGE}, got "{PAST_YEAR_9999}"',
        id="submit-expiry-after-year-9999-in-utc",
    ),
    pytest.param(
        submit("args.metadata", {"k": ["ok", {"v": "a\x00"}]}),
        "args.metadata.k[1].v",
        "expected no NUL characters",
        id="submit-metadata-value-with-nul",
    ),
    pytest.param(
        submit("args.intent.metadata", {"a": {"\x00b": True}}),
        "args.intent.metadata.a",
        "expected keys without NUL characters",
        id="intent-metadata-key-with-nul",
    ),
    pytest.param(
        submit("args.approval_requirements", [{"approver_id": "bob", "approver_group": "cab"}]),
        "args.approval_requirements[0].approver_group",
        "expected either approver_id or approver_group, not both",
        id="requirement-named-and-group",
    ),
    pytest.param(
        submit("args.approval_requirements", [{"approver_id": None, "approver_group": None}]),
        "args.approval_requirements[0].approver_id",
        "expected a string, got null",
        id="requirement-null-approver-and-null-group",
    ),
    pytest.param(
        submit("args.approval_requirements", [{"min_approvals": 2}]),
        "args.approval_requirements[0].approver_id",
        "required (or approver_group)",
        id="requirement-with-neither-approver-nor-group",
    ),
    pytest.param(
        submit("args.approval_requirements", [{"approver_group": ""}]),
        "args.approval_requirements[0].approver_group",
        "expected at least 1 character(s)",
        id="requirement-group-empty",
    ),
    pytest.param(
        submit("args.approval_requirements", [{"approver_group": "   "}]),
        "args.approval_requirements[0].approver_group",
        "expected a non-blank string",
        id="requirement-group-blank",
    ),
    pytest.param(
        submit("args.approval_requirements", [{"approver_group": "c\tab"}]),
        "args.approval_requirements[0].approver_group",
        "expected no control characters",
        id="requirement-group-control-character",
    ),
    pytest.param(
        submit("args.approval_requirements", [{"approver_group": "g" * 129}]),
        "args.approval_requirements[0].approver_group",
        "expected at most 128 characters, got 129",
        id="requirement-group-too-long",
    ),
    pytest.param(
        submit("args.approval_requirements", [{"approver_group": ["cab"]}]),
        "args.approval_requirements[0].approver_group",
        "expected a string, got a list",
        id="requirement-group-not-a-string",
    ),
    pytest.param(
        submit("args.approval_requirements", [{"approver_group": "cab", "min_approvals": 0}]),
        "args.approval_requirements[0].min_approvals",
        "expected an integer from 1 to 100, got 0",
        id="requirement-min-approvals-zero",
    ),
    pytest.param(
        submit("args.approval_requirements", [{"approver_group": "cab", "min_approvals": 101}]),
        "args.approval_requirements[0].min_approvals",
        "expected an integer from 1 to 100, got 101",
        id="requirement-min-approvals-over-100",
    ),
    pytest.param(
        submit("args.approval_requirements", [{"approver_group": "cab", "min_approvals": "2"}]),
        "args.approval_requirements[0].min_approvals",
        'expected an integer, got "2"',
        id="requirement-min-approvals-string",
    ),
    pytest.param(
        submit("args.approval_requirements", [{"approver_group": "cab", "min_approvals": True}]),
        "args.approval_requirements[0].min_approvals",
        "expected an integer, got a boolean",
        id="requirement-min-approvals-boolean",
    ),
    pytest.param(
        submit("args.approval_requirements", [{"approver_group": "cab", "min_approvals": 2.0}]),
        "args.approval_requirements[0].min_approvals",
        "expected an integer, got the number 2.0",
        id="requirement-min-approvals-float",
    ),
    pytest.param(
        submit("args.approval_requirements", [{"approver_group": "cab", "min_approvals": None}]),
        "args.approval_requirements[0].min_approvals",
        "expected an integer, got null",
        id="requirement-min-approvals-null",
    ),
    pytest.param(
        submit("args.approval_requirements", [{"approver_id": "bob", "min_approvals": 2}]),
        "args.approval_requirements[0].min_approvals",
        "expected 1 for a named approver, got 2; more than one approval needs approver_group",
        id="requirement-named-with-two-approvals",
    ),
    pytest.param(
        approve("auth", "signed"), "auth", 'expected a JSON object, got "signed"', id="auth-string"
    ),
    pytest.param(
        approve("auth", {"key_id": "k-1", "signature": SIGNATURE, "alg": "EdDSA"}),
        "auth.alg",
        "unknown field; expected one of authenticator_data, client_data_json, key_id, scheme, "
        "signature",
        id="auth-unknown-field",
    ),
    pytest.param(
        approve("auth", {"key_id": 7, "signature": SIGNATURE}),
        "auth.key_id",
        "expected a string, got the number 7",
        id="auth-key-id-number",
    ),
    pytest.param(
        approve("auth", {"key_id": "k\n1", "signature": SIGNATURE}),
        "auth.key_id",
        "expected no control characters",
        id="auth-key-id-control-character",
    ),
    pytest.param(
        approve("auth", {"key_id": "k-1", "signature": None}),
        "auth.signature",
        "expected a string, got null",
        id="auth-signature-null",
    ),
    pytest.param(
        approve("auth", {"key_id": "k-1", "signature": "A" * 513}),
        "auth.signature",
        "expected at most 512 characters, got 513",
        id="auth-signature-oversize",
    ),
    pytest.param(
        approve("auth", {"key_id": "k-1", "signature": ""}),
        "auth.signature",
        "expected at least 1 character(s)",
        id="auth-signature-empty",
    ),
    pytest.param(
        approve("audience", 7),
        "audience",
        "expected a string, got the number 7",
        id="audience-number",
    ),
    pytest.param(
        approve("audience", ""), "audience", "expected at least 1 character(s)", id="audience-empty"
    ),
    pytest.param(
        approve("audience", "a" * 129),
        "audience",
        "expected at most 128 characters, got 129",
        id="audience-too-long",
    ),
]


@pytest.mark.parametrize(("payload", "field", "expected"), BAD_COMMANDS)
def test_a_malformed_command_is_refused_naming_the_field_and_what_was_expected(
    payload: Any, field: str, expected: str
) -> None:
    with pytest.raises(InvalidCommand) as caught:
        parse_command(payload)

    assert caught.value.field == field
    assert caught.value.message.startswith(f"{field}: ")
    assert expected in caught.value.message
    assert str(caught.value) == caught.value.message


def test_an_unknown_strategy_is_refused_with_the_issue_example_message() -> None:
    payload = command_payload(
        "resolve_version", expected_revision=3, current_state_version="v2", strategy="later"
    )

    with pytest.raises(InvalidCommand) as caught:
        parse_command(payload)

    assert caught.value.message == (
        "args.strategy: expected one of reject_stale, require_renewed_approval, "
        'revalidate_on_latest_state, got "later"'
    )


def test_there_are_at_least_thirty_malformed_commands() -> None:
    assert len(BAD_COMMANDS) >= 30


def test_metadata_nested_thirty_two_levels_deep_is_accepted() -> None:
    command = parse_command(changed(command_payload("approve"), "metadata", nested(32)))

    assert command.metadata == nested(32)


def test_metadata_of_exactly_16_kib_is_accepted() -> None:
    filler = "x" * (MAX_METADATA_BYTES - len('{"blob":""}'))
    command = parse_command(changed(command_payload("approve"), "metadata", {"blob": filler}))

    assert len(json.dumps(command.metadata, separators=(",", ":"))) == MAX_METADATA_BYTES


def test_a_reason_of_exactly_2000_characters_is_accepted() -> None:
    assert parse_command(changed(command_payload("approve"), "reason", "r" * 2000)).reason


# --------------------------------------------------------------------------- valid commands

ARGS_TYPE = {
    "submit": SubmitArgs,
    "move_to_pending": MoveToPendingArgs,
    "approve": NoArgs,
    "reject": NoArgs,
    "cancel": NoArgs,
    "expire": NoArgs,
    "supersede": SupersedeArgs,
    "mark_executed": NoArgs,
    "approve_requirement": RequirementArgs,
    "reject_requirement": RequirementArgs,
    "resolve_version": ResolveVersionArgs,
}


def test_there_is_a_valid_command_of_each_of_the_eleven_types() -> None:
    assert set(VALID_COMMANDS) == {t.value for t in CommandType} == set(ARGS_TYPE)
    assert len(VALID_COMMANDS) == 11


@pytest.mark.parametrize("type_", ALL_TYPES)
def test_a_valid_command_parses(type_: str) -> None:
    command = parse_command(copy.deepcopy(VALID_COMMANDS[type_]))

    assert command.type is CommandType(type_)
    assert isinstance(command.args, ARGS_TYPE[type_])
    assert command.expected_revision == (None if type_ == "submit" else 7)
    assert command.reason == "routine change"
    assert command.metadata == {"ticket": "OPS-1", "labels": ["a", "b"]}
    assert command.issued_at == datetime(2026, 11, 28, 14, 0, 0, 123456, tzinfo=UTC)


def test_parsing_does_not_change_the_payload() -> None:
    payload = copy.deepcopy(VALID_COMMANDS["submit"])

    parse_command(payload)

    assert payload == VALID_COMMANDS["submit"]


def test_a_parsed_submit_carries_every_argument() -> None:
    command = parse_command(copy.deepcopy(VALID_COMMANDS["submit"]))

    args = command.args
    assert isinstance(args, SubmitArgs)
    assert args.initial_status is Status.PENDING
    assert args.pending_reason is PendingReason.APPROVAL
    assert [
        (r.approval_id, r.approver_id, r.approver_group, r.min_approvals, r.step_order)
        for r in args.approval_requirements
    ] == [
        (None, "alice", None, 1, 1),
        ("bob-2", "bob", None, 1, 2),
        ("cab-3", None, "cab", 2, 3),
    ]
    assert command.audience == "governance"
    assert command.auth == CommandAuth("operator-key-1", SIGNATURE)
    assert args.expires_at == datetime(2026, 11, 30, 22, 0, tzinfo=UTC)
    assert args.intent.risk_level is RiskLevel.HIGH
    assert args.intent.blast_radius.scope is BlastScope.MODULE
    assert args.intent.blast_radius.estimated_affected_count == 12


def test_a_parsed_resolve_version_carries_its_strategy() -> None:
    args = parse_command(command_payload("resolve_version")).args

    assert args == ResolveVersionArgs("v2", ResolutionStrategy.REJECT_STALE)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"approver_id": "bob"}, ("bob", None, 1), id="named"),
        pytest.param(
            {"approver_id": "bob", "min_approvals": 1}, ("bob", None, 1), id="named-one-approval"
        ),
        pytest.param(
            {"approver_id": "bob", "approver_group": None}, ("bob", None, 1), id="named-null-group"
        ),
        pytest.param({"approver_group": "cab"}, (None, "cab", 1), id="group-default-one"),
        pytest.param(
            {"approver_group": "cab", "min_approvals": 3}, (None, "cab", 3), id="group-of-three"
        ),
        pytest.param(
            {"approver_group": "cab", "approver_id": None, "min_approvals": 100},
            (None, "cab", 100),
            id="group-of-a-hundred-null-approver",
        ),
    ],
)
def test_a_requirement_names_an_approver_or_a_group_with_its_approvals(
    spec: dict[str, Any], expected: tuple[str | None, str | None, int]
) -> None:
    args = parse_command(submit_payload(approval_requirements=[spec])).args

    assert isinstance(args, SubmitArgs)
    (parsed,) = args.approval_requirements
    assert (parsed.approver_id, parsed.approver_group, parsed.min_approvals) == expected


def test_a_command_without_audience_or_auth_has_none() -> None:
    command = parse_command({**command_payload("approve"), "audience": None, "auth": None})

    assert (command.audience, command.auth) == (None, None)


def test_a_signature_is_checked_for_form_only() -> None:
    # A signature that is not even base64url is for verification to refuse (unauthenticated),
    # not validation: only its type, size and characters are validation's business.
    payload = {**command_payload("approve"), "auth": {"key_id": "k-1", "signature": "!!"}}

    assert parse_command(payload).auth == CommandAuth("k-1", "!!")


def test_an_actor_defaults_to_a_user_without_a_name() -> None:
    command = parse_command(changed(command_payload("approve"), "actor", {"id": "alice"}))

    assert (command.actor.id, command.actor.name, command.actor.type) == (
        "alice",
        None,
        ActorType.USER,
    )


def test_a_minimal_intent_takes_the_defaults() -> None:
    args = parse_command(submit("args.intent", {"operation_name": "noop"})).args

    assert isinstance(args, SubmitArgs)
    intent = args.intent
    assert (intent.category, intent.description, intent.risk_level, intent.is_reversible) == (
        "general",
        "",
        RiskLevel.LOW,
        True,
    )
    assert intent.blast_radius.scope is BlastScope.SINGLE
    assert (intent.tags, intent.metadata) == ((), {})


@pytest.mark.parametrize(
    ("args", "status", "reason"),
    [
        pytest.param({}, Status.CREATED, None, id="nothing-means-created"),
        pytest.param({"pending_reason": "quota"}, Status.PENDING, PendingReason.QUOTA, id="reason"),
        pytest.param(
            {"approval_requirements": THREE_APPROVERS},
            Status.PENDING,
            PendingReason.APPROVAL,
            id="requirements-mean-pending-approval",
        ),
        pytest.param(
            {"initial_status": "pending"},
            Status.PENDING,
            PendingReason.APPROVAL,
            id="pending-defaults-to-approval",
        ),
        pytest.param({"initial_status": "approved"}, Status.APPROVED, None, id="approved"),
        pytest.param(
            {"approval_requirements": [], "pending_reason": None}, Status.CREATED, None, id="nulls"
        ),
    ],
)
def test_a_submit_derives_its_initial_status_and_pending_reason(
    args: dict[str, Any], status: Status, reason: PendingReason | None
) -> None:
    parsed = parse_command(submit_payload(**args)).args

    assert isinstance(parsed, SubmitArgs)
    assert (parsed.initial_status, parsed.pending_reason) == (status, reason)


def test_a_submit_may_state_expected_revision_zero() -> None:
    assert parse_command(submit("expected_revision", 0)).expected_revision is None


@pytest.mark.parametrize(
    "stamp",
    ["2026-11-28T14:00:00Z", "2026-11-28T14:00:00z", "2026-11-28T15:00:00+01:00"],
)
def test_timestamps_with_a_zone_are_read_as_utc(stamp: str) -> None:
    issued_at = parse_command(changed(command_payload("approve"), "issued_at", stamp)).issued_at

    assert issued_at == datetime(2026, 11, 28, 14, 0, tzinfo=UTC)
    assert issued_at is not None and issued_at.utcoffset() == timedelta(0)


# --------------------------------------------------------------------------- command_id_of


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param({"command_id": "cmd-1", "type": "nonsense"}, "cmd-1", id="usable"),
        pytest.param({"command_id": ""}, None, id="empty"),
        pytest.param({"command_id": 7}, None, id="not-a-string"),
        pytest.param({}, None, id="missing"),
        pytest.param(["cmd-1"], None, id="not-an-object"),
    ],
)
def test_command_id_of_finds_a_usable_command_id_even_in_an_invalid_command(
    payload: Any, expected: str | None
) -> None:
    assert command_id_of(payload) == expected


# --------------------------------------------------------------------------- payload_hash


def test_payload_hash_ignores_issued_at() -> None:
    payload = command_payload("approve", expected_revision=3)

    assert payload_hash({**payload, "issued_at": "2026-11-28T14:00:00Z"}) == payload_hash(
        {**payload, "issued_at": "2026-11-28T15:30:00Z"}
    )
    assert payload_hash(payload) == payload_hash({**payload, "issued_at": "2026-11-28T14:00:00Z"})


def test_payload_hash_ignores_the_signature() -> None:
    payload = command_payload("approve", expected_revision=3)
    signed = {**payload, "auth": {"key_id": "k-1", "signature": SIGNATURE}}

    assert payload_hash(signed) == payload_hash(payload)
    assert payload_hash(signed) == payload_hash({**signed, "auth": {"key_id": "k-2"}})


def test_payload_hash_ignores_key_order() -> None:
    payload = command_payload("approve", expected_revision=3)

    assert payload_hash(payload) == payload_hash(dict(reversed(list(payload.items()))))


@pytest.mark.parametrize(
    ("path", "value"),
    [("expected_revision", 4), ("actor.id", "bob"), ("reason", "other"), ("metadata", {"a": 1})],
)
def test_payload_hash_differs_for_different_payloads(path: str, value: Any) -> None:
    payload = command_payload("approve", expected_revision=3)

    assert payload_hash(payload) != payload_hash(changed(payload, path, value))


def test_payload_hash_of_a_payload_that_is_not_json_is_still_stable() -> None:
    payload = {"command_id": "c-1", "metadata": {"x": math.nan}}

    assert payload_hash(payload) == payload_hash(copy.deepcopy(payload))
    assert len(payload_hash(payload)) == 64


def test_a_command_parsed_twice_is_equal() -> None:
    first: Command = parse_command(copy.deepcopy(VALID_COMMANDS["submit"]))
    assert first == parse_command(copy.deepcopy(VALID_COMMANDS["submit"]))


# A JSON escape can spell a lone surrogate; no UTF-8 event, log or database can hold one.
LONE_SURROGATE = "\udfff"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param(approve("reason", f"ok{LONE_SURROGATE}"), "reason", id="in-a-string"),
        pytest.param(
            approve("metadata", {"note": LONE_SURROGATE}), "metadata.note", id="in-a-json-value"
        ),
        pytest.param(approve("metadata", {LONE_SURROGATE: 1}), "metadata", id="in-a-json-key"),
    ],
)
def test_a_lone_surrogate_is_refused_naming_the_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidCommand) as caught:
        parse_command(payload)
    assert caught.value.field == field
    assert "lone surrogate" in caught.value.message


def test_a_refusal_quoting_a_lone_surrogate_can_itself_be_encoded() -> None:
    # Given an unknown top-level field whose name is a lone surrogate
    payload = approve(LONE_SURROGATE, 1)
    # When it is refused
    with pytest.raises(InvalidCommand) as caught:
        parse_command(payload)
    # Then the field and the message are printable UTF-8
    caught.value.field.encode("utf-8")
    caught.value.message.encode("utf-8")
    assert caught.value.field == "\\udfff"


def test_a_refusal_quoting_a_nul_character_holds_none() -> None:
    # Given an unknown top-level field whose name holds a NUL character
    payload = approve("\x00x", 1)
    # When it is refused
    with pytest.raises(InvalidCommand) as caught:
        parse_command(payload)
    # Then the field is named with the NUL escaped, so that the rejection can be stored
    assert caught.value.field == "\\x00x"
    assert "\x00" not in caught.value.message


def test_a_refusal_naming_an_unknown_nested_field_with_a_nul_holds_none() -> None:
    with pytest.raises(InvalidCommand) as caught:
        parse_command(submit("args.intent.blast_radius", {"sc\x00pe": "single"}))

    assert caught.value.field == "args.intent.blast_radius.sc\\x00pe"
    assert "\x00" not in caught.value.message


# --------------------------------------------------------------------------- NUL everywhere

NUL = "a\x00b"


def with_requirement(**fields: Any) -> dict[str, Any]:
    return submit_payload(approval_requirements=[{"approver_id": "alice", **fields}])


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param(approve("command_id", NUL), "command_id", id="command_id"),
        pytest.param(approve("request_id", NUL), "request_id", id="request_id"),
        pytest.param(approve("actor.id", NUL), "actor.id", id="actor.id"),
        pytest.param(approve("actor.name", NUL), "actor.name", id="actor.name"),
        pytest.param(approve("actor.type", NUL), "actor.type", id="actor.type"),
        pytest.param(approve("type", NUL), "type", id="type"),
        pytest.param(approve("reason", NUL), "reason", id="reason"),
        pytest.param(approve("issued_at", f"2026-11-28T14:00:00Z{NUL}"), "issued_at", id="stamp"),
        pytest.param(submit("args.state_id", NUL), "args.state_id", id="state_id"),
        pytest.param(submit("args.state_type", NUL), "args.state_type", id="state_type"),
        pytest.param(submit("args.mutation_type", NUL), "args.mutation_type", id="mutation_type"),
        pytest.param(
            submit("args.expected_state_version", NUL),
            "args.expected_state_version",
            id="expected_state_version",
        ),
        pytest.param(
            submit("args.initial_status", NUL), "args.initial_status", id="initial_status"
        ),
        pytest.param(
            submit("args.pending_reason", NUL), "args.pending_reason", id="submit-pending_reason"
        ),
        pytest.param(
            submit("args.intent.operation_name", NUL),
            "args.intent.operation_name",
            id="operation_name",
        ),
        pytest.param(submit("args.intent.category", NUL), "args.intent.category", id="category"),
        pytest.param(
            submit("args.intent.description", NUL), "args.intent.description", id="description"
        ),
        pytest.param(
            submit("args.intent.risk_level", NUL), "args.intent.risk_level", id="risk_level"
        ),
        pytest.param(submit("args.intent.tags", ["ok", NUL]), "args.intent.tags[1]", id="tag"),
        pytest.param(
            submit("args.intent.blast_radius.description", NUL),
            "args.intent.blast_radius.description",
            id="blast_radius.description",
        ),
        pytest.param(
            submit("args.intent.blast_radius.scope", NUL),
            "args.intent.blast_radius.scope",
            id="blast_radius.scope",
        ),
        pytest.param(
            with_requirement(approval_id=NUL),
            "args.approval_requirements[0].approval_id",
            id="requirement.approval_id",
        ),
        pytest.param(
            submit("args.approval_requirements", [{"approver_id": NUL}]),
            "args.approval_requirements[0].approver_id",
            id="requirement.approver_id",
        ),
        pytest.param(
            with_requirement(approver_name=NUL),
            "args.approval_requirements[0].approver_name",
            id="requirement.approver_name",
        ),
        pytest.param(
            submit("args.approval_requirements", [{"approver_group": NUL}]),
            "args.approval_requirements[0].approver_group",
            id="requirement.approver_group",
        ),
        pytest.param(
            approve("auth", {"key_id": NUL, "signature": SIGNATURE}),
            "auth.key_id",
            id="auth.key_id",
        ),
        pytest.param(
            approve("auth", {"key_id": "k-1", "signature": NUL}),
            "auth.signature",
            id="auth.signature",
        ),
        pytest.param(approve("audience", NUL), "audience", id="audience"),
        pytest.param(
            with_requirement(description=NUL),
            "args.approval_requirements[0].description",
            id="requirement.description",
        ),
        pytest.param(
            of("move_to_pending", "args.pending_reason", NUL),
            "args.pending_reason",
            id="pending_reason",
        ),
        pytest.param(
            of("supersede", "args.superseding_request_id", NUL),
            "args.superseding_request_id",
            id="superseding_request_id",
        ),
        pytest.param(
            of("approve_requirement", "args.approval_id", NUL), "args.approval_id", id="approval_id"
        ),
        pytest.param(
            of("resolve_version", "args.current_state_version", NUL),
            "args.current_state_version",
            id="current_state_version",
        ),
        pytest.param(of("resolve_version", "args.strategy", NUL), "args.strategy", id="strategy"),
        pytest.param(approve("metadata", {"k": NUL}), "metadata.k", id="metadata"),
        pytest.param(submit("args.metadata", {"k": NUL}), "args.metadata.k", id="args.metadata"),
        pytest.param(
            submit("args.intent.metadata", {"k": NUL}),
            "args.intent.metadata.k",
            id="intent.metadata",
        ),
    ],
)
def test_a_nul_character_in_any_string_field_is_refused_naming_the_field(
    payload: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidCommand) as caught:
        parse_command(payload)

    assert caught.value.field == field
    assert "\x00" not in caught.value.message


# --------------------------------------------------------------------------- timestamp range


@pytest.mark.parametrize(
    ("stamp", "utc"),
    [
        pytest.param("0001-01-02T00:00:00Z", datetime(1, 1, 2, tzinfo=UTC), id="earliest"),
        pytest.param(
            "0001-01-02T14:00:00+14:00", datetime(1, 1, 2, tzinfo=UTC), id="earliest-east"
        ),
        pytest.param(
            "9999-12-30T23:59:59.999999Z",
            datetime(9999, 12, 30, 23, 59, 59, 999_999, tzinfo=UTC),
            id="latest",
        ),
        pytest.param(
            "9999-12-30T09:59:59-14:00",
            datetime(9999, 12, 30, 23, 59, 59, tzinfo=UTC),
            id="latest-west",
        ),
    ],
)
def test_an_instant_a_day_inside_the_years_1_to_9999_is_accepted(stamp: str, utc: datetime) -> None:
    for payload in (approve("issued_at", stamp), of("move_to_pending", "args.expires_at", stamp)):
        command = parse_command(payload)
        when = command.issued_at or getattr(command.args, "expires_at", None)
        assert when == utc


@pytest.mark.parametrize(
    "moment",
    [
        pytest.param(datetime(1, 1, 1, 10, tzinfo=timezone(timedelta(hours=14))), id="year-0"),
        pytest.param(
            datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-14))), id="year-10000"
        ),
        pytest.param(datetime.max.replace(tzinfo=UTC), id="max"),
        pytest.param(datetime.min.replace(tzinfo=UTC), id="min"),
        pytest.param(datetime.max, id="naive-max"),
        pytest.param(datetime.min, id="naive-min"),
    ],
)
def test_check_timestamp_refuses_an_instant_out_of_range_naming_the_field(
    moment: datetime,
) -> None:
    with pytest.raises(InvalidCommand) as caught:
        check_timestamp(moment, "args.expires_at")

    assert caught.value.field == "args.expires_at"
    assert TIMESTAMP_RANGE in caught.value.message


def test_check_timestamp_returns_an_instant_in_range_in_utc() -> None:
    moment = datetime(2026, 12, 5, 10, tzinfo=timezone(timedelta(hours=1)))

    checked = check_timestamp(moment, "issued_at")

    assert checked == moment
    assert checked.utcoffset() == timedelta(0)


# --------------------------------------------------------------------------- property


def stamp(moment: datetime, offset_minutes: int) -> str:
    return moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes))).isoformat()


#: Strings with a NUL character somewhere.
nul_texts = st.builds(
    lambda before, after: f"{before}\x00{after}", st.text(max_size=5), st.text(max_size=5)
)
#: Instants at either end of the years 1..9999, with any offset up to ±14:00.
extreme_stamps = st.one_of(
    st.sampled_from(
        [
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:00:00-14:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            "0001-01-02T00:00:00Z",
            "9999-12-30T23:59:59.999999Z",
        ]
    ),
    st.builds(
        stamp,
        st.datetimes(max_value=datetime(1, 1, 3)) | st.datetimes(min_value=datetime(9999, 12, 29)),
        st.integers(-14 * 60, 14 * 60),
    ),
)
hostile_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    nul_texts,
    extreme_stamps,
)
hostile_values = st.recursive(
    hostile_leaves,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=4) | nul_texts, children, max_size=3)
    ),
    max_leaves=8,
)
#: Where a hostile value may land in an otherwise valid command.
HOSTILE_PATHS = [
    "command_id",
    "audience",
    "auth",
    "auth.key_id",
    "auth.signature",
    "request_id",
    "reason",
    "issued_at",
    "metadata",
    "metadata.inner",
    "actor.id",
    "actor.name",
    "args.expires_at",
    "args.metadata",
    "args.metadata.inner",
    "args.intent.metadata",
    "args.intent.description",
    "args.intent.tags",
    "args.current_state_version",
    "args.approval_id",
]


def strings_in(value: Any) -> list[str]:
    """Every string and key inside a JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in [key, *strings_in(item)]]
    if isinstance(value, list | tuple):
        return [s for item in value for s in strings_in(item)]
    return []


def metadata_of(command: Command) -> list[dict[str, Any]]:
    found = [command.metadata]
    if isinstance(command.args, SubmitArgs):
        found += [command.args.metadata, command.args.intent.metadata]
    return found


@settings(max_examples=400, deadline=None)
@given(
    type_=st.sampled_from(ALL_TYPES),
    path=st.sampled_from(HOSTILE_PATHS),
    value=st.one_of(nul_texts, extreme_stamps, hostile_values),
)
def test_any_nul_or_extreme_instant_gives_a_command_or_a_clean_refusal(
    type_: str, path: str, value: Any
) -> None:
    # Given a valid command with a hostile value put somewhere in it
    payload = changed(VALID_COMMANDS[type_], path, value)

    # When it is parsed
    try:
        command = parse_command(payload)
    except InvalidCommand as exc:
        # Then it is refused cleanly, with a message any event, log or database can hold
        assert "\x00" not in exc.message
        exc.message.encode("utf-8")
        return
    # Or it is accepted, and then everything the database will store can be stored
    for metadata in metadata_of(command):
        assert json.loads(canonical_json(metadata)) == metadata
        assert not any("\x00" in text for text in strings_in(metadata))
    for when in (command.issued_at, getattr(command.args, "expires_at", None)):
        assert when is None or EARLIEST_TIMESTAMP <= when <= LATEST_TIMESTAMP
    assert len(command_digest(command)) == 64


@pytest.mark.parametrize("number", [2**53, -(2**53), 1e20, -1.5e16])
def test_a_metadata_number_beyond_what_a_signature_and_the_chain_can_spell_is_refused(
    number: float,
) -> None:
    payload = changed(command_payload("approve"), "metadata", {"n": [number]})
    with pytest.raises(InvalidCommand) as raised:
        parse_command(payload)
    assert raised.value.field == "metadata.n[0]"


def test_a_metadata_number_at_the_edge_of_what_json_spells_exactly_is_kept() -> None:
    payload = changed(command_payload("approve"), "metadata", {"n": 2**53 - 1, "f": 1.5e15})
    assert parse_command(payload).metadata == {"n": 2**53 - 1, "f": 1.5e15}


@pytest.mark.parametrize("auth", [{"signature": "AAAA"}, {"key_id": "k-1"}, {}])
def test_an_auth_missing_a_member_passes_validation_for_authentication_to_refuse(
    auth: dict[str, Any],
) -> None:
    # (a well-formed auth that cannot verify is unauthenticated, not invalid_command)
    command = parse_command(changed(command_payload("approve"), "auth", auth))
    assert command.auth is not None
    assert (command.auth.key_id, command.auth.signature) == (
        auth.get("key_id", ""),
        auth.get("signature", ""),
    )


def test_a_python_caller_may_spell_the_enumerated_fields_with_enum_members() -> None:
    payload = command_payload("approve", expected_revision=3)
    payload["type"] = CommandType.APPROVE
    payload["actor"]["type"] = ActorType.SERVICE

    command = parse_command(payload)

    assert (command.type, command.actor.type) == (CommandType.APPROVE, ActorType.SERVICE)
