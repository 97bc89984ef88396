"""The one error policy: how a delivery that produced no outcome ends, on every path.

The delivery pipeline (:mod:`worker.delivery`) asks it for both the per-task and the batch
mode, and acts on the answer:

- the surroundings failed (:class:`InfrastructureError`: connection lost, database down or
  partitioned away, a deadlock): **requeue**, however often; nothing is counted against the
  message, so no outage can park a command;
- the message cannot be answered by an event (:class:`NotACommand`): **park** it at once;
- anything else is the message's own doing (:class:`MessageFault`, or the handler raising):
  **retry** it later, a bounded number of times, then **park** it with the reason;
- a fault either side may cause (:class:`SuspectFault`: a statement or lock timeout, an
  internal error): **retry** it later, counted, up to a generous bound (longer than a
  passing fault of the database lasts), then **park** it;
- a message whose earlier deliveries never completed (the worker died each time, which no
  exception reports): counted in the database, and **parked** past the bound.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import Enum

from governance.commands import command_id_of
from governance.parking import ParkCause, ParkReason
from worker.errors import InfrastructureError, SuspectFault
from worker.transaction import NotACommand


class Action(Enum):
    REQUEUE = "requeue"
    RETRY = "retry"
    PARK = "park"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with a delivery that produced no outcome."""

    action: Action
    reason: str
    #: For ``RETRY``: seconds to wait before the next attempt.
    countdown: float = 0.0
    #: For ``PARK``: the cause it is parked for.
    cause: ParkCause | None = None

    @property
    def park_reason(self) -> ParkReason:
        """Why the message is parked (for a ``PARK`` verdict)."""
        return ParkReason(self.cause or ParkCause.POISON, self.reason)


def on_failure(
    exc: BaseException, retries: int, retry_limit: int, suspect_retry_limit: int = 20
) -> Verdict:
    """The verdict for a delivery whose handling raised ``exc`` after ``retries`` earlier
    counted retries."""
    if isinstance(exc, NotACommand):
        return Verdict(Action.PARK, str(exc), cause=ParkCause.NOT_A_COMMAND)
    if isinstance(exc, SuspectFault):
        if retries >= suspect_retry_limit:
            return Verdict(
                Action.PARK,
                f"applying it failed {retries + 1} times, the last with {exc}",
                cause=ParkCause.KEEPS_TIMING_OUT,
            )
        return Verdict(Action.RETRY, str(exc), countdown=min(30.0, 0.5 * 2**retries))
    if isinstance(exc, InfrastructureError):
        return Verdict(Action.REQUEUE, str(exc))
    if retries >= retry_limit:
        return Verdict(
            Action.PARK,
            f"the handler failed {retries + 1} times: {exc!r}",
            cause=ParkCause.POISON,
        )
    return Verdict(Action.RETRY, repr(exc), countdown=min(30.0, 0.5 * 2**retries))


def lost_deliveries_verdict(lost: int, limit: int) -> Verdict | None:
    """The verdict for a message delivered ``lost`` times before without completing, or None
    when it may be tried once more."""
    if lost <= limit:
        return None
    return Verdict(
        Action.PARK,
        f"delivered {lost + 1} times and the worker was lost during each of the last {lost} "
        "(the message kills its worker)",
        cause=ParkCause.LOST_DELIVERIES,
    )


def not_retried(verdict: Verdict, why: str) -> Verdict:
    """A ``RETRY`` verdict turned into parking: the message cannot be retried (``why``)."""
    return Verdict(Action.PARK, f"{verdict.reason}; not retried: {why}", cause=ParkCause.POISON)


def message_key(payload: object) -> str:
    """The key a message's lost deliveries are counted under: its ``command_id`` where it has
    a usable one, a digest of its content otherwise."""
    command_id = command_id_of(payload)
    if command_id is not None:
        return command_id
    text = json.dumps(payload, sort_keys=True, default=repr)
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
