"""Submitting a request: the status it starts in and the decisions it starts with."""

from __future__ import annotations

from typing import Any

from governance.commands import parse_command
from governance.model import ActorType, DecisionCategory, PendingReason, RiskLevel, Status
from governance.rules import Outcome, RejectionCode, decide

from .builders import (
    LATER,
    NOW,
    OPERATOR,
    REQUEST_ID,
    THREE_APPROVERS,
    applied,
    kinds,
    rejected,
    request_in_status,
    submit_payload,
)


def submit(**args: Any) -> Outcome:
    return decide(None, parse_command(submit_payload(**args)), NOW)


def test_a_submitted_request_starts_at_revision_one_with_no_previous_status() -> None:
    outcome = applied(submit())

    assert outcome.request.revision == 1
    assert outcome.from_status is None
    assert outcome.request.request_id == REQUEST_ID
    assert outcome.request.created_at == outcome.request.updated_at == NOW


def test_submit_with_requirements_gives_submitted_pending_and_approval_requested() -> None:
    # When a request is submitted with approval requirements
    outcome = applied(submit(approval_requirements=THREE_APPROVERS))

    # Then it is pending approval, with submitted, pending and approval.requested
    assert outcome.request.status is Status.PENDING
    assert outcome.request.pending_reason is PendingReason.APPROVAL
    assert kinds(outcome.decisions) == [
        "lifecycle.submitted",
        "lifecycle.pending",
        "approval.requested",
    ]
    assert outcome.decisions[2].metadata == {"approval_ids": ["alice-1", "bob-2", "carol-2"]}
    assert outcome.request.decisions == outcome.decisions


def test_submit_approved_gives_submitted_then_approved() -> None:
    outcome = applied(submit(initial_status="approved"))

    assert outcome.request.status is Status.APPROVED
    assert outcome.request.pending_reason is None
    assert kinds(outcome.decisions) == ["lifecycle.submitted", "lifecycle.approved"]


def test_submit_created_gives_only_submitted() -> None:
    outcome = applied(submit(initial_status="created"))

    assert outcome.request.status is Status.CREATED
    assert kinds(outcome.decisions) == ["lifecycle.submitted"]


def test_submit_pending_without_requirements_gives_submitted_then_pending() -> None:
    outcome = applied(
        submit(initial_status="pending", pending_reason="schedule", expires_at="2026-11-28T15:00Z")
    )

    assert outcome.request.status is Status.PENDING
    assert outcome.request.pending_reason is PendingReason.SCHEDULE
    assert outcome.request.expires_at == LATER
    assert kinds(outcome.decisions) == ["lifecycle.submitted", "lifecycle.pending"]


def test_submit_generates_approval_ids_where_absent() -> None:
    outcome = applied(
        submit(
            approval_requirements=[
                {"approver_id": "alice"},
                {"approval_id": "bob-own", "approver_id": "bob"},
                {"approver_id": "carol", "step_order": 2},
            ]
        )
    )

    assert [r.approval_id for r in outcome.request.approval_requirements] == [
        "approval-1",
        "bob-own",
        "approval-3",
    ]


def test_submit_whose_generated_approval_id_collides_with_a_given_one_is_rejected() -> None:
    # Given requirements where the second's given id is what the first would be given
    outcome = submit(
        approval_requirements=[
            {"approver_id": "alice"},
            {"approval_id": "approval-1", "approver_id": "bob"},
        ]
    )

    # Then the command is rejected as invalid, naming the field
    rejection = rejected(outcome)
    assert rejection.code is RejectionCode.INVALID_COMMAND
    assert rejection.message.startswith("args.approval_requirements:")


def test_submit_records_who_submitted_why_and_what() -> None:
    payload = submit_payload(expected_state_version="v1", metadata={"pipeline": "deploy"})
    payload["reason"] = "quarterly rotation"
    payload["actor"] = {"id": "ci", "type": "service"}

    request = applied(decide(None, parse_command(payload), NOW)).request

    assert request.context.actor.id == "ci"
    assert request.context.actor.type is ActorType.SERVICE
    assert request.context.reason == "quarterly rotation"
    assert request.decisions[0].reason == "quarterly rotation"
    assert request.intent.risk_level is RiskLevel.HIGH
    assert request.intent.tags == ("keys", "billing")
    assert request.expected_state_version == "v1"
    assert request.metadata == {"pipeline": "deploy"}
    assert (request.state_id, request.state_type, request.mutation_type) == (
        "state-7",
        "service-config",
        "update",
    )


def test_submitting_a_request_that_exists_is_rejected_as_already_exists() -> None:
    # Given a request that already exists at revision 5
    current = request_in_status(Status.APPROVED, revision=5)

    # When it is submitted again
    rejection = rejected(decide(current, parse_command(submit_payload()), NOW))

    # Then the submit is refused, reporting the existing request
    assert rejection.code is RejectionCode.ALREADY_EXISTS
    assert rejection.current_revision == 5
    assert rejection.current_status is Status.APPROVED
    assert REQUEST_ID in rejection.message


def test_every_submit_decision_is_taken_by_the_submitter_at_the_decision_time() -> None:
    outcome = applied(submit(approval_requirements=THREE_APPROVERS))

    assert {d.actor.id for d in outcome.decisions} == {OPERATOR}
    assert {d.occurred_at for d in outcome.decisions} == {NOW}
    assert outcome.decisions[0].category is DecisionCategory.LIFECYCLE
