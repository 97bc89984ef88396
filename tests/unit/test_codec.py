"""The wire forms of commands and requests read back to what they were written from."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from governance.codec import (
    command_to_dict,
    request_from_dict,
    request_to_dict,
    requirement_from_dict,
    requirement_to_dict,
    timestamp_from_wire,
    timestamp_to_wire,
)
from governance.commands import parse_command
from governance.model import (
    ApprovalRequirement,
    ApprovalStatus,
    Grant,
    PendingReason,
    PolicyReference,
    RequirementSource,
    Status,
)

from .builders import (
    ALL_TYPES,
    EARLIER,
    THREE_APPROVERS,
    applied,
    group_requirement,
    issue,
    request_in_status,
    requirement,
    submit_payload,
    submitted,
    valid_commands,
)

VALID_COMMANDS = valid_commands()


@pytest.mark.parametrize("type_", ALL_TYPES)
def test_a_command_written_to_the_wire_parses_back_to_an_equal_command(type_: str) -> None:
    command = parse_command(copy.deepcopy(VALID_COMMANDS[type_]))

    wire = json.loads(json.dumps(command_to_dict(command), allow_nan=False))

    assert parse_command(wire) == command


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(submit_payload(), id="minimal-submit"),
        pytest.param(submit_payload(initial_status="approved"), id="approved-submit"),
        pytest.param(
            submit_payload(initial_status="pending", pending_reason="schedule"),
            id="pending-submit",
        ),
        pytest.param(
            {
                "command_id": "c",
                "type": "cancel",
                "request_id": "r",
                "expected_revision": 0,
                "actor": {"id": "a"},
            },
            id="minimal-cancel",
        ),
        pytest.param(
            {
                "command_id": "c",
                "type": "move_to_pending",
                "request_id": "r",
                "expected_revision": 2,
                "actor": {"id": "a"},
                "args": {"pending_reason": "quota"},
            },
            id="pending-without-expiry",
        ),
    ],
)
def test_a_minimal_command_round_trips_without_gaining_fields(payload: dict[str, object]) -> None:
    command = parse_command(payload)

    wire = command_to_dict(command)

    assert parse_command(wire) == command
    assert "reason" not in wire and "metadata" not in wire and "issued_at" not in wire


def test_a_submit_on_the_wire_states_no_expected_revision() -> None:
    assert "expected_revision" not in command_to_dict(parse_command(submit_payload()))


def test_a_request_round_trips_through_its_dictionary_with_its_history() -> None:
    # Given a request with a rich history: requirements granted, a schedule, metadata
    request = submitted(
        submit_payload(
            approval_requirements=THREE_APPROVERS,
            expected_state_version="v1",
            expires_at="2026-12-01T00:00:00Z",
            metadata={"pipeline": {"stage": 2}},
        )
    )
    request = applied(
        issue(request, "approve_requirement", actor_id="alice", approval_id="alice-1")
    ).request

    # When it is written as JSON and read back
    data = json.loads(json.dumps(request_to_dict(request, with_decisions=True), allow_nan=False))

    # Then it is the same request
    assert request_from_dict(data) == request


@pytest.mark.parametrize("status", list(Status), ids=str)
def test_a_request_in_any_status_round_trips(status: Status) -> None:
    request = request_in_status(
        status,
        requirements=(
            requirement("a-1", "alice", 1, ApprovalStatus.APPROVED),
            requirement("b-2", "bob", 2, ApprovalStatus.REJECTED),
            requirement("c-2", "carol", 2),
            group_requirement("g-3", "cab", 2, 3, granted_by=("dave",)),
            group_requirement("g-4", "ops", 1, 4, granted_by=("erin",)),
        ),
        expected_state_version="v3",
    )

    assert request_from_dict(request_to_dict(request, with_decisions=True)) == request


def test_a_request_dictionary_leaves_out_the_history_unless_asked() -> None:
    request = request_in_status(Status.APPROVED)

    assert "decisions" not in request_to_dict(request)
    assert request_from_dict(request_to_dict(request)).decisions == ()


def test_a_request_dictionary_uses_the_wire_spelling() -> None:
    data = request_to_dict(request_in_status(Status.PENDING, pending_reason=PendingReason.QUOTA))

    assert data["status"] == "pending"
    assert data["pending_reason"] == "quota"
    assert data["expires_at"] == "2026-11-28T15:00:00Z"
    assert data["intent"]["risk_level"] == "low"
    assert data["context"]["actor"] == {"id": "submitter", "name": None, "type": "user"}


def test_a_request_read_from_a_sparse_dictionary_takes_the_defaults() -> None:
    data = request_to_dict(request_in_status(Status.CREATED))
    for optional in ("pending_reason", "approval_requirements", "expires_at", "metadata"):
        del data[optional]
    data["intent"] = {"operation_name": "noop"}
    data["context"] = {"actor": {"id": "ci"}}

    request = request_from_dict(data)

    assert request.pending_reason is None
    assert request.approval_requirements == ()
    assert request.expires_at is None
    assert request.metadata == {}
    assert request.intent.operation_name == "noop"
    assert request.context.reason is None


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 28, 14, 0, tzinfo=UTC),
        datetime(2026, 11, 28, 16, 0, tzinfo=timezone(timedelta(hours=2))),
    ],
    ids=["utc", "plus-two"],
)
def test_timestamps_go_on_the_wire_in_utc_with_a_z(moment: datetime) -> None:
    assert timestamp_to_wire(moment) == "2026-11-28T14:00:00Z"
    assert timestamp_from_wire("2026-11-28T14:00:00Z") == moment


def test_a_missing_timestamp_stays_missing() -> None:
    assert timestamp_to_wire(None) is None
    assert timestamp_from_wire(None) is None


@pytest.mark.parametrize(
    "stamp",
    ["0001-01-02T00:00:00Z", "0001-01-02T14:00:00+14:00", "9999-12-30T23:59:59.999999Z"],
)
def test_a_command_at_either_end_of_the_timestamp_range_round_trips(stamp: str) -> None:
    payload = copy.deepcopy(VALID_COMMANDS["move_to_pending"])
    payload.update(issued_at=stamp)
    payload["args"]["expires_at"] = stamp
    command = parse_command(payload)

    wire = json.loads(json.dumps(command_to_dict(command)))

    assert parse_command(wire) == command
    assert wire["issued_at"] == wire["args"]["expires_at"] == timestamp_to_wire(command.issued_at)


def test_a_requirement_shows_its_group_and_its_grants_in_the_wire_spelling() -> None:
    # Given a 2-of-N group requirement with one grant
    grant = Grant(actor_id="alice", decided_at=EARLIER, reason="looks fine")
    data = requirement_to_dict(
        ApprovalRequirement(
            approval_id="cab-1", approver_group="cab", min_approvals=2, grants=(grant,)
        )
    )

    # Then its dictionary names the group, the approvals needed and each grant
    assert (data["approver_id"], data["approver_group"], data["min_approvals"]) == (None, "cab", 2)
    assert data["grants"] == [
        {"actor_id": "alice", "decided_at": "2026-11-28T13:00:00Z", "reason": "looks fine"}
    ]
    assert data["status"] == "pending"
    assert requirement_from_dict(json.loads(json.dumps(data))).grants == (grant,)


def test_a_named_requirement_shows_no_group_and_no_grants() -> None:
    data = requirement_to_dict(requirement("a-1", "alice"))

    assert (data["approver_id"], data["approver_group"], data["min_approvals"]) == (
        "alice",
        None,
        1,
    )
    assert data["grants"] == []


def test_a_requirement_stored_before_groups_reads_as_a_named_one_without_grants() -> None:
    # Given a stored requirement row written before requirements had groups
    old_row = {
        "approval_id": "a-1",
        "approver_id": "alice",
        "approver_name": "Alice",
        "description": None,
        "step_order": 1,
        "status": "approved",
        "decided_at": "2026-11-28T13:00:00Z",
        "decided_by": "alice",
        "reason": "ok",
    }

    # When it is read
    read = requirement_from_dict(old_row)

    # Then it is the named requirement it was, with the new fields' defaults
    assert read == ApprovalRequirement(
        approval_id="a-1",
        approver_id="alice",
        approver_name="Alice",
        status=ApprovalStatus.APPROVED,
        decided_at=EARLIER,
        decided_by="alice",
        reason="ok",
    )
    assert (read.approver_group, read.min_approvals, read.grants) == (None, 1, ())


def test_a_request_stored_before_groups_still_loads() -> None:
    data = request_to_dict(
        request_in_status(Status.PENDING, requirements=(requirement("a-1", "alice"),))
    )
    for stale in ("approver_group", "min_approvals", "grants"):
        del data["approval_requirements"][0][stale]

    assert request_from_dict(data).approval_requirements == (requirement("a-1", "alice"),)


POLICY = PolicyReference(version=3, sha256="ab" * 32, rule_id="critical-accounts")


def test_a_request_under_a_policy_round_trips_with_its_reference_and_sources() -> None:
    # Given a request submitted under policy version 3, with a policy and a requester step
    request = replace(
        request_in_status(
            Status.PENDING,
            pending_reason=PendingReason.APPROVAL,
            requirements=(
                replace(group_requirement("policy-1", "sre", 2), source=RequirementSource.POLICY),
                requirement("approval-1", "alice", 2),
            ),
        ),
        policy=POLICY,
    )

    # When it is written as JSON and read back
    data = json.loads(json.dumps(request_to_dict(request, with_decisions=True)))

    # Then the reference and each requirement's source are on the wire and read back
    assert data["policy"] == {"version": 3, "sha256": "ab" * 32, "rule_id": "critical-accounts"}
    assert [r["source"] for r in data["approval_requirements"]] == ["policy", "requester"]
    assert request_from_dict(data) == request


def test_a_request_without_a_policy_says_policy_null() -> None:
    assert request_to_dict(request_in_status(Status.CREATED))["policy"] is None


def test_a_request_stored_before_the_approval_policy_reads_as_the_requesters_own() -> None:
    # Given a request row written before requests had a policy and requirements a source
    data = request_to_dict(
        request_in_status(Status.PENDING, requirements=(requirement("a-1", "alice"),))
    )
    del data["policy"]
    del data["approval_requirements"][0]["source"]

    # When it is read
    read = request_from_dict(data)

    # Then it has no policy, and the requester asked for its requirement
    assert read.policy is None
    assert read.approval_requirements[0].source is RequirementSource.REQUESTER


def test_a_submit_with_a_group_requirement_round_trips_and_a_named_one_gains_no_fields() -> None:
    payload = submit_payload(
        approval_requirements=[
            {"approval_id": "a-1", "approver_id": "alice"},
            {"approval_id": "g-2", "approver_group": "cab", "min_approvals": 2, "step_order": 2},
        ]
    )
    command = parse_command(payload)

    wire = command_to_dict(command)

    assert parse_command(json.loads(json.dumps(wire))) == command
    assert wire["args"]["approval_requirements"] == [
        {"approval_id": "a-1", "approver_id": "alice", "step_order": 1},
        {"approval_id": "g-2", "approver_group": "cab", "min_approvals": 2, "step_order": 2},
    ]


def test_a_signed_command_keeps_its_audience_and_signature_on_the_wire() -> None:
    command = parse_command(copy.deepcopy(VALID_COMMANDS["approve"]))

    wire = command_to_dict(command)

    assert wire["audience"] == VALID_COMMANDS["approve"]["audience"]
    assert wire["auth"] == VALID_COMMANDS["approve"]["auth"]
