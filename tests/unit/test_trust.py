"""Authorization: the roles table, checked exhaustively against a table written out here.

Every subset of the four roles (and a role the table does not know) is tried with every
command type, on a request the principal submitted and on one it did not.
"""

from __future__ import annotations

from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance.commands import Command, CommandType, parse_command
from governance.model import ActorType, MutationRequest, Status
from governance.rules import Rejection, RejectionCode
from governance.trust import Principal, Role, authorize

from .builders import (
    ALL_TYPES,
    NON_SUBMIT_TYPES,
    SUBMITTER,
    command_payload,
    request_in_status,
    submit_payload,
)

ROLES = ("requester", "approver", "operator", "administrator", "worker")

#: The roles table, written out independently of the code: for each command type, the roles
#: that may send it on any request, and those that may send it on a request they submitted.
ANY_REQUEST: dict[str, frozenset[str]] = {
    "submit": frozenset({"requester"}),
    "approve_requirement": frozenset({"approver"}),
    "reject_requirement": frozenset({"approver"}),
    **{
        type_: frozenset({"operator", "administrator"})
        for type_ in (
            "approve",
            "reject",
            "cancel",
            "move_to_pending",
            "supersede",
            "mark_executed",
            "resolve_version",
            "expire",
        )
    },
}
OWN_REQUEST: dict[str, frozenset[str]] = {
    "cancel": frozenset({"requester"}),
    "move_to_pending": frozenset({"requester"}),
}
#: What the rejection must say each type needs.
NEEDED: dict[str, str] = {
    "submit": "submit needs role requester",
    "approve_requirement": "approve_requirement needs role approver",
    "reject_requirement": "reject_requirement needs role approver",
    "cancel": "cancel needs role operator, or role requester on a request it submitted",
    "move_to_pending": (
        "move_to_pending needs role operator, or role requester on a request it submitted"
    ),
    **{
        type_: f"{type_} needs role operator"
        for type_ in ("approve", "reject", "supersede", "mark_executed", "resolve_version")
    },
    "expire": "expire needs role operator",
}

ROLE_SETS: list[frozenset[str]] = [
    frozenset(chosen) for size in range(len(ROLES) + 1) for chosen in combinations(ROLES, size)
]


def principal(actor_id: str, roles: frozenset[str]) -> Principal:
    return Principal(
        actor_id=actor_id,
        name=actor_id.title(),
        type=ActorType.USER,
        roles=roles,
        groups=frozenset({"cab"}),
        active=True,
    )


def command_of(type_: str, actor_id: str) -> Command:
    if type_ == "submit":
        return parse_command(submit_payload(actor_id=actor_id))
    return parse_command(command_payload(type_, expected_revision=3, actor_id=actor_id))


def existing_request() -> MutationRequest:
    """A request that ``SUBMITTER`` submitted."""
    return request_in_status(Status.PENDING, revision=3)


def expected_allowed(type_: str, roles: frozenset[str], own: bool) -> bool:
    return bool(roles & ANY_REQUEST[type_]) or (own and bool(roles & OWN_REQUEST.get(type_, set())))


def judge(type_: str, roles: frozenset[str], own: bool) -> tuple[Command, Rejection | None]:
    actor_id = SUBMITTER if own else "someone-else"
    cmd = command_of(type_, actor_id)
    current = None if type_ == "submit" else existing_request()
    return cmd, authorize(cmd, principal(actor_id, roles), current)


def test_the_table_here_covers_every_command_type() -> None:
    assert set(ANY_REQUEST) == set(NEEDED) == set(ALL_TYPES) == {t.value for t in CommandType}
    assert {r.value for r in Role} == set(ROLES)
    assert len(ROLE_SETS) == 2 ** len(ROLES)


@pytest.mark.parametrize("own", [True, False], ids=["own-request", "other-request"])
@pytest.mark.parametrize("type_", ALL_TYPES)
@pytest.mark.parametrize("roles", ROLE_SETS, ids=lambda r: "+".join(sorted(r)) or "no-roles")
def test_every_role_set_may_send_exactly_what_the_table_says(
    roles: frozenset[str], type_: str, own: bool
) -> None:
    # Given a principal holding ``roles``, sending ``type_`` (on its own request or not)
    cmd, outcome = judge(type_, roles, own)

    # Then it is allowed exactly when the table says so
    if expected_allowed(type_, roles, own):
        assert outcome is None
        return
    # And otherwise it is forbidden, with the role needed named
    assert outcome is not None
    assert outcome.code is RejectionCode.FORBIDDEN
    assert outcome.message.startswith(NEEDED[type_])
    assert outcome.expected_revision == cmd.expected_revision


