"""Who may decide, through a real worker in its default (signed) mode: the roles table,
separation of duties, group requirements, key revocation and rotation, the worker's own
actor; and development mode, which takes the actor as asserted."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest

from governance.topology import APPLY_COMMAND_TASK, COMMANDS_QUEUE, DEFAULT_AUDIENCE
from producer.keys import generate
from producer.signing import sign_command
from tests.integration.helpers import PATIENCE, Sender
from tests.support.commands import command, new_id, submit
from tests.support.events import EventListener
from tests.support.identities import key_for, register, sign
from tests.support.processes import WorkerProcess
from tests.support.services import spare_vhost
from worker import registry

pytestmark = [pytest.mark.integration, pytest.mark.system]


def send(sender: Sender, events: EventListener, payload: dict[str, Any]) -> dict[str, Any]:
    """Publish ``payload`` as given and return its outcome event."""
    sender.client.send_task(APPLY_COMMAND_TASK, args=[payload], queue=COMMANDS_QUEUE)
    return events.wait_for([payload["command_id"]], timeout=PATIENCE)[payload["command_id"]]


def code(event: dict[str, Any]) -> str:
    return "applied" if event["event_type"] == "transition.applied" else event["rejection"]["code"]


def actor(database_url: str, *roles: str, groups: tuple[str, ...] = ()) -> str:
    """A new registered actor with exactly these roles and groups."""
    actor_id = new_id("actor")
    register(database_url, actor_id, roles=roles, groups=groups)
    return actor_id


def submitted(
    sender: Sender, events: EventListener, by: str, **submit_args: Any
) -> tuple[str, dict[str, Any]]:
    request_id = new_id()
    event = send(sender, events, sign(submit(request_id, actor=by, **submit_args)))
    assert code(event) == "applied", event
    return request_id, event


def by(actor_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    return sign({**payload, "actor": {"id": actor_id}})


def grant(actor_id: str, request_id: str, revision: int, approval_id: str) -> dict[str, Any]:
    """``actor_id``'s signed approval of one requirement."""
    payload = command(
        "approve_requirement", request_id, revision, args={"approval_id": approval_id}
    )
    return by(actor_id, payload)


# --------------------------------------------------------------------------- roles


def test_a_command_outside_the_actor_s_roles_is_forbidden_naming_the_role(
    running_worker: WorkerProcess, sender: Sender, events: EventListener, database_url: str
) -> None:
    requester = actor(database_url, "requester")
    approver = actor(database_url, "approver")
    request_id, _ = submitted(sender, events, requester, initial_status="pending")
    refused = send(sender, events, by(approver, command("cancel", request_id, 1)))
    assert code(refused) == "forbidden"
    assert "role operator" in refused["rejection"]["message"]
    also_refused = send(sender, events, by(approver, submit(new_id())))
    assert code(also_refused) == "forbidden"
    assert "role requester" in also_refused["rejection"]["message"]


def test_a_requester_may_cancel_its_own_request_but_not_another_s(
    running_worker: WorkerProcess, sender: Sender, events: EventListener, database_url: str
) -> None:
    mine, theirs = actor(database_url, "requester"), actor(database_url, "requester")
    own, _ = submitted(sender, events, mine, initial_status="pending")
    other, _ = submitted(sender, events, theirs, initial_status="pending")
    assert code(send(sender, events, by(mine, command("cancel", own, 1)))) == "applied"
    refused = send(sender, events, by(mine, command("cancel", other, 1)))
    assert code(refused) == "forbidden"


def test_an_operator_may_send_any_lifecycle_command_on_any_request(
    running_worker: WorkerProcess, sender: Sender, events: EventListener, database_url: str
) -> None:
    requester, operator = actor(database_url, "requester"), actor(database_url, "operator")
    request_id, _ = submitted(sender, events, requester, initial_status="pending")
    assert code(send(sender, events, by(operator, command("approve", request_id, 1)))) == "applied"
    executed = send(sender, events, by(operator, command("mark_executed", request_id, 2)))
    assert code(executed) == "applied"


