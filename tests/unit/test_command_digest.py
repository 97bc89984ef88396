"""The idempotency fingerprint of a validated command: a re-send is judged by what it means,
not by how it was spelled; any difference in meaning gives another fingerprint."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from governance.codec import command_to_dict
from governance.commands import command_digest, parse_command, payload_hash

from .builders import ALL_TYPES, command_payload, submit_payload, valid_commands

Edit = Callable[[dict[str, Any]], None]


def digest_of(payload: dict[str, Any]) -> str:
    return command_digest(parse_command(copy.deepcopy(payload)))


def edited(payload: dict[str, Any], edit: Edit) -> dict[str, Any]:
    result = copy.deepcopy(payload)
    edit(result)
    return result


def minimal_approve() -> dict[str, Any]:
    return {
        "command_id": "cmd-approve",
        "type": "approve",
        "request_id": "req-42",
        "expected_revision": 3,
        "actor": {"id": "alice"},
        "issued_at": "2026-12-05T09:00:00Z",
    }


def minimal_submit() -> dict[str, Any]:
    return {
        "command_id": "cmd-submit",
        "type": "submit",
        "request_id": "req-42",
        "actor": {"id": "alice"},
        "args": {
            "state_id": "state-7",
            "state_type": "config",
            "mutation_type": "update",
            "intent": {"operation_name": "raise-limit"},
            "approval_requirements": [{"approver_id": "bob"}],
            "expires_at": "2026-12-05T09:00:00Z",
        },
    }


def minimal_group_submit() -> dict[str, Any]:
    payload = minimal_submit()
    payload["args"]["approval_requirements"] = [{"approver_group": "cab", "min_approvals": 2}]
    return payload


def minimal_move_to_pending() -> dict[str, Any]:
    return {
        "command_id": "cmd-pending",
        "type": "move_to_pending",
        "request_id": "req-42",
        "expected_revision": 2,
        "actor": {"id": "alice"},
        "args": {"pending_reason": "schedule", "expires_at": "2026-12-05T09:00:00Z"},
    }


def set_args(**values: Any) -> Edit:
    return lambda payload: payload.setdefault("args", {}).update(values)


def set_intent(**values: Any) -> Edit:
    return lambda payload: payload["args"]["intent"].update(values)


def set_requirement(**values: Any) -> Edit:
    return lambda payload: payload["args"]["approval_requirements"][0].update(values)


def set_top(**values: Any) -> Edit:
    return lambda payload: payload.update(values)


def set_actor(**values: Any) -> Edit:
    return lambda payload: payload["actor"].update(values)


# (the payload, a re-spelling of it that means the same)
SAME_MEANING = [
    pytest.param(minimal_approve, set_top(reason=None), id="reason-null"),
    pytest.param(minimal_approve, set_top(metadata={}), id="metadata-empty"),
    pytest.param(minimal_approve, set_top(metadata=None), id="metadata-null"),
    pytest.param(minimal_approve, set_actor(type="user"), id="actor-type-default"),
    pytest.param(minimal_approve, set_actor(name=None), id="actor-name-null"),
    pytest.param(minimal_approve, set_top(args={}), id="args-empty-without-args"),
    pytest.param(minimal_approve, set_top(args=None), id="args-null-without-args"),
    pytest.param(
        minimal_approve, set_top(issued_at="2026-12-05T10:00:00+01:00"), id="issued-at-zone"
    ),
    pytest.param(minimal_approve, set_top(issued_at=None), id="issued-at-null"),
    pytest.param(
        minimal_approve, set_top(issued_at="2027-01-01T00:00:00Z"), id="issued-at-fresh-stamp"
    ),
    pytest.param(
        minimal_approve,
        lambda p: p.update(dict(reversed(list(p.items())))),
        id="key-order",
    ),
    pytest.param(
        minimal_move_to_pending,
        set_args(expires_at="2026-12-05T10:00:00+01:00"),
        id="expiry-in-another-zone",
    ),
    pytest.param(
        minimal_move_to_pending,
        set_args(expires_at="2026-12-05T09:00:00.000000z"),
        id="expiry-spelled-with-fraction",
    ),
    pytest.param(
        minimal_submit,
        set_args(expires_at="2026-12-05T04:00:00-05:00"),
        id="submit-expiry-in-another-zone",
    ),
    pytest.param(minimal_submit, set_top(expected_revision=0), id="submit-revision-zero"),
    pytest.param(minimal_submit, set_top(expected_revision=None), id="submit-revision-null"),
    pytest.param(minimal_submit, set_args(initial_status="pending"), id="derived-initial-status"),
    pytest.param(minimal_submit, set_args(pending_reason="approval"), id="derived-pending-reason"),
    pytest.param(minimal_submit, set_args(metadata={}), id="args-metadata-empty"),
    pytest.param(minimal_submit, set_args(expected_state_version=None), id="state-version-null"),
    pytest.param(minimal_submit, set_intent(category="general"), id="intent-category"),
    pytest.param(minimal_submit, set_intent(description=""), id="intent-description-empty"),
    pytest.param(minimal_submit, set_intent(description=None), id="intent-description-null"),
    pytest.param(minimal_submit, set_intent(risk_level="low"), id="intent-risk-level"),
    pytest.param(minimal_submit, set_intent(is_reversible=True), id="intent-reversible"),
    pytest.param(minimal_submit, set_intent(tags=[]), id="intent-tags-empty"),
    pytest.param(minimal_submit, set_intent(metadata={}), id="intent-metadata-empty"),
    pytest.param(minimal_submit, set_intent(blast_radius=None), id="blast-radius-null"),
    pytest.param(minimal_submit, set_intent(blast_radius={}), id="blast-radius-empty"),
    pytest.param(
        minimal_submit,
        set_intent(
            blast_radius={"scope": "single", "estimated_affected_count": 1, "description": ""}
        ),
        id="blast-radius-defaults",
    ),
    pytest.param(minimal_submit, set_requirement(step_order=1), id="requirement-step-one"),
    pytest.param(minimal_submit, set_requirement(approval_id=None), id="approval-id-null"),
    pytest.param(minimal_submit, set_requirement(approver_name=None), id="approver-name-null"),
    pytest.param(minimal_submit, set_requirement(description=None), id="requirement-no-text"),
    pytest.param(minimal_submit, set_requirement(min_approvals=1), id="min-approvals-one"),
    pytest.param(minimal_submit, set_requirement(approver_group=None), id="approver-group-null"),
    pytest.param(minimal_group_submit, set_requirement(approver_id=None), id="approver-id-null"),
    pytest.param(
        minimal_approve,
        set_top(auth={"key_id": "alice-1", "signature": "c2lnbmVk"}),
        id="a-signature",
    ),
    pytest.param(
        lambda: edited(minimal_approve(), set_top(auth={"key_id": "k-1", "signature": "b25l"})),
        set_top(auth={"key_id": "k-2", "signature": "YW5vdGhlcg"}),
        id="re-signed-with-another-key",
    ),
    pytest.param(minimal_approve, set_top(auth=None), id="auth-null"),
    pytest.param(minimal_approve, set_top(audience=None), id="audience-null"),
]


@pytest.mark.parametrize(("build", "respell"), SAME_MEANING)
def test_a_command_spelled_another_way_has_the_same_digest(
    build: Callable[[], dict[str, Any]], respell: Edit
) -> None:
    payload = build()
    other = edited(payload, respell)

    assert digest_of(other) == digest_of(payload)


def test_a_submit_without_requirements_spelled_with_every_default_has_the_same_digest() -> None:
    # Given a submit that says as little as it may
    bare = submit_payload(intent={"operation_name": "noop"})
    # And the same submit with every optional field spelled out with its default
    spelled = copy.deepcopy(bare)
    spelled.update(expected_revision=0, reason=None, metadata={}, issued_at=None)
    spelled["actor"].update(name="Operator", type="user")
    bare["actor"]["name"] = "Operator"
    spelled["args"].update(
        pending_reason=None,
        approval_requirements=[],
        expected_state_version=None,
        expires_at=None,
        metadata={},
    )
    spelled["args"]["intent"].update(
        category="general",
        description="",
        risk_level="low",
        is_reversible=True,
        blast_radius={"scope": "single", "estimated_affected_count": 1, "description": ""},
        tags=[],
        metadata={},
    )

    # Then both have one digest, though their raw payloads hash apart
    assert digest_of(spelled) == digest_of(bare)
    assert payload_hash(spelled) != payload_hash(bare)


def test_a_submit_asking_for_created_differs_from_one_that_leaves_its_status_out() -> None:
    # Under an approval policy the first may not start pending for approval, the second does
    bare = submit_payload(intent={"operation_name": "noop"})

    assert digest_of(edited(bare, set_args(initial_status="created"))) != digest_of(bare)


@pytest.mark.parametrize(
    ("args", "recorded"),
    [
        ({}, "b916dc9494ea4a9519200695d59d96fcd62c3c6ca561e62a38ab2038a45272df"),
        (
            {"initial_status": "approved"},
            "3477dbb6101a194e343299ac334417af661e3ef00223253f02fc8bfb01f9ebd2",
        ),
        (
            {"initial_status": "pending", "pending_reason": "schedule"},
            "2f5fbfc889309cf7c5aba9d32ac1cf0edf44f38fd27dcaca3dc9fc14237ed207",
        ),
    ],
    ids=["status-left-out", "approved", "pending"],
)
def test_a_submit_keeps_the_digest_recorded_before_submits_said_whether_a_status_was_given(
    args: dict[str, Any], recorded: str
) -> None:
    # The ledger compares a redelivered command's digest with the one it recorded
    assert digest_of(submit_payload(intent={"operation_name": "noop"}, **args)) == recorded


# (the payload, a change of what it means)
DIFFERENT_MEANING = [
    pytest.param(minimal_approve, set_top(reason="because"), id="a-reason"),
    pytest.param(minimal_approve, set_top(expected_revision=4), id="another-revision"),
    pytest.param(minimal_approve, set_top(request_id="req-43"), id="another-request"),
    pytest.param(minimal_approve, set_top(command_id="cmd-other"), id="another-command-id"),
    pytest.param(minimal_approve, set_top(type="cancel"), id="another-type"),
    pytest.param(minimal_approve, set_actor(id="bob"), id="another-actor"),
    pytest.param(minimal_approve, set_actor(name="Alice"), id="an-actor-name"),
    pytest.param(minimal_approve, set_actor(type="service"), id="another-actor-type"),
    pytest.param(minimal_approve, set_top(metadata={"k": 1}), id="some-metadata"),
    pytest.param(minimal_approve, set_top(metadata={"k": 1.0}), id="a-float-not-an-int"),
    pytest.param(minimal_approve, set_top(metadata={"k": True}), id="a-boolean-not-an-int"),
    pytest.param(
        minimal_move_to_pending,
        set_args(expires_at="2026-12-05T09:00:00+01:00"),
        id="same-wall-clock-another-instant",
    ),
    pytest.param(minimal_move_to_pending, set_args(expires_at=None), id="no-expiry"),
    pytest.param(minimal_move_to_pending, set_args(pending_reason="quota"), id="another-reason"),
    pytest.param(minimal_submit, set_requirement(approver_id="carol"), id="another-approver"),
    pytest.param(minimal_submit, set_requirement(approver_name="Bob"), id="an-approver-name"),
    pytest.param(minimal_submit, set_requirement(step_order=2), id="another-step"),
    pytest.param(
        minimal_submit, set_requirement(approval_id="approval-1"), id="an-explicit-approval-id"
    ),
    pytest.param(minimal_submit, set_intent(category="security"), id="another-category"),
    pytest.param(minimal_submit, set_intent(tags=["a", "b"]), id="some-tags"),
    pytest.param(minimal_submit, set_args(expected_state_version="v2"), id="a-state-version"),
    pytest.param(minimal_submit, set_args(metadata={"k": "v"}), id="request-metadata"),
    pytest.param(
        minimal_submit,
        set_requirement(approver_id=None, approver_group="bob"),
        id="a-group-not-a-named-approver",
    ),
    pytest.param(minimal_group_submit, set_requirement(approver_group="ops"), id="another-group"),
    pytest.param(minimal_group_submit, set_requirement(min_approvals=3), id="more-approvals"),
    pytest.param(minimal_group_submit, set_requirement(min_approvals=1), id="fewer-approvals"),
    pytest.param(minimal_approve, set_top(audience="governance"), id="an-audience"),
    pytest.param(
        lambda: edited(minimal_approve(), set_top(audience="staging")),
        set_top(audience="production"),
        id="another-audience",
    ),
]


@pytest.mark.parametrize(("build", "change"), DIFFERENT_MEANING)
def test_a_command_that_means_something_else_has_another_digest(
    build: Callable[[], dict[str, Any]], change: Edit
) -> None:
    payload = build()
    other = edited(payload, change)

    assert digest_of(other) != digest_of(payload)


def test_nested_metadata_keys_in_another_order_have_the_same_digest() -> None:
    first = edited(minimal_approve(), set_top(metadata={"a": {"x": 1, "y": [1, 2]}, "b": 2}))
    second = edited(minimal_approve(), set_top(metadata={"b": 2, "a": {"y": [1, 2], "x": 1}}))

    assert digest_of(first) == digest_of(second)


def test_tags_in_another_order_have_another_digest() -> None:
    first = edited(minimal_submit(), set_intent(tags=["a", "b"]))
    second = edited(minimal_submit(), set_intent(tags=["b", "a"]))

    assert digest_of(first) != digest_of(second)


@pytest.mark.parametrize("type_", ALL_TYPES)
def test_a_command_and_its_wire_form_have_the_same_digest(type_: str) -> None:
    command = parse_command(copy.deepcopy(valid_commands()[type_]))

    wire = json.loads(json.dumps(command_to_dict(command)))

    assert command_digest(parse_command(wire)) == command_digest(command)


def test_no_two_commands_of_different_types_share_a_digest() -> None:
    digests = {digest_of(payload) for payload in valid_commands().values()}

    assert len(digests) == len(ALL_TYPES)


def test_a_digest_is_never_the_raw_hash_of_any_payload() -> None:
    # The two fingerprints live side by side in one ledger: they must never coincide, even
    # for a payload that is spelled exactly as the canonical form.
    payload = command_payload("cancel", expected_revision=2)

    assert digest_of(payload) != payload_hash(payload)
    assert len(digest_of(payload)) == 64
