"""The demo's tour: the guarantees of the service shown on a running pipeline.

Everything goes through the producer's public client, as any service would use it; only the
expiry sweep is triggered by hand (beat would do it every few seconds).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from producer import GovernanceClient
from producer.subscriptions import Subscription

INTENT = {
    "operation_name": "raise-rate-limit",
    "category": "configuration",
    "risk_level": "high",
    "blast_radius": {"scope": "module", "estimated_affected_count": 12},
}


@dataclass
class Report:
    """What the tour saw, checked at the end."""

    requests: dict[str, str] = field(default_factory=dict)  # request_id -> what it shows
    race: dict[str, str] = field(default_factory=dict)  # command_id -> outcome
    problems: list[str] = field(default_factory=list)


class EventPrinter:
    """Prints every event of the tour's requests as it arrives, and counts them."""

    def __init__(self, broker_url: str, as_json: bool, prefix: str) -> None:
        self.as_json = as_json
        self.prefix = prefix
        self.applied: Counter[str] = Counter()
        self.last: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.subscription = Subscription(broker_url)
        self.thread = threading.Thread(target=self._run, name="tour-events", daemon=True)
        if not as_json:
            click.echo(f"{'seq':>5}  {'request':<22} {'command':<20} {'outcome':<34} {'rev':>3}")
        self.thread.start()

    def _run(self) -> None:
        for event in self.subscription:
            request_id = event.get("request_id") or ""
            if not request_id.startswith(self.prefix):
                continue
            with self.lock:
                if event["event_type"] == "transition.applied":
                    self.applied[request_id] += 1
                    outcome = f"applied {event['from_status'] or '-'} -> {event['to_status']}"
                    revision = str(event["revision"])
                else:
                    outcome = f"rejected: {event['rejection']['code']}"
                    revision = ""
                self.last[event["command_id"]] = event
                if self.as_json:
                    click.echo(json.dumps({"event": event}, sort_keys=True))
                else:
                    short = request_id.removeprefix(self.prefix)
                    click.echo(
                        f"{event['sequence']:>5}  {short:<22} {event['command_type'] or '?':<20} "
                        f"{outcome:<34} {revision:>3}"
                    )
                self.arrived.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.arrived:
            return self.arrived.wait_for(predicate, timeout)

    def close(self) -> None:
        self.subscription.stop()
        self.thread.join(timeout=5)
        self.subscription.close()


