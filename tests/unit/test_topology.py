"""The broker names the wire contract fixes."""

from __future__ import annotations

from governance import topology


def test_commands_go_to_the_apply_command_task_on_the_commands_queue() -> None:
    assert topology.APPLY_COMMAND_TASK == "governance.apply_command"
    assert topology.COMMANDS_QUEUE == "governance.commands"


def test_malformed_messages_go_to_the_dead_letter_queue() -> None:
    assert topology.DEAD_LETTER_QUEUE == "governance.commands.dead"


def test_events_are_published_to_the_governance_events_exchange() -> None:
    assert topology.EVENTS_EXCHANGE == "governance.events"
