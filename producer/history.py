"""The history check: did a run of commands keep the service's guarantees?

Give it what a producer knows (the commands it sent, the outcome events it received, the
messages it found dead-lettered) and the database, and it reports every way the run broke
the service's guarantees:

- every command has exactly one outcome: one event (duplicates of the *same* ``event_id``
  are fine, delivery is at least once) or a dead letter with a reason, never both, never
  two different events; and a command the ledger records as committed is never
  dead-lettered, whether or not its event was received;
- no ``command_id`` was applied twice (outbox and decision history);
- each request's revision equals the number of its applied events, and its applied events
  arrived in revision order;
- nothing of the run is left unpublished in the outbox (``published_at IS NULL``) and,
  when a broker URL is given, nothing is left in the command queue.

It only reads: the database session is read-only, the queue is inspected with a passive
declare. Run it after the workers have finished (or been stopped, so that a message a
worker still holds unacknowledged is counted as waiting in the queue).

Usable in a deployment's own CI::

    report = check_history(commands=sent, events=received, database_url=url)
    report.assert_clean()
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from governance.events import APPLIED
from governance.topology import COMMANDS_QUEUE, RETRY_QUEUE
from producer.event_log import LogPage, LogPosition, read_page

#: Rejections that are answered without a ledger record of their own (the id belongs to
#: another command), so they need not match the ledger's event for their command_id.
_UNRECORDED_CODES = frozenset({"duplicate_command", "invalid_command"})


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken guarantee, with the command or request it concerns."""

    kind: str
    message: str
    command_id: str | None = None
    request_id: str | None = None

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A message found in the dead-letter queue: its command_id if it has one, and why."""

    command_id: str | None
    reason: str


@dataclass
class HistoryReport:
    """What the check found; empty ``violations`` means the run kept every guarantee."""

    violations: list[Violation] = field(default_factory=list)
    commands_checked: int = 0
    requests_checked: int = 0

    @property
    def clean(self) -> bool:
        return not self.violations

    def assert_clean(self, limit: int = 25) -> None:
        """Raise ``AssertionError`` listing the violations (at most ``limit`` of them)."""
        if self.violations:
            shown = "\n".join(f"  {v}" for v in self.violations[:limit])
            more = len(self.violations) - limit
            tail = f"\n  ... and {more} more" if more > 0 else ""
            raise AssertionError(
                f"history check found {len(self.violations)} violation(s) over "
                f"{self.commands_checked} command(s):\n{shown}{tail}"
            )


def check_history(
    *,
    commands: Iterable[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
    database_url: str,
    dead_letters: Iterable[DeadLetterRecord] = (),
    broker_url: str | None = None,
    queues: Iterable[str] = (COMMANDS_QUEUE, RETRY_QUEUE),
) -> HistoryReport:
    """Check a run; see the module docstring for what is checked.

    ``commands`` are the command objects sent (a command sent several times may appear
    several times); ``events`` the outcome events received, in arrival order, duplicates
    included; ``dead_letters`` the dead-letter queue's messages.
    """
    sent: dict[str, Mapping[str, Any]] = {}
    for command in commands:
        command_id = command.get("command_id")
        if isinstance(command_id, str):
            sent.setdefault(command_id, command)
    received = list(events)
    letters: dict[str, list[DeadLetterRecord]] = defaultdict(list)
    for letter in dead_letters:
        if letter.command_id is not None:
            letters[letter.command_id].append(letter)

    report = HistoryReport(commands_checked=len(sent))
    by_command: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for event in received:
        by_command[str(event.get("command_id"))].setdefault(str(event.get("event_id")), event)

    with psycopg.connect(database_url, autocommit=False) as conn:
        conn.execute("SET TRANSACTION READ ONLY")
        outbox = _outbox_by_event_id(conn, {str(e.get("event_id")) for e in received})
        ledger = _ledger_events(conn, list(sent))
        report.violations += _check_outcomes(sent, by_command, letters, outbox, ledger)
        report.violations += _check_applied_once(conn)
        request_ids = {
            str(c["request_id"]) for c in sent.values() if isinstance(c.get("request_id"), str)
        } | {str(e["request_id"]) for e in received if e.get("request_id")}
        report.requests_checked = len(request_ids)
        report.violations += _check_requests(conn, sorted(request_ids), received)
        report.violations += _check_outbox_published(conn, sorted(sent), sorted(request_ids))
    if broker_url is not None:
        report.violations += _check_queues_empty(broker_url, queues)
    return report


def _outbox_by_event_id(
    conn: psycopg.Connection[Any], event_ids: set[str]
) -> dict[str, tuple[int, str]]:
    ids = [e for e in event_ids if _is_uuid(e)]
    rows = conn.execute(
        "SELECT event_id::text, sequence, command_id FROM outbox_events "
        "WHERE event_id = ANY(%s::uuid[])",
        (ids,),
    ).fetchall()
    return {row[0]: (int(row[1]), str(row[2])) for row in rows}


def _ledger_events(conn: psycopg.Connection[Any], command_ids: list[str]) -> dict[str, set[str]]:
    """The recorded outcome events of each command_id, in every signer's namespace."""
    rows = conn.execute(
        "SELECT p.command_id, o.event_id::text FROM processed_commands AS p "
        "JOIN outbox_events AS o ON o.sequence = p.event_sequence "
        "WHERE p.command_id = ANY(%s)",
        (command_ids,),
    ).fetchall()
    recorded: dict[str, set[str]] = {}
    for command_id, event_id in rows:
        recorded.setdefault(str(command_id), set()).add(str(event_id))
    return recorded


