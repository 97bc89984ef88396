"""The client's builders for commands on an existing request come from one table."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from governance.commands import CommandType
from producer.client import GovernanceClient, TransitionBuilder

ARGS = {
    "move_to_pending": {"pending_reason": "approval"},
    "supersede": {"superseding_request_id": "req-2"},
    "approve_requirement": {"approval_id": "cab"},
    "reject_requirement": {"approval_id": "cab"},
    "resolve_version": {"current_state_version": "v2", "strategy": "reject_stale"},
}


@pytest.fixture
def client() -> GovernanceClient:
    # Building never touches the broker: the URL is never dialled.
    return GovernanceClient("amqp://nobody@127.0.0.1:1//")


def builders() -> list[str]:
    return [
        name
        for name, value in vars(GovernanceClient).items()
        if isinstance(value, TransitionBuilder)
    ]


def test_every_command_type_but_submit_has_a_table_builder() -> None:
    assert sorted(builders()) == sorted(t.value for t in CommandType if t is not CommandType.SUBMIT)


@pytest.mark.parametrize("name", builders())
def test_a_builder_makes_its_command_type_with_its_args(
    client: GovernanceClient, name: str
) -> None:
    command = getattr(client, name)("req-1", expected_revision=3, actor="ops", **ARGS.get(name, {}))

    assert (command.type, command.request_id, command.expected_revision) == (name, "req-1", 3)
    assert command.actor.id == "ops"


def test_an_argument_the_type_does_not_take_is_a_type_error(client: GovernanceClient) -> None:
    with pytest.raises(TypeError, match=r"approve.*'approval_id'"):
        client.approve("req-1", expected_revision=1, actor="ops", approval_id="cab")


def test_a_missing_required_argument_is_a_type_error(client: GovernanceClient) -> None:
    with pytest.raises(TypeError, match=r"resolve_version.*'strategy'"):
        client.resolve_version("req-1", expected_revision=1, actor="ops", current_state_version="v")


def test_a_datetime_argument_goes_out_in_utc(client: GovernanceClient) -> None:
    command = client.move_to_pending(
        "req-1",
        expected_revision=1,
        actor="ops",
        pending_reason="approval",
        expires_at=datetime(2031, 1, 1, 12, tzinfo=UTC),
    )

    assert command.args.expires_at == datetime(2031, 1, 1, 12, tzinfo=UTC)  # type: ignore[union-attr]