@settings(max_examples=300, deadline=None)
@given(
    roles=st.frozensets(st.sampled_from([*ROLES, "auditor", "Operator", "root"])),
    type_=st.sampled_from(ALL_TYPES),
    own=st.booleans(),
)
def test_a_role_the_table_does_not_know_grants_nothing(
    roles: frozenset[str], type_: str, own: bool
) -> None:
    # Given any roles, some of them unknown (or misspelt) to the table
    _, outcome = judge(type_, roles, own)

    # Then only the known roles count
    assert (outcome is None) == expected_allowed(type_, roles & set(ROLES), own)


@pytest.mark.parametrize(
    ("roles", "type_"),
    [
        pytest.param({"approver"}, "cancel", id="an-approver-cannot-cancel"),
        pytest.param({"operator"}, "submit", id="an-operator-cannot-submit"),
        pytest.param({"administrator"}, "submit", id="an-administrator-cannot-submit"),
        pytest.param({"operator"}, "approve_requirement", id="an-operator-cannot-grant"),
        pytest.param({"requester"}, "approve", id="a-requester-cannot-approve"),
        pytest.param({"requester"}, "supersede", id="a-requester-cannot-supersede-its-own"),
    ],
)
def test_a_role_grants_nothing_another_role_holds(roles: set[str], type_: str) -> None:
    _, outcome = judge(type_, frozenset(roles), own=True)

    assert outcome is not None and outcome.code is RejectionCode.FORBIDDEN


@pytest.mark.parametrize("type_", ["cancel", "move_to_pending"])
def test_a_requester_may_cancel_or_hold_only_a_request_it_submitted(type_: str) -> None:
    requester = frozenset({"requester"})

    assert judge(type_, requester, own=True)[1] is None
    _, refused = judge(type_, requester, own=False)
    assert refused is not None
    assert refused.message == (
        f"{type_} needs role operator, or role requester on a request it submitted; "
        "someone-else has roles: requester"
    )


def test_a_forbidden_rejection_says_where_the_request_stands_and_what_roles_are_held() -> None:
    _, outcome = judge("approve", frozenset({"approver", "requester"}), own=True)

    assert outcome is not None
    assert (
        outcome.message == "approve needs role operator; submitter has roles: approver, requester"
    )
    assert (outcome.current_revision, outcome.current_status) == (3, Status.PENDING)


def test_a_principal_with_no_roles_is_told_it_has_none() -> None:
    _, outcome = judge("submit", frozenset(), own=False)

    assert outcome is not None
    assert outcome.message == "submit needs role requester; someone-else has roles: none"
    assert (outcome.current_revision, outcome.current_status) == (None, None)


def test_administrator_may_do_whatever_an_operator_may() -> None:
    for type_ in ALL_TYPES:
        for own in (True, False):
            as_operator = judge(type_, frozenset({"operator"}), own)[1] is None
            as_administrator = judge(type_, frozenset({"administrator"}), own)[1] is None
            assert as_operator <= as_administrator


@pytest.mark.parametrize("type_", NON_SUBMIT_TYPES)
def test_a_command_on_a_request_that_does_not_exist_is_left_to_decide(type_: str) -> None:
    # Existence comes before authorization: decide answers not_found, whoever sends it.
    cmd = command_of(type_, "someone-else")

    assert authorize(cmd, principal("someone-else", frozenset()), None) is None


def test_a_submit_of_a_request_that_exists_is_left_to_decide() -> None:
    # Existence comes before authorization: decide answers already_exists.
    cmd = command_of("submit", "someone-else")

    assert authorize(cmd, principal("someone-else", frozenset()), existing_request()) is None


def test_roles_are_compared_by_their_wire_spelling() -> None:
    cmd = command_of("submit", "alice")

    assert authorize(cmd, principal("alice", frozenset({Role.REQUESTER})), None) is None
    assert authorize(cmd, principal("alice", frozenset({"requester"})), None) is None