def _check_outcomes(
    sent: Mapping[str, Mapping[str, Any]],
    by_command: Mapping[str, Mapping[str, Mapping[str, Any]]],
    letters: Mapping[str, list[DeadLetterRecord]],
    outbox: Mapping[str, tuple[int, str]],
    ledger: Mapping[str, set[str]],
) -> list[Violation]:
    found: list[Violation] = []
    for command_id, command in sent.items():
        request_id = command.get("request_id")
        rid = request_id if isinstance(request_id, str) else None
        outcomes = by_command.get(command_id, {})
        dead = letters.get(command_id, [])
        if not outcomes and not dead:
            found.append(
                Violation("no_outcome", f"command {command_id} has no outcome", command_id, rid)
            )
            continue
        if len(outcomes) > 1:
            found.append(
                Violation(
                    "several_outcomes",
                    f"command {command_id} has {len(outcomes)} different outcome events: "
                    f"{sorted(outcomes)}",
                    command_id,
                    rid,
                )
            )
        if outcomes and dead:
            found.append(
                Violation(
                    "event_and_dead_letter",
                    f"command {command_id} has an outcome event and was also dead-lettered "
                    f"({dead[0].reason!r})",
                    command_id,
                    rid,
                )
            )
        if dead and not outcomes and command_id in ledger:
            # Its event may not have reached this producer (yet): the ledger says the
            # command was committed all the same, and nothing committed may be parked.
            found.append(
                Violation(
                    "committed_and_dead_lettered",
                    f"command {command_id} was committed (its outcome is recorded) and was "
                    f"also dead-lettered ({dead[0].reason!r})",
                    command_id,
                    rid,
                )
            )
        for letter in dead:
            if not letter.reason.strip():
                found.append(
                    Violation(
                        "dead_letter_without_reason",
                        f"command {command_id} was dead-lettered without a reason",
                        command_id,
                        rid,
                    )
                )
        for event_id, event in outcomes.items():
            found += _check_event_against_log(command_id, rid, event_id, event, outbox, ledger)
    return found


def _check_event_against_log(
    command_id: str,
    request_id: str | None,
    event_id: str,
    event: Mapping[str, Any],
    outbox: Mapping[str, tuple[int, str]],
    ledger: Mapping[str, set[str]],
) -> list[Violation]:
    """An event must be the outbox's, with the outbox's sequence, and be the ledger's answer."""
    row = outbox.get(event_id)
    if row is None:
        return [
            Violation(
                "event_not_in_outbox",
                f"event {event_id} of command {command_id} is not in the outbox",
                command_id,
                request_id,
            )
        ]
    found: list[Violation] = []
    sequence, outbox_command = row
    if event.get("sequence") != sequence or outbox_command != command_id:
        found.append(
            Violation(
                "event_mismatch",
                f"event {event_id} says sequence {event.get('sequence')} for command "
                f"{command_id}; the outbox has sequence {sequence} for {outbox_command}",
                command_id,
                request_id,
            )
        )
    code = (event.get("rejection") or {}).get("code")
    recorded = ledger.get(command_id)
    if recorded and event_id not in recorded and code not in _UNRECORDED_CODES:
        found.append(
            Violation(
                "not_the_ledgers_outcome",
                f"command {command_id} got event {event_id}, but the ledger records "
                f"{', '.join(sorted(recorded))}",
                command_id,
                request_id,
            )
        )
    return found


def _check_applied_once(conn: psycopg.Connection[Any]) -> list[Violation]:
    found = [
        Violation(
            "applied_twice",
            f"command {command_id} has {count} applied events in the outbox",
            command_id,
        )
        for command_id, count in conn.execute(
            "SELECT command_id, count(*) FROM outbox_events WHERE event_type = %s "
            "GROUP BY command_id HAVING count(*) > 1 ORDER BY command_id",
            (APPLIED,),
        ).fetchall()
    ]
    found += [
        Violation(
            "applied_twice",
            f"command {command_id} wrote decisions at {count} revisions",
            command_id,
        )
        for command_id, count in conn.execute(
            "SELECT command_id, count(DISTINCT (request_id, revision)) FROM request_decisions "
            "GROUP BY command_id HAVING count(DISTINCT (request_id, revision)) > 1 "
            "ORDER BY command_id"
        ).fetchall()
    ]
    return found


