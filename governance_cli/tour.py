"""The demo's tour: the guarantees of the service shown on a running pipeline.

Everything goes through the producer's public client, as any service would use it; only the
expiry sweep is triggered by hand (beat would do it every few seconds). The tour's actors are
registered with fresh keys first, as an operator would, and every command is signed.
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
import psycopg

from governance.policy_document import parse_policy
from producer import GovernanceClient
from producer.audit import verify_request
from producer.event_proof import EventVerifier
from producer.keys import SigningKey, generate
from producer.queries import Queries
from producer.signing import sign_command
from producer.subscriptions import Subscription
from worker import policy_store, registry

#: What the demo policy's first rule requires becomes the request's first requirement.
CAB_STEP = "policy-1"

INTENT = {
    "operation_name": "raise-rate-limit",
    "category": "configuration",
    "risk_level": "high",
    "blast_radius": {"scope": "module", "estimated_affected_count": 12},
}
#: A change every service sees: the demo policy's first rule.
GLOBAL_INTENT = {
    **INTENT,
    "operation_name": "raise-global-rate-limit",
    "blast_radius": {"scope": "global", "estimated_affected_count": 40},
}


@dataclass
class Report:
    """What the tour saw, checked at the end."""

    requests: dict[str, str] = field(default_factory=dict)  # request_id -> what it shows
    race: dict[str, str] = field(default_factory=dict)  # command_id -> outcome
    problems: list[str] = field(default_factory=list)


class EventPrinter:
    """Prints every event of the tour's requests as it arrives, and counts them."""

    def __init__(self, broker_url: str, database_url: str, as_json: bool, prefix: str) -> None:
        self.as_json = as_json
        self.prefix = prefix
        self.applied: Counter[str] = Counter()
        self.last: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.subscription = Subscription(
            broker_url, verifier=EventVerifier.from_environment(database_url)
        )
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
                    if event["event_type"] != "transition.applied":
                        # Why, in full: the reason is the point of showing a rejection.
                        click.echo(f"{'':>7}{event['rejection']['message']}")
                self.arrived.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.arrived:
            return self.arrived.wait_for(predicate, timeout)

    def close(self) -> None:
        self.subscription.stop()
        self.thread.join(timeout=5)
        self.subscription.close()


#: The tour's actors: id, name, type, roles, groups. Their ids are the demo's own, so that a
#: tour on a real deployment never touches the registry entry of a real alice.
ACTORS = (
    ("demo-alice", "Alice", "user", ("requester", "approver", "operator"), ("demo-cab",)),
    ("demo-bob", "Bob", "user", ("approver", "operator"), ("demo-cab",)),
    ("demo-carol", "Carol", "user", ("approver",), ("demo-cab",)),
    ("demo-pipeline", "Deploy pipeline", "service", ("requester", "operator"), ()),
)


def register_actors(database_url: str) -> dict[str, SigningKey]:
    """Register the tour's actors, each with a fresh key (an actor registered by an earlier
    run gets the new key beside its old ones); their keys, by actor id."""
    keys: dict[str, SigningKey] = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        for actor_id, name, type_, roles, groups in ACTORS:
            key = generate(actor_id, key_id=f"{actor_id}-{uuid.uuid4().hex[:8]}")
            try:
                registry.add_actor(
                    conn,
                    actor_id,
                    name,
                    type_,
                    list(roles),
                    list(groups),
                    public_key=key.public_key_b64,
                    key_id=key.key_id,
                )
            except registry.RegistryError:
                registry.add_key(conn, actor_id, key.public_key_b64, key.key_id)
            keys[actor_id] = key
    return keys


#: The demo deployment's approval policy: a change of global reach needs two members of the
#: change advisory board; anything else needs what its requester asks for.
DEMO_POLICY = """\
policy: 1
rules:
  - id: global-changes
    description: A change of global reach needs two members of the change advisory board.
    when:
      scope: [global]
    require:
      - group: demo-cab
        min_approvals: 2
  - id: default
    require: []
"""