def run_tour(
    broker_url: str, trigger_expiry: Callable[[], None], *, as_json: bool, timeout: float = 20.0
) -> Report:
    """Run every step of the tour and return what it saw."""
    prefix = f"demo-{uuid.uuid4().hex[:6]}-"
    report = Report()
    printer = EventPrinter(broker_url, as_json, prefix)

    def say(text: str) -> None:
        if not as_json:
            with printer.lock:
                click.secho(f"\n# {text}", bold=True)

    alice = {"id": "alice", "name": "Alice"}
    bob = {"id": "bob", "name": "Bob"}
    carol = {"id": "carol", "name": "Carol"}
    pipeline = {"id": "deploy-pipeline", "type": "service"}
    try:
        with GovernanceClient(broker_url, timeout=timeout) as client:

            def submit(name: str, **kwargs: Any) -> str:
                request_id = prefix + name
                kwargs.setdefault("actor", pipeline)
                outcome = client.send_and_wait(
                    client.submit(
                        request_id,
                        state_id="rate-limits",
                        state_type="config",
                        mutation_type="update",
                        intent=INTENT,
                        **kwargs,
                    )
                )
                _expect(report, outcome, "transition.applied", f"submit {name}")
                return request_id

            say("A race: approve and cancel issued against the same snapshot (revision 1)")
            race = submit("race")
            contenders = [
                client.approve(race, expected_revision=1, actor=alice, reason="looks good"),
                client.cancel(race, expected_revision=1, actor=bob, reason="not now"),
            ]
            outcomes = client.send_all_and_wait(contenders)
            for command, outcome in zip(contenders, outcomes, strict=True):
                assert outcome is not None
                report.race[command.command_id] = (
                    "applied"
                    if outcome["event_type"] == "transition.applied"
                    else outcome["rejection"]["code"]
                )
            if sorted(report.race.values()) != ["applied", "concurrency_conflict"]:
                report.problems.append(f"race: expected one winner, got {report.race}")
            report.requests[race] = "one of approve/cancel wins, the other is told why"

            say("A two-step approval: alice (step 1), then bob and carol (step 2)")
            steps = submit(
                "two-step",
                approval_requirements=[
                    {"approval_id": "a-alice", "approver_id": "alice", "step_order": 1},
                    {"approval_id": "a-bob", "approver_id": "bob", "step_order": 2},
                    {"approval_id": "a-carol", "approver_id": "carol", "step_order": 2},
                ],
            )
            early = client.send_and_wait(
                client.approve_requirement(
                    steps, expected_revision=1, actor=bob, approval_id="a-bob"
                )
            )
            _expect(report, early, "approval_not_allowed", "bob before step 1")
            revision = 1
            for actor, approval_id in ((alice, "a-alice"), (bob, "a-bob"), (carol, "a-carol")):
                outcome = client.send_and_wait(
                    client.approve_requirement(
                        steps, expected_revision=revision, actor=actor, approval_id=approval_id
                    )
                )
                _expect(report, outcome, "transition.applied", f"grant {approval_id}")
                revision += 1
            report.requests[steps] = "approved after every step"

            say("An expiry: a pending request whose deadline passes")
            expiring = submit(
                "expiring",
                initial_status="pending",
                pending_reason="manual_review",
                expires_at=datetime.now(UTC) + timedelta(seconds=1),
            )
            time.sleep(1.2)  # the deadline is judged by the database clock
            trigger_expiry()
            if not printer.wait_for(lambda: printer.applied[expiring] >= 2, timeout):
                report.problems.append("expiry: no expire event arrived")
            report.requests[expiring] = "expired by the system actor"

            say("A stale version resolved by each strategy (approved at v1, state now at v2)")
            for strategy in (
                "reject_stale",
                "require_renewed_approval",
                "revalidate_on_latest_state",
            ):
                request_id = submit(
                    f"stale-{strategy.split('_')[0]}",
                    approval_requirements=[{"approval_id": "a-alice", "approver_id": "alice"}],
                    expected_state_version="v1",
                )
                granted = client.send_and_wait(
                    client.approve_requirement(
                        request_id, expected_revision=1, actor=alice, approval_id="a-alice"
                    )
                )
                _expect(report, granted, "transition.applied", "grant before resolution")
                resolved = client.send_and_wait(
                    client.resolve_version(
                        request_id,
                        expected_revision=2,
                        actor=pipeline,
                        current_state_version="v2",
                        strategy=strategy,
                    )
                )
                _expect(report, resolved, "transition.applied", f"resolve {strategy}")
                report.requests[request_id] = f"{strategy} -> {resolved.get('to_status')}"
            printer.wait_for(lambda: len(printer.last) >= _expected_events(report), timeout)
    finally:
        printer.close()
    report.requests = {rid: note for rid, note in report.requests.items()}
    _summarise(report, printer, as_json)
    return report


def _expected_events(report: Report) -> int:
    # Submits, the race pair, four requirement decisions, the expiry, and three resolutions
    # with their grants: every command the tour sent has an outcome to print.
    return 2 + 1 + 1 + 4 + 1 + 1 + 3 * 3


def _expect(report: Report, event: dict[str, Any], wanted: str, step: str) -> None:
    got = (
        event["event_type"]
        if event["event_type"] == "transition.applied"
        else event["rejection"]["code"]
    )
    if got != wanted:
        report.problems.append(f"{step}: expected {wanted}, got {got}")


def _summarise(report: Report, printer: EventPrinter, as_json: bool) -> None:
    finals: dict[str, dict[str, Any]] = {}
    for event in printer.last.values():
        request = event.get("request")
        request_id = event.get("request_id")
        if request and request_id in report.requests:
            known = finals.get(request_id)
            if known is None or request["revision"] >= known["revision"]:
                finals[request_id] = {"status": request["status"], "revision": request["revision"]}
    for request_id, final in finals.items():
        final["applied_events"] = printer.applied[request_id]
        if final["revision"] != final["applied_events"]:
            report.problems.append(
                f"{request_id}: revision {final['revision']} but "
                f"{final['applied_events']} applied events"
            )
    if as_json:
        click.echo(
            json.dumps(
                {"summary": {"race": report.race, "requests": finals, "problems": report.problems}},
                sort_keys=True,
            )
        )
        return
    click.secho("\n# Where each request ended", bold=True)
    click.echo(f"{'request':<40} {'status':<10} {'revision':>8} {'applied events':>15}")
    for request_id, final in sorted(finals.items()):
        click.echo(
            f"{request_id:<40} {final['status']:<10} {final['revision']:>8} "
            f"{final['applied_events']:>15}"
        )
    for problem in report.problems:
        click.secho(f"problem: {problem}", fg="red")
