"""Who may send what: the roles of registered actors and the authorization of a command.

The worker authenticates a command (its signature against the registry) and hands the
registered :class:`Principal` to :func:`authorize`, which applies the roles table. Whether
an approver may decide a given requirement (named in it, or a member of its group, and not
the submitter) is not a role question but an approval rule, judged by
:func:`governance.rules.decide` with the principal's groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from governance.commands import Command, CommandType
from governance.model import ActorType, MutationRequest
from governance.rules import Rejection, RejectionCode


class Role(StrEnum):
    """What a registered actor may send (**contract**)."""

    REQUESTER = "requester"
    APPROVER = "approver"
    OPERATOR = "operator"
    ADMINISTRATOR = "administrator"
    #: A worker's own actor: its key signs the events the worker publishes. It may send no
    #: command at all.
    WORKER = "worker"


@dataclass(frozen=True, slots=True)
class Principal:
    """A registered actor as the registry knows it: the sender of a verified command."""

    actor_id: str
    name: str | None
    type: ActorType
    roles: frozenset[str]
    groups: frozenset[str]
    active: bool


#: The lifecycle commands an operator may send on any request.
OPERATOR_COMMANDS: frozenset[CommandType] = frozenset(
    {
        CommandType.APPROVE,
        CommandType.REJECT,
        CommandType.CANCEL,
        CommandType.MOVE_TO_PENDING,
        CommandType.SUPERSEDE,
        CommandType.MARK_EXECUTED,
        CommandType.RESOLVE_VERSION,
        CommandType.EXPIRE,
    }
)
#: The commands a requester may send on a request it submitted.
REQUESTER_OWN_COMMANDS: frozenset[CommandType] = frozenset(
    {CommandType.CANCEL, CommandType.MOVE_TO_PENDING}
)
#: The commands an approver may send (which requirement it may decide is an approval rule).
APPROVER_COMMANDS: frozenset[CommandType] = frozenset(
    {CommandType.APPROVE_REQUIREMENT, CommandType.REJECT_REQUIREMENT}
)


def _may_operate(roles: frozenset[str]) -> bool:
    # An administrator may do what an operator may: the registry itself is managed through
    # the operator CLI's database access, not by commands, so it has nothing more to send.
    return Role.OPERATOR in roles or Role.ADMINISTRATOR in roles


def authorize(
    command: Command, principal: Principal, current: MutationRequest | None
) -> Rejection | None:
    """None when ``principal`` may send ``command`` on ``current`` (the request as locked),
    else a ``forbidden`` rejection naming the role needed.

    A command whose request's existence is wrong for it (a ``submit`` of a request that
    exists, any other command on one that does not) is left to
    :func:`governance.rules.decide`, which answers ``already_exists`` / ``not_found``:
    existence is checked before authorization. A role grants exactly what the roles table
    says, nothing implied by another role (an operator cannot submit without ``requester``,
    an approver cannot cancel).
    """
    is_submit = command.type is CommandType.SUBMIT
    if is_submit != (current is None):
        return None
    roles = principal.roles
    if is_submit:
        if Role.REQUESTER in roles:
            return None
        needed = "role requester"
    elif command.type in APPROVER_COMMANDS:
        if Role.APPROVER in roles:
            return None
        needed = "role approver"
    else:
        assert current is not None and command.type in OPERATOR_COMMANDS
        if _may_operate(roles):
            return None
        if command.type in REQUESTER_OWN_COMMANDS:
            if Role.REQUESTER in roles and current.context.actor.id == principal.actor_id:
                return None
            needed = "role operator, or role requester on a request it submitted"
        else:
            needed = "role operator"
    held = ", ".join(sorted(roles)) if roles else "none"
    return Rejection(
        RejectionCode.FORBIDDEN,
        f"{command.type.value} needs {needed}; {principal.actor_id} has roles: {held}",
        expected_revision=command.expected_revision,
        current_revision=None if current is None else current.revision,
        current_status=None if current is None else current.status,
    )


def void_grant_reason(
    group: str,
    actor_id: str,
    principal: Principal | None,
    key_id: str | None = None,
    key_revoked: bool = False,
) -> str | None:
    """Why a grant recorded on a requirement of ``group`` no longer counts, or None while it
    stands: its actor must still be registered, active and a member of the group, and the key
    that signed the grant (``key_id``, in signed mode) must not have been revoked since.

    ``principal`` is the registry's actor as it stands when the requirement would complete
    (None when it is not registered).
    """
    if principal is None:
        return f"{actor_id} is no longer registered"
    if not principal.active:
        return f"{actor_id} is no longer active"
    if group not in principal.groups:
        return f"{actor_id} is no longer a member of group {group}"
    if key_revoked:
        return f"key {key_id}, which signed the grant of {actor_id}, has been revoked"
    return None