def apply_demo_policy(database_url: str) -> None:
    """Make :data:`DEMO_POLICY` the active approval policy (once its actors are registered;
    applying it again adds no version)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        policy_store.apply_policy(conn, parse_policy(DEMO_POLICY), force=False)


def run_tour(
    broker_url: str,
    database_url: str,
    trigger_expiry: Callable[[], None],
    *,
    as_json: bool,
    timeout: float = 20.0,
) -> Report:
    """Run every step of the tour and return what it saw."""
    prefix = f"demo-{uuid.uuid4().hex[:6]}-"
    report = Report()
    keys = register_actors(database_url)
    apply_demo_policy(database_url)
    printer = EventPrinter(broker_url, database_url, as_json, prefix)

    #: The commands whose outcomes the tour has been given: a heading waits for their events,
    #: which reach the printer's own subscription a moment later, so each section's events
    #: are printed under its own heading.
    awaited: set[str] = set()

    def say(text: str) -> None:
        if not as_json:
            printer.wait_for(lambda: awaited <= printer.last.keys(), timeout)
            with printer.lock:
                click.secho(f"\n# {text}", bold=True)

    alice = {"id": "demo-alice", "name": "Alice"}
    bob = {"id": "demo-bob", "name": "Bob"}
    carol = {"id": "demo-carol", "name": "Carol"}
    pipeline = {"id": "demo-pipeline", "type": "service"}
    try:
        with GovernanceClient(
            broker_url, database_url, timeout=timeout, signing_key=keys
        ) as client:

            def send_and_wait(command: Any) -> dict[str, Any]:
                outcome = client.send_and_wait(command)
                awaited.add(outcome["command_id"])
                return outcome

            def send_all_and_wait(commands: list[Any]) -> list[dict[str, Any] | None]:
                outcomes = client.send_all_and_wait(commands)
                awaited.update(o["command_id"] for o in outcomes if o is not None)
                return outcomes

            def submit(name: str, expect: str = "transition.applied", **kwargs: Any) -> str:
                request_id = prefix + name
                kwargs.setdefault("actor", pipeline)
                kwargs.setdefault("intent", INTENT)
                outcome = send_and_wait(
                    client.submit(
                        request_id,
                        state_id="rate-limits",
                        state_type="config",
                        mutation_type="update",
                        **kwargs,
                    )
                )
                _expect(report, outcome, expect, f"submit {name}")
                return request_id

            say("A race: approve and cancel issued against the same snapshot (revision 1)")
            race = submit("race")
            contenders = [
                client.approve(race, expected_revision=1, actor=alice, reason="looks good"),
                client.cancel(race, expected_revision=1, actor=bob, reason="not now"),
            ]
            outcomes = send_all_and_wait(contenders)
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
                    {"approval_id": "a-alice", "approver_id": "demo-alice", "step_order": 1},
                    {"approval_id": "a-bob", "approver_id": "demo-bob", "step_order": 2},
                    {"approval_id": "a-carol", "approver_id": "demo-carol", "step_order": 2},
                ],
            )
            early = send_and_wait(
                client.approve_requirement(
                    steps, expected_revision=1, actor=bob, approval_id="a-bob"
                )
            )
            _expect(report, early, "approval_not_allowed", "bob before step 1")
            revision = 1
            for actor, approval_id in ((alice, "a-alice"), (bob, "a-bob"), (carol, "a-carol")):
                outcome = send_and_wait(
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
            # The deadline is judged by the database clock, so a sweep is asked for again,
            # as beat would, until one finds the request due.
            give_up = time.monotonic() + timeout
            while not printer.wait_for(lambda: printer.applied[expiring] >= 2, 0.5):
                if time.monotonic() > give_up:
                    report.problems.append("expiry: no expire event arrived")
                    break
                trigger_expiry()
            report.requests[expiring] = "expired by the system actor"

            say("A stale version resolved by each strategy (approved at v1, state now at v2)")
            for strategy in (
                "reject_stale",
                "require_renewed_approval",
                "revalidate_on_latest_state",
            ):
                request_id = submit(
                    f"stale-{strategy.split('_')[0]}",
                    approval_requirements=[{"approval_id": "a-alice", "approver_id": "demo-alice"}],
                    expected_state_version="v1",
                )
                granted = send_and_wait(
                    client.approve_requirement(
                        request_id, expected_revision=1, actor=alice, approval_id="a-alice"
                    )
                )
                _expect(report, granted, "transition.applied", "grant before resolution")
                resolved = send_and_wait(
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
            say(
                "The deployment's approval policy: a change of global reach needs two members "
                "of the CAB, whatever its requester asks for"
            )
            submit(
                "global-skip", "policy_violation", intent=GLOBAL_INTENT, initial_status="approved"
            )
            cab = submit("two-of-cab", actor=alice, intent=GLOBAL_INTENT)
            _explain(cab, database_url, printer, as_json)
            say("Proved authors: a forged approval, a self-approval, and two of the CAB")
            # Right actor id, right key id, wrong key: what anyone with broker access could do.
            forger = SigningKey(
                "demo-alice", keys["demo-alice"].key_id, generate("demo-alice").seed
            )
            forged = send_and_wait(
                sign_command(
                    client.wire_form(
                        client.approve_requirement(
                            cab, expected_revision=1, actor=alice, approval_id=CAB_STEP
                        )
                    ),
                    forger,
                    audience=client.audience,
                )
            )
            _expect(report, forged, "unauthenticated", "forged approval")
            own = send_and_wait(
                client.approve_requirement(
                    cab, expected_revision=1, actor=alice, approval_id=CAB_STEP
                )
            )
            _expect(report, own, "approval_not_allowed", "self-approval")
            revision = 1
            for actor in (bob, carol):
                granted = send_and_wait(
                    client.approve_requirement(
                        cab, expected_revision=revision, actor=actor, approval_id=CAB_STEP
                    )
                )
                _expect(report, granted, "transition.applied", f"cab grant by {actor['id']}")
                revision += 1
            report.requests[cab] = "approved by two members of the CAB, as the policy requires"
            printer.wait_for(lambda: len(printer.last) >= _expected_events(report), timeout)
    finally:
        printer.close()
    report.requests = {rid: note for rid, note in report.requests.items()}
    _verify_histories(report, database_url, say)
    _summarise(report, printer, as_json)
    return report


def _verify_histories(report: Report, database_url: str, say: Callable[[str], None]) -> None:
    """What ``governance verify`` checks, for every request of the tour: each decision's
    chain hash, and each command's signature against its registered key."""
    unsigned = 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        for request_id in report.requests:
            findings = verify_request(conn, request_id)
            if findings is None:
                report.problems.append(f"verify {request_id}: no such request")
                continue
            report.problems += [f"verify: {finding}" for finding in findings.failures]
            unsigned += len(findings.unsigned)
    say(
        f"Verified the history of {len(report.requests)} requests: every chain hash and "
        f"signature holds ({unsigned} unsigned decision(s), the system actor's expiry)"
    )


def _explain(request_id: str, database_url: str, printer: EventPrinter, as_json: bool) -> None:
    """What ``governance policy explain`` says of the request: the rule it falls under, its
    requirements, and who may decide them now."""
    explanation = Queries(database_url).explain(request_id)
    if explanation is None:
        return
    with printer.lock:
        if as_json:
            click.echo(json.dumps({"explain": explanation.to_dict()}))
            return
        reference = explanation.request.policy
        if reference is not None:
            click.echo(f"policy version {reference.version}, rule {reference.rule_id}")
        for item in explanation.requirements:
            requirement = item.requirement
            who = requirement.approver_group or requirement.approver_id
            click.echo(
                f"  {requirement.approval_id} (step {requirement.step_order}, "
                f"{requirement.source.value}): {who}, {requirement.min_approvals} approval(s); "
                f"may decide now: {', '.join(item.may_decide_now) or 'nobody'}"
            )


def _expected_events(report: Report) -> int:
    # Submits, the race pair, four requirement decisions, the expiry, three resolutions with
    # their grants, the submit the policy refuses, and the group request with its forgery,
    # self-approval and two grants: every command the tour sent has an outcome to print.
    return 2 + 1 + 1 + 4 + 1 + 1 + 3 * 3 + 1 + 5


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