def test_nobody_may_send_a_command_as_the_worker_s_own_system_actor(
    running_worker: WorkerProcess, sender: Sender, events: EventListener, database_url: str
) -> None:
    requester = actor(database_url, "requester")
    request_id, _ = submitted(sender, events, requester, initial_status="pending")
    forged = command("expire", request_id, 1)
    forged["actor"] = {"id": "system", "type": "system"}
    refused = send(sender, events, forged)
    assert code(refused) == "unauthenticated"


# --------------------------------------------------------------------------- separation of duties


def test_the_submitter_may_not_decide_its_own_requirement(
    running_worker: WorkerProcess, sender: Sender, events: EventListener, database_url: str
) -> None:
    submitter = actor(database_url, "requester", "approver")
    request_id, _ = submitted(sender, events, submitter, requirements=[{"approver_id": submitter}])
    refused = send(
        sender,
        events,
        by(
            submitter,
            command("approve_requirement", request_id, 1, args={"approval_id": "approval-1"}),
        ),
    )
    assert code(refused) == "approval_not_allowed"
    assert "never" in refused["rejection"]["message"]


def test_one_actor_decides_at_most_one_requirement_of_a_request(
    running_worker: WorkerProcess, sender: Sender, events: EventListener, database_url: str
) -> None:
    requester = actor(database_url, "requester")
    approver = actor(database_url, "approver", groups=("cab-x",))
    request_id, _ = submitted(
        sender,
        events,
        requester,
        requirements=[
            {"approver_id": approver, "step_order": 1},
            {"approver_group": "cab-x", "step_order": 2},
        ],
    )
    first = by(
        approver, command("approve_requirement", request_id, 1, args={"approval_id": "approval-1"})
    )
    assert code(send(sender, events, first)) == "applied"
    second = by(
        approver, command("approve_requirement", request_id, 2, args={"approval_id": "approval-2"})
    )
    assert code(send(sender, events, second)) == "approval_not_allowed"


def test_a_group_requirement_needs_min_approvals_distinct_members(
    running_worker: WorkerProcess, sender: Sender, events: EventListener, database_url: str
) -> None:
    requester = actor(database_url, "requester")
    group = new_id("grp")
    members = [actor(database_url, "approver", groups=(group,)) for _ in range(3)]
    outsider = actor(database_url, "approver")
    request_id, _ = submitted(
        sender,
        events,
        requester,
        requirements=[{"approver_group": group, "min_approvals": 2}],
    )

    def grant(who: str, revision: int) -> dict[str, Any]:
        return send(
            sender,
            events,
            by(
                who,
                command(
                    "approve_requirement", request_id, revision, args={"approval_id": "approval-1"}
                ),
            ),
        )

    assert code(grant(outsider, 1)) == "approval_not_allowed"
    first = grant(members[0], 1)
    assert code(first) == "applied" and first["to_status"] == "pending"
    assert code(grant(members[0], 2)) == "approval_not_allowed"
    second = grant(members[1], 2)
    assert code(second) == "applied" and second["to_status"] == "approved"
    (requirement,) = second["request"]["approval_requirements"]
    assert [g["actor_id"] for g in requirement["grants"]] == members[:2]


def two_member_requirement(
    sender: Sender, events: EventListener, database_url: str
) -> tuple[str, list[str], str]:
    """A request waiting for two members of a fresh group, the first member's grant applied:
    the request, the members, the group."""
    requester = actor(database_url, "requester")
    group = new_id("grp")
    members = [actor(database_url, "approver", groups=(group,)) for _ in range(3)]
    request_id, _ = submitted(
        sender, events, requester, requirements=[{"approver_group": group, "min_approvals": 2}]
    )
    first = send(sender, events, grant(members[0], request_id, 1, "approval-1"))
    assert code(first) == "applied"
    return request_id, members, group