def _check_requests(
    conn: psycopg.Connection[Any], request_ids: list[str], received: list[Mapping[str, Any]]
) -> list[Violation]:
    rows = conn.execute(
        "SELECT r.request_id, r.revision, "
        "  (SELECT count(*) FROM outbox_events AS o "
        "   WHERE o.request_id = r.request_id AND o.event_type = %s), "
        "  (SELECT count(DISTINCT d.revision) FROM request_decisions AS d "
        "   WHERE d.request_id = r.request_id) "
        "FROM mutation_requests AS r WHERE r.request_id = ANY(%s)",
        (APPLIED, request_ids),
    ).fetchall()
    found: list[Violation] = []
    for request_id, revision, applied, decided in rows:
        if revision != applied:
            found.append(
                Violation(
                    "revision_mismatch",
                    f"request {request_id} is at revision {revision} but has {applied} "
                    "applied events",
                    request_id=request_id,
                )
            )
        if revision != decided:
            found.append(
                Violation(
                    "revision_mismatch",
                    f"request {request_id} is at revision {revision} but has decisions at "
                    f"{decided} revisions",
                    request_id=request_id,
                )
            )
    found += _check_arrival_order(received)
    return found


def _check_arrival_order(received: list[Mapping[str, Any]]) -> list[Violation]:
    """Per request, the first arrival of each applied event must come in revision order."""
    seen: set[str] = set()
    last: dict[str, tuple[int, str]] = {}
    found: list[Violation] = []
    for event in received:
        event_id = str(event.get("event_id"))
        if event.get("event_type") != APPLIED or event_id in seen:
            continue
        seen.add(event_id)
        request_id = str(event.get("request_id"))
        revision = event.get("revision")
        if not isinstance(revision, int):
            continue
        previous = last.get(request_id)
        if previous is not None and revision <= previous[0]:
            found.append(
                Violation(
                    "out_of_order",
                    f"request {request_id}: event {event_id} (revision {revision}) arrived "
                    f"after event {previous[1]} (revision {previous[0]})",
                    str(event.get("command_id")),
                    request_id,
                )
            )
        last[request_id] = (revision, event_id)
    return found


def _check_outbox_published(
    conn: psycopg.Connection[Any], command_ids: list[str], request_ids: list[str]
) -> list[Violation]:
    # The run's own events: those of its commands, and those of its requests (an expiry
    # sweep's commands are not the producer's), whatever else shares the database.
    return [
        Violation(
            "unpublished",
            f"outbox event {sequence} (command {command_id}) was never published",
            command_id,
            request_id,
        )
        for sequence, command_id, request_id in conn.execute(
            "SELECT sequence, command_id, request_id FROM outbox_events "
            "WHERE published_at IS NULL "
            "AND (command_id = ANY(%s::text[]) OR request_id = ANY(%s::text[])) "
            "ORDER BY sequence LIMIT 100",
            (command_ids, request_ids),
        ).fetchall()
    ]


def _check_queues_empty(broker_url: str, queues: Iterable[str]) -> list[Violation]:
    import kombu

    found: list[Violation] = []
    with kombu.Connection(broker_url, connect_timeout=5) as connection:
        for name in queues:
            channel = connection.channel()
            try:
                _, waiting, _ = channel.queue_declare(name, passive=True)
            except Exception:  # the queue was never declared: nothing can wait in it
                continue
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
            if waiting:
                found.append(
                    Violation("queue_not_empty", f"{waiting} message(s) left in queue {name}")
                )
    return found


def replay_outbox(
    conn: psycopg.Connection[Any], after: int | LogPosition = 0, limit: int = 10_000
) -> LogPage:
    """One page of the outbox's events for a replaying subscriber: the reference rule for
    replay used by the history tests.

    ``after`` is a sequence (start with the events above it) or the ``position`` of the
    previous page. Pages taken one after the other, each from the last one's position, give
    every committed event exactly once, however the writers' commits interleave with the
    pages: an event whose transaction is still open when a page is read is neither returned
    nor stepped over, it comes in a later page once committed, even when its sequence is
    below ones already returned. Per request, events come in revision order. See
    ``producer.event_log`` for the cursor and why it is gap-free. Use an autocommit (or idle)
    connection so that no snapshot is held between pages.
    """
    position = after if isinstance(after, LogPosition) else LogPosition(since=after)
    return read_page(conn, position, limit)


def _is_uuid(value: str) -> bool:
    import uuid

    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
