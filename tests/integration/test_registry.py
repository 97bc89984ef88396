"""The actor registry on a real database: actors, their keys (rotated, revoked), and the
validation of what an operator registers."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from governance.proof import b64url_encode
from governance.satisfiability import RosterActor
from producer.keys import generate
from tests.support.commands import new_id
from worker import registry
from worker.registry import RegistryError, RegistryInputError

pytestmark = pytest.mark.integration


def public_key() -> str:
    return generate("someone").public_key_b64


def audit_of(db: psycopg.Connection[Any], actor_id: str) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT action, key_id, by FROM registry_audit WHERE actor_id = %s ORDER BY id",
        (actor_id,),
    ).fetchall()


def test_an_added_actor_is_listed_and_shown_with_its_key(db: psycopg.Connection[Any]) -> None:
    # Given a new actor with a key
    actor_id = new_id("alice")
    key = public_key()

    # When it is registered
    added = registry.add_actor(
        db, actor_id, "Alice", "user", ["approver", "requester"], ["cab"], public_key=key
    )

    # Then it is there as registered, active, with its key under the default id
    shown = registry.show_actor(db, actor_id)
    assert shown == added
    assert (shown.name, shown.type, shown.roles, shown.groups, shown.active) == (
        "Alice",
        "user",
        ("approver", "requester"),
        ("cab",),
        True,
    )
    assert [k.public_key for k in shown.keys] == [key]
    assert shown.keys[0].key_id == registry.default_key_id(registry.validate_public_key(key))
    assert not shown.keys[0].revoked
    assert actor_id in [actor.actor_id for actor in registry.list_actors(db)]
    listed = next(a for a in registry.list_actors(db) if a.actor_id == actor_id)
    assert listed == shown
    # And the registration was audited, actor then key, as the connecting role
    assert [row[:2] for row in audit_of(db, actor_id)] == [
        ("actor_added", None),
        ("key_added", shown.keys[0].key_id),
    ]


def test_the_default_key_id_matches_the_key_files(db: psycopg.Connection[Any]) -> None:
    # Given a key generated for a key file
    actor_id = new_id("kf")
    signing_key = generate(actor_id)

    # When its public key is registered without a key id
    added = registry.add_actor(
        db, actor_id, None, "service", [], [], public_key=signing_key.public_key_b64
    )

    # Then the registry gave it the key file's id
    assert added.keys[0].key_id == signing_key.key_id


def test_an_actor_without_a_key_has_none(db: psycopg.Connection[Any]) -> None:
    actor_id = new_id("nokey")

    added = registry.add_actor(db, actor_id, None, "service", ["operator"], [])

    assert added.keys == ()
    assert registry.show_actor(db, actor_id).keys == ()


def test_roles_and_groups_are_stored_once_each_in_order(db: psycopg.Connection[Any]) -> None:
    actor_id = new_id("dup")

    added = registry.add_actor(
        db, actor_id, None, "user", ["operator", "approver", "operator"], ["ops", "cab", "ops"]
    )

    assert added.roles == ("approver", "operator")
    assert added.groups == ("cab", "ops")


def test_keys_rotate_and_a_revoked_key_stays_listed(db: psycopg.Connection[Any]) -> None:
    # Given an actor with a first key
    actor_id = new_id("rot")
    registry.add_actor(
        db,
        actor_id,
        "Rot",
        "user",
        ["approver"],
        [],
        public_key=public_key(),
        key_id=f"{actor_id}-1",
    )

    # When a second and a third key are added and the first revoked
    second = registry.add_key(db, actor_id, public_key(), f"{actor_id}-2")
    third = registry.add_key(db, actor_id, public_key())
    revoked = registry.revoke_key(db, f"{actor_id}-1")

    # Then all three are shown, oldest first, and only the first is revoked
    shown = registry.show_actor(db, actor_id)
    assert [key.key_id for key in shown.keys] == [f"{actor_id}-1", second.key_id, third.key_id]
    assert [key.revoked for key in shown.keys] == [True, False, False]
    assert revoked.revoked_at is not None
    assert shown.keys[0].revoked_at == revoked.revoked_at
    assert shown.to_dict()["keys"][0]["revoked_at"].endswith("Z")
    # And each change left its audit row
    assert [row[:2] for row in audit_of(db, actor_id)] == [
        ("actor_added", None),
        ("key_added", f"{actor_id}-1"),
        ("key_added", f"{actor_id}-2"),
        ("key_added", third.key_id),
        ("key_revoked", f"{actor_id}-1"),
    ]


def test_a_key_is_revoked_only_once(db: psycopg.Connection[Any]) -> None:
    actor_id = new_id("once")
    added = registry.add_actor(db, actor_id, None, "user", [], [], public_key=public_key())
    key_id = added.keys[0].key_id
    registry.revoke_key(db, key_id)

    with pytest.raises(RegistryError, match="already revoked"):
        registry.revoke_key(db, key_id)


def test_deactivating_and_reactivating_an_actor(db: psycopg.Connection[Any]) -> None:
    actor_id = new_id("act")
    registry.add_actor(db, actor_id, None, "user", ["requester"], [])

    assert registry.set_active(db, actor_id, False).active is False
    assert registry.show_actor(db, actor_id).active is False
    assert registry.set_active(db, actor_id, True).active is True
    details = db.execute(
        "SELECT details FROM registry_audit WHERE actor_id = %s AND action = 'actor_updated' "
        "ORDER BY id",
        (actor_id,),
    ).fetchall()
    assert [row[0] for row in details] == [
        {"active": {"from": True, "to": False}},
        {"active": {"from": False, "to": True}},
    ]


def test_a_registration_is_all_or_nothing(db: psycopg.Connection[Any]) -> None:
    # Given a key already registered for someone
    taken = public_key()
    registry.add_actor(db, new_id("holder"), None, "user", [], [], public_key=taken)

    # When a new actor is registered with that same key
    actor_id = new_id("late")
    with pytest.raises(RegistryError, match="already registered as key"):
        registry.add_actor(db, actor_id, None, "user", [], [], public_key=taken)

    # Then the actor was not registered either
    with pytest.raises(RegistryError, match="unknown actor"):
        registry.show_actor(db, actor_id)
    assert audit_of(db, actor_id) == []


def test_conflicts_and_unknown_names_are_registry_errors(db: psycopg.Connection[Any]) -> None:
    actor_id = new_id("conf")
    registry.add_actor(db, actor_id, None, "user", [], [], public_key=public_key(), key_id=actor_id)

    with pytest.raises(RegistryError, match="already exists"):
        registry.add_actor(db, actor_id, None, "user", [], [])
    with pytest.raises(RegistryError, match=r"key id .* is already registered"):
        registry.add_key(db, actor_id, public_key(), actor_id)
    with pytest.raises(RegistryError, match="unknown actor"):
        registry.add_key(db, new_id("ghost"), public_key())
    with pytest.raises(RegistryError, match="unknown key"):
        registry.revoke_key(db, new_id("nokey"))
    with pytest.raises(RegistryError, match="unknown actor"):
        registry.set_active(db, new_id("ghost"), False)
    with pytest.raises(RegistryError, match="unknown actor"):
        registry.show_actor(db, new_id("ghost"))


def test_a_call_inside_an_open_transaction_joins_it(database_url: str) -> None:
    # Given a connection with its own transaction open (a savepoint is all the call takes)
    actor_id = new_id("txn")
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT 1")
        registry.add_actor(conn, actor_id, None, "user", [], [])
        # When the caller rolls back
        conn.rollback()

        # Then nothing was registered
        with pytest.raises(RegistryError, match="unknown actor"):
            registry.show_actor(conn, actor_id)


SHORT_KEY = b64url_encode(b"x" * 31)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"actor_id": "system"}, "internal"),
        ({"actor_id": ""}, "actor id must not be blank"),
        ({"actor_id": "a\nb"}, "control characters"),
        ({"actor_id": "a" * 129}, "at most 128"),
        ({"actor_id": 7}, "actor id must be a string"),
        ({"actor_id": "a\udc80"}, "actor id must be valid Unicode"),
        ({"type": "robot"}, "type must be one of user|service|system|scheduler|administrator"),
        ({"roles": ["root"]}, "role must be one of requester|approver|operator|administrator"),
        ({"groups": [""]}, "group must not be blank"),
        ({"groups": [f"g{i}" for i in range(101)]}, "at most 100 groups"),
        ({"name": "x" * 201}, "name must be at most 200"),
        ({"name": "a\x00b"}, "without NUL"),
        ({"name": 3}, "name must be a string"),
        ({"name": "a\ud800"}, "without NUL"),
        ({"public_key": "not base64!"}, "not base64url"),
        ({"public_key": generate("x").public_key_b64 + "="}, "not base64url"),
        ({"public_key": SHORT_KEY}, "must decode to 32 bytes, got 31"),
        ({"public_key": "QUJD"}, "must decode to 32 bytes, got 3"),
        ({"public_key": 12}, "public key must be a string"),
        ({"key_id": "k1"}, "a key id needs the public key"),
        ({"public_key": generate("x").public_key_b64, "key_id": " "}, "key id must not be blank"),
    ],
)
def test_invalid_input_is_refused_before_anything_is_written(
    db: psycopg.Connection[Any], change: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {
        "actor_id": new_id("val"),
        "name": "Valid",
        "type": "user",
        "roles": ["approver"],
        "groups": ["cab"],
        "public_key": None,
        "key_id": None,
    }
    arguments.update(change)
    before = db.execute("SELECT count(*) FROM registry_audit").fetchone()

    with pytest.raises(RegistryInputError, match=message):
        registry.add_actor(db, **arguments)

    assert db.execute("SELECT count(*) FROM registry_audit").fetchone() == before


def test_an_invalid_key_is_refused_when_added_or_revoked(db: psycopg.Connection[Any]) -> None:
    actor_id = new_id("badkey")
    registry.add_actor(db, actor_id, None, "user", [], [])

    with pytest.raises(RegistryInputError, match="not base64url"):
        registry.add_key(db, actor_id, "+" * 43)
    with pytest.raises(RegistryInputError, match="key id must not contain control"):
        registry.revoke_key(db, "k\x00")
    assert registry.show_actor(db, actor_id).keys == ()


def test_a_role_is_added_and_removed_one_at_a_time_and_audited(
    db: psycopg.Connection[Any],
) -> None:
    # Given an approver
    actor_id = new_id("roles")
    registry.add_actor(db, actor_id, None, "user", ["approver"], ["cab"], public_key=public_key())

    # When it is made a requester too, then loses the approver role
    added = registry.add_role(db, actor_id, "requester")
    removed = registry.remove_role(db, actor_id, "approver")

    # Then its roles changed one at a time, its groups and keys kept
    assert added.roles == ("approver", "requester")
    assert (removed.roles, removed.groups, len(removed.keys)) == (("requester",), ("cab",), 1)
    # And the registry's trigger recorded each change
    details = db.execute(
        "SELECT details FROM registry_audit WHERE actor_id = %s AND action = 'actor_updated' "
        "ORDER BY id",
        (actor_id,),
    ).fetchall()
    assert [row[0] for row in details] == [
        {"roles": {"from": ["approver"], "to": ["approver", "requester"]}},
        {"roles": {"from": ["approver", "requester"], "to": ["requester"]}},
    ]


def test_a_group_membership_is_added_and_removed_and_audited(
    db: psycopg.Connection[Any],
) -> None:
    actor_id = new_id("groups")
    registry.add_actor(db, actor_id, None, "user", ["approver"], ["cab"])

    assert registry.add_group(db, actor_id, "sre").groups == ("cab", "sre")
    assert registry.remove_group(db, actor_id, "cab").groups == ("sre",)
    details = db.execute(
        "SELECT details FROM registry_audit WHERE actor_id = %s AND action = 'actor_updated' "
        "ORDER BY id",
        (actor_id,),
    ).fetchall()
    assert [row[0] for row in details] == [
        {"groups": {"from": ["cab"], "to": ["cab", "sre"]}},
        {"groups": {"from": ["cab", "sre"], "to": ["sre"]}},
    ]


def test_a_role_or_group_held_twice_or_not_held_is_a_registry_error(
    db: psycopg.Connection[Any],
) -> None:
    actor_id = new_id("held")
    registry.add_actor(db, actor_id, None, "user", ["approver"], ["cab"])

    with pytest.raises(RegistryError, match="already has role 'approver'"):
        registry.add_role(db, actor_id, "approver")
    with pytest.raises(RegistryError, match="has no role 'operator'"):
        registry.remove_role(db, actor_id, "operator")
    with pytest.raises(RegistryError, match="already has group 'cab'"):
        registry.add_group(db, actor_id, "cab")
    with pytest.raises(RegistryError, match="has no group 'sre'"):
        registry.remove_group(db, actor_id, "sre")
    with pytest.raises(RegistryError, match="unknown actor"):
        registry.add_role(db, new_id("ghost"), "approver")
    with pytest.raises(RegistryInputError, match="role must be one of"):
        registry.add_role(db, actor_id, "root")
    with pytest.raises(RegistryInputError, match="group must not be blank"):
        registry.add_group(db, actor_id, " ")
    assert registry.show_actor(db, actor_id).roles == ("approver",)


def test_the_roster_says_who_is_active_in_which_roles_and_groups_with_a_usable_key(
    db: psycopg.Connection[Any],
) -> None:
    # Given an approver with a key, one whose only key is revoked, and an inactive one
    keyed, revoked, inactive = new_id("keyed"), new_id("revoked"), new_id("inactive")
    registry.add_actor(db, keyed, None, "user", ["approver"], ["cab"], public_key=public_key())
    gone = registry.add_actor(db, revoked, None, "user", ["approver"], [], public_key=public_key())
    registry.revoke_key(db, gone.keys[0].key_id)
    registry.add_actor(db, inactive, None, "user", ["requester"], ["ops"], public_key=public_key())
    registry.set_active(db, inactive, False)

    # When the roster is read
    roster = {actor.actor_id: actor for actor in registry.roster(db)}

    # Then each is as the satisfiability check needs it
    assert roster[keyed] == RosterActor(keyed, True, frozenset({"approver"}), frozenset({"cab"}))
    assert roster[keyed].may_approve
    assert (roster[revoked].has_key, roster[revoked].may_approve) == (False, False)
    assert (roster[inactive].active, roster[inactive].may_submit) == (False, False)
    assert roster[inactive].groups == frozenset({"ops"})