def test_a_grant_by_a_member_who_left_the_group_is_voided_when_the_requirement_completes(
    running_worker: WorkerProcess,
    sender: Sender,
    events: EventListener,
    database_url: str,
    db: psycopg.Connection[Any],
) -> None:
    # Given the first of two grants came from a member who has since left the group
    request_id, members, group = two_member_requirement(sender, events, database_url)
    registry.remove_group(db, members[0], group)
    # When a second member grants
    second = send(sender, events, grant(members[1], request_id, 2, "approval-1"))
    # Then the first grant is recorded as void and not counted: the request still waits
    assert code(second) == "applied" and second["to_status"] == "pending"
    assert [(d["category"], d["type"]) for d in second["decisions"]] == [
        ("approval", "grant_voided"),
        ("approval", "granted"),
    ]
    assert second["decisions"][0]["metadata"]["voided_actor_id"] == members[0]
    (requirement,) = second["request"]["approval_requirements"]
    assert [g["actor_id"] for g in requirement["grants"]] == [members[1]]
    # And a third member's grant completes it
    third = send(sender, events, grant(members[2], request_id, 3, "approval-1"))
    assert code(third) == "applied" and third["to_status"] == "approved"


def test_a_grant_signed_with_a_key_revoked_since_is_voided_when_the_requirement_completes(
    running_worker: WorkerProcess,
    sender: Sender,
    events: EventListener,
    database_url: str,
    db: psycopg.Connection[Any],
) -> None:
    # Given the first of two grants was signed with a key revoked since
    request_id, members, _ = two_member_requirement(sender, events, database_url)
    registry.revoke_key(db, key_for(members[0]).key_id)
    # When a second member grants
    second = send(sender, events, grant(members[1], request_id, 2, "approval-1"))
    # Then the first grant no longer counts
    assert code(second) == "applied" and second["to_status"] == "pending"
    assert "revoked" in second["decisions"][0]["metadata"]["why"]


# --------------------------------------------------------------------------- keys


def test_a_revoked_key_is_refused_from_the_next_command_on_and_a_rotated_key_signs(
    running_worker: WorkerProcess,
    sender: Sender,
    events: EventListener,
    database_url: str,
    db: psycopg.Connection[Any],
) -> None:
    requester, operator = actor(database_url, "requester"), actor(database_url, "operator")
    request_id, _ = submitted(sender, events, requester, initial_status="created")
    # Given the operator's key revoked after it signed a command that was applied
    moved = by(
        operator, command("move_to_pending", request_id, 1, args={"pending_reason": "quota"})
    )
    assert code(send(sender, events, moved)) == "applied"
    registry.revoke_key(db, key_for(operator).key_id)
    # When it signs the next one, it is refused
    refused = send(sender, events, by(operator, command("approve", request_id, 2)))
    assert code(refused) == "unauthenticated" and "revoked" in refused["rejection"]["message"]
    # And a new key registered for it signs again
    rotated = generate(operator)
    registry.add_key(db, operator, rotated.public_key_b64, rotated.key_id)
    payload = {**command("approve", request_id, 2), "actor": {"id": operator}}
    applied = send(sender, events, sign_command(payload, rotated, audience=DEFAULT_AUDIENCE))
    assert code(applied) == "applied"


# --------------------------------------------------------------------------- development mode


def test_in_development_mode_unsigned_commands_apply_unauthenticated_and_the_worker_warns(
    development_database_url: str, broker_url: str, tmp_path: Path
) -> None:
    # Given a development-mode worker alone on a virtual host of its own (the module's signed
    # worker goes on serving the other tests, whatever order they run in)
    with spare_vhost(broker_url) as url:
        worker = WorkerProcess(
            development_database_url,
            url,
            concurrency=1,
            log_path=tmp_path / "worker.log",
            extra_env={"GOVERNANCE_AUTH": "off"},
            extra_args=("-n", f"dev-{new_id('w')}@%h"),
        )
        try:
            worker.wait_ready()
            # When an unsigned command is sent
            with closing(Sender(url)) as sender, closing(EventListener(url)) as events:
                event = send(sender, events, submit(new_id(), initial_status="pending"))
        finally:
            worker.stop()
    # Then it is applied, unauthenticated, and the worker warned at start
    assert code(event) == "applied", event
    assert event["authenticated"] is False
    assert "DEVELOPMENT MODE" in (tmp_path / "worker.log").read_text()
