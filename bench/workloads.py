"""The benchmark workloads as plain command payloads, built before anything is timed.

Each workload has *setup* commands (the submits that create its requests, applied and
awaited before the clock starts) and *timed* commands, published in order. A request's
commands are spread over waves (every request's first command, then every request's
second...), so with thousands of requests in between a later command of a request is never
taken before its predecessor has been applied, even by several workers, and the expected
revisions stay valid.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: Outcome kinds: "applied" or a rejection code.
APPLIED = "applied"


@dataclass
class Workload:
    """Setup commands, timed commands, and the outcome each timed command should get."""

    name: str
    setup: list[dict[str, Any]]
    timed: list[dict[str, Any]]
    expected: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def expected_counts(self) -> dict[str, int]:
        return dict(Counter(self.expected.values()))


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def submit(
    request_id: str,
    *,
    initial_status: str | None = "created",
    requirements: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``submit`` command for a small, valid request."""
    args: dict[str, Any] = {
        "state_id": f"state-{request_id}",
        "state_type": "config",
        "mutation_type": "update",
        "intent": {"operation_name": "bench", "risk_level": "low"},
    }
    if requirements is not None:
        args["approval_requirements"] = requirements
    elif initial_status is not None:
        args["initial_status"] = initial_status
    return {
        "command_id": _id("sub"),
        "type": "submit",
        "request_id": request_id,
        "actor": {"id": "bench-submitter", "type": "service"},
        "args": args,
    }


def command(
    type_: str,
    request_id: str,
    expected_revision: int,
    *,
    actor: str = "bench-operator",
    args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Any non-submit command."""
    body: dict[str, Any] = {
        "command_id": _id("cmd"),
        "type": type_,
        "request_id": request_id,
        "expected_revision": expected_revision,
        "actor": {"id": actor, "type": "user"},
    }
    if args:
        body["args"] = args
    return body


def scaled(size: int, scale: float, minimum: int = 1) -> int:
    return max(minimum, round(size * scale))


def uniform(requests: int, commands_per_request: int = 2) -> Workload:
    """Every timed command valid: created -approve-> approved -mark_executed-> executed."""
    ids = [_id("u") for _ in range(requests)]
    chain = ["approve", "mark_executed"][:commands_per_request]
    timed = [command(type_, rid, 1 + step) for step, type_ in enumerate(chain) for rid in ids]
    return Workload(
        "uniform",
        setup=[submit(rid) for rid in ids],
        timed=timed,
        expected={c["command_id"]: APPLIED for c in timed},
        settings={"requests": requests, "commands": len(timed), "chain": chain},
    )


def submits(requests: int) -> Workload:
    """Submit-heavy: every timed command a submit of a new request (``created``)."""
    timed = [submit(_id("s")) for _ in range(requests)]
    return Workload(
        "submits",
        setup=[],
        timed=timed,
        expected={c["command_id"]: APPLIED for c in timed},
        settings={"requests": requests, "commands": len(timed)},
    )


def approvals(requests: int) -> Workload:
    """Three-requirement, two-step approval flows, then execution, interleaved by wave.

    Step 1 has one approver, step 2 two; the last grant approves the request; a fourth
    command marks it executed. Each request: submit (setup) + 4 timed commands.
    """
    flows: list[tuple[str, list[tuple[str, str]]]] = []
    setup: list[dict[str, Any]] = []
    for _ in range(requests):
        rid = _id("a")
        grants = [(_id("ap"), f"approver-{n}") for n in range(3)]
        requirements = [
            {"approval_id": aid, "approver_id": who, "step_order": 1 if n == 0 else 2}
            for n, (aid, who) in enumerate(grants)
        ]
        setup.append(submit(rid, requirements=requirements))
        flows.append((rid, grants))
    timed: list[dict[str, Any]] = []
    for step in range(3):
        for rid, grants in flows:
            aid, who = grants[step]
            timed.append(
                command("approve_requirement", rid, 1 + step, actor=who, args={"approval_id": aid})
            )
    timed.extend(command("mark_executed", rid, 4) for rid, _ in flows)
    return Workload(
        "approvals",
        setup=setup,
        timed=timed,
        expected={c["command_id"]: APPLIED for c in timed},
        settings={
            "requests": requests,
            "commands": len(timed),
            "flow": "2 steps, 3 requirements (1 + 2), then mark_executed",
        },
    )


def mixed(
    requests: int,
    commands_per_request: int = 2,
    stale: float = 0.10,
    invalid: float = 0.05,
    seed: int = 7,
) -> Workload:
    """Like ``uniform``, but each command is stale (wrong expected revision) with probability
    ``stale`` and an invalid transition (right revision, forbidden target) with ``invalid``.

    The generator follows each request's true revision and status, so a rejected command
    does not spoil the expected revisions of the commands after it.
    """
    rng = random.Random(seed)
    ids = [_id("m") for _ in range(requests)]
    state = {rid: (1, "created") for rid in ids}
    next_valid = {"created": "approve", "approved": "mark_executed", "executed": None}
    # A transition the lifecycle table forbids from each status.
    forbidden = {"created": "mark_executed", "approved": "approve", "executed": "cancel"}
    timed: list[dict[str, Any]] = []
    expected: dict[str, str] = {}
    for _ in range(commands_per_request):
        for rid in ids:
            revision, status = state[rid]
            draw = rng.random()
            if draw < stale:
                cmd = command(next_valid[status] or "cancel", rid, revision + 3)
                outcome = "concurrency_conflict"
            elif draw < stale + invalid or next_valid[status] is None:
                cmd = command(forbidden[status], rid, revision)
                outcome = "invalid_transition"
            else:
                type_ = next_valid[status]
                assert type_ is not None
                cmd = command(type_, rid, revision)
                outcome = APPLIED
                state[rid] = (revision + 1, "approved" if status == "created" else "executed")
            timed.append(cmd)
            expected[cmd["command_id"]] = outcome
    return Workload(
        "mixed",
        setup=[submit(rid) for rid in ids],
        timed=timed,
        expected=expected,
        settings={
            "requests": requests,
            "commands": len(timed),
            "stale_fraction": stale,
            "invalid_fraction": invalid,
            "seed": seed,
        },
    )


def hot_round(racers: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A fresh request's submit and ``racers`` approvals all expecting its revision 1."""
    rid = _id("h")
    return submit(rid), [command("approve", rid, 1, actor=f"racer-{n}") for n in range(racers)]
