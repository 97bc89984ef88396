"""``governance dlq``: look into the dead-letter queue, replay or purge what is there."""

from __future__ import annotations

import json
from typing import Any

import click

from governance_cli.options import broker_url_option


def _queue(broker_url: str) -> Any:
    from producer.deadletters import DeadLetterQueue

    return DeadLetterQueue(broker_url)


def _keys(keys: tuple[str, ...], all_: bool, verb: str) -> list[str] | None:
    if all_ and keys:
        raise click.UsageError(f"give KEY... or --all to {verb}, not both")
    if not all_ and not keys:
        raise click.UsageError(f"name the dead letters to {verb} (KEY...), or pass --all")
    return None if all_ else list(keys)


def register(cli: click.Group) -> None:
    """Add the ``dlq`` group to ``cli``."""

    @cli.group()
    def dlq() -> None:
        """The dead-letter queue (governance.commands.dead): messages no event could answer.

        A dead letter is named by its command_id, or by sha256:<digest> when its body is not
        a command object.
        """

    @dlq.command("list")
    @broker_url_option
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
    def list_(broker_url: str, as_json: bool) -> None:
        """List the dead letters, oldest first, with the cause and the reason of each.

        A line: key, command type, request id, cause (not_a_task, unknown_task, undecodable,
        invalid_task, wrong_arguments, not_a_command, poison or lost_deliveries; "-" for a
        letter that names none) and the reason."""
        letters = _queue(broker_url).list()
        for letter in letters:
            summary = letter.summary()
            if as_json:
                click.echo(json.dumps(summary, ensure_ascii=False))
            else:
                click.echo(
                    f"{summary['key']}\t{summary['type'] or '-'}\t"
                    f"{summary['request_id'] or '-'}\t{summary['cause'] or '-'}\t"
                    f"{summary['reason']}"
                )
        if not as_json:
            click.echo(f"{len(letters)} dead letter(s)", err=True)

    @dlq.command()
    @broker_url_option
    @click.argument("key")
    def show(broker_url: str, key: str) -> None:
        """Print one dead letter in full (reason, headers, body) as JSON."""
        from producer.deadletters import DeadLetterError

        try:
            letter = _queue(broker_url).show(key)
        except DeadLetterError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(json.dumps(letter.detail(), indent=2, ensure_ascii=False, default=repr))

    @dlq.command()
    @broker_url_option
    @click.argument("keys", nargs=-1)
    @click.option(
        "--all",
        "all_",
        is_flag=True,
        help="Replay every dead letter that carries a command; skip the others.",
    )
    def replay(broker_url: str, keys: tuple[str, ...], all_: bool) -> None:
        """Send dead-lettered commands again through the normal path (idempotent by
        command_id), removing them from the dead-letter queue; prints the key of each.

        A dead letter that carries no command (a sha256: key) would only be dead-lettered
        again, its reason lost: naming one is an error (exit 1, nothing replayed), and
        --all skips it, leaving it in the queue with its reason, names it on stderr and
        still exits 0. Purge such letters once read.
        """
        from producer.deadletters import DeadLetterError

        try:
            replay = _queue(broker_url).replay(_keys(keys, all_, "replay"))
        except DeadLetterError as exc:
            raise click.ClickException(str(exc)) from exc
        for letter in replay.replayed:
            click.echo(letter.key)
        for letter in replay.skipped:
            click.echo(f"skipped {letter.key}: not a command ({letter.reason})", err=True)
        summary = f"{len(replay.replayed)} dead letter(s) replayed"
        if replay.skipped:
            summary += f", {len(replay.skipped)} skipped (not commands; still in the queue)"
        click.echo(summary, err=True)

    @dlq.command()
    @broker_url_option
    @click.argument("keys", nargs=-1)
    @click.option("--all", "all_", is_flag=True, help="Remove every dead letter.")
    def purge(broker_url: str, keys: tuple[str, ...], all_: bool) -> None:
        """Remove dead letters for good."""
        from producer.deadletters import DeadLetterError

        try:
            purged = _queue(broker_url).purge(_keys(keys, all_, "purge"))
        except DeadLetterError as exc:
            raise click.ClickException(str(exc)) from exc
        for letter in purged:
            click.echo(letter.key)
        click.echo(f"{len(purged)} dead letter(s) purged", err=True)
