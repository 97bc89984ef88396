"""Proofs: base64url, the bytes a signature covers, and the chain over a request's decisions."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from governance.codec import decision_to_dict
from governance.proof import (
    CHAINED_FIELDS,
    b64url_decode,
    b64url_encode,
    chain_hash,
    chained_decision,
    decision_digest_material,
    signed_bytes,
)

from .builders import NOW, SIGNATURE, applied, issue, kinds, submit_payload, submitted

# --------------------------------------------------------------------------- base64url


@given(st.binary(max_size=100))
def test_base64url_round_trips_without_padding(data: bytes) -> None:
    text = b64url_encode(data)

    assert "=" not in text and "+" not in text and "/" not in text
    assert b64url_decode(text) == data


def test_base64url_of_known_bytes() -> None:
    assert b64url_encode(b"\xfb\xff") == "-_8"
    assert b64url_decode("-_8") == b"\xfb\xff"
    assert b64url_encode(b"") == ""
    assert b64url_decode("") == b""


@pytest.mark.parametrize(
    ("text", "why"),
    [
        pytest.param("-_8=", "must not be padded", id="padded"),
        pytest.param("+/8", "outside", id="standard-alphabet"),
        pytest.param("ab cd", "outside", id="space"),
        pytest.param("abc\n", "outside", id="newline"),
        pytest.param("é", "outside", id="non-ascii"),
        pytest.param("abcde", "no encoding is 5 characters long", id="impossible-length"),
        pytest.param("-_9", "non-canonical final character", id="leftover-bits"),
    ],
)
def test_base64url_decode_refuses_bad_input(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        b64url_decode(text)


def test_base64url_decode_refuses_what_is_not_text() -> None:
    with pytest.raises(ValueError, match="expected base64url text, got bytes"):
        b64url_decode(b"abcd")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- signed bytes


def signed_command() -> dict[str, Any]:
    return {
        "command_id": "cmd-1",
        "type": "approve",
        "request_id": "req-42",
        "expected_revision": 3,
        "actor": {"id": "alice", "name": "Alice", "type": "user"},
        "metadata": {"b": [1, 2.5, None, True], "a": "é\u2028"},
        "issued_at": "2026-11-28T14:00:00Z",
        "audience": "governance",
        "auth": {"key_id": "alice-1", "signature": SIGNATURE},
    }


def reordered(value: Any) -> Any:
    """``value`` with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {key: reordered(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(item) for item in value]
    return value


def test_signed_bytes_are_the_jcs_of_the_command_without_auth() -> None:
    command = signed_command()

    assert signed_bytes(command) == (
        b'{"actor":{"id":"alice","name":"Alice","type":"user"},"audience":"governance",'
        b'"command_id":"cmd-1","expected_revision":3,"issued_at":"2026-11-28T14:00:00Z",'
        b'"metadata":{"a":"\xc3\xa9\xe2\x80\xa8","b":[1,2.5,null,true]},"request_id":"req-42",'
        b'"type":"approve"}'
    )


def test_signed_bytes_do_not_depend_on_key_order_or_whitespace() -> None:
    command = signed_command()
    respelled = json.loads(json.dumps(reordered(command), indent=4, ensure_ascii=True))

    assert list(respelled) != list(command)
    assert signed_bytes(respelled) == signed_bytes(command)


def test_signed_bytes_leave_out_auth_whatever_it_holds() -> None:
    command = signed_command()
    unsigned = {k: v for k, v in command.items() if k != "auth"}

    assert signed_bytes(command) == signed_bytes(unsigned)
    assert signed_bytes({**command, "auth": "anything"}) == signed_bytes(unsigned)
    assert b"auth" not in signed_bytes(command)


def test_signed_bytes_leave_the_command_alone() -> None:
    command = signed_command()

    signed_bytes(command)

    assert command == signed_command()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("request_id", "req-43"),
        ("expected_revision", 4),
        ("command_id", "cmd-2"),
        ("audience", "staging"),
        ("issued_at", "2026-11-28T14:00:01Z"),
        ("metadata", {"b": [1, 2.5, None, True], "a": "e"}),
    ],
)
def test_signed_bytes_bind_every_member_but_auth(field: str, value: Any) -> None:
    assert signed_bytes({**signed_command(), field: value}) != signed_bytes(signed_command())


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(2**53, id="integer-beyond-2**53-1"),
        pytest.param(-(2**53), id="integer-below-minus-2**53-1"),
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="infinity"),
        pytest.param("\udfff", id="lone-surrogate"),
        pytest.param({1: "x"}, id="non-string-key"),
        pytest.param(datetime(2026, 1, 1, tzinfo=UTC), id="not-json"),
    ],
)
def test_a_command_that_cannot_be_canonicalised_raises_value_error(value: Any) -> None:
    with pytest.raises(ValueError, match="the command cannot be canonicalised"):
        signed_bytes({**signed_command(), "metadata": {"x": value}})


def test_integers_at_the_edge_of_the_jcs_range_are_canonicalised() -> None:
    edge = {**signed_command(), "metadata": {"max": 2**53 - 1, "min": -(2**53 - 1)}}

    assert b'"max":9007199254740991,"min":-9007199254740991' in signed_bytes(edge)


def test_a_command_nested_too_deep_raises_value_error() -> None:
    deep: Any = 1
    for _ in range(5_000):
        deep = [deep]

    with pytest.raises(ValueError, match="nested too deep"):
        signed_bytes({**signed_command(), "metadata": {"x": deep}})


# --------------------------------------------------------------------------- the chain


def chained(**changes: Any) -> dict[str, Any]:
    decision = {
        "category": "approval",
        "type": "granted",
        "actor": {"id": "alice", "name": "Alice", "type": "user"},
        "reason": "fine",
        "metadata": {"approval_id": "a-1", "step_order": 1},
        "occurred_at": "2026-11-28T14:00:00Z",
    }
    return {**chained_decision("req-42", 2, 0, "cmd-1", decision), **changes}


def test_a_chained_decision_has_exactly_the_chained_fields() -> None:
    assert list(chained()) == list(CHAINED_FIELDS)
    assert chained()["actor"] == {"id": "alice", "name": "Alice", "type": "user"}


def test_a_chained_decision_takes_only_its_fields_from_a_decision_row() -> None:
    # Given a decision row read back with more than the chain covers, and a datetime
    row = {
        "category": "lifecycle",
        "type": "approved",
        "actor": {"id": "bob", "type": "service", "extra": 1},
        "occurred_at": datetime(2026, 11, 28, 16, 0, tzinfo=timezone(timedelta(hours=2))),
        "chain_hash": "ab" * 32,
        "metadata": None,
    }

    # When it is chained
    decision = chained_decision("req-42", 5, 1, "cmd-9", row)

    # Then it holds the chained fields only, the instant in the wire form
    assert decision == {
        "request_id": "req-42",
        "revision": 5,
        "position": 1,
        "command_id": "cmd-9",
        "category": "lifecycle",
        "type": "approved",
        "actor": {"id": "bob", "name": None, "type": "service"},
        "reason": None,
        "metadata": {},
        "occurred_at": "2026-11-28T14:00:00Z",
    }


def test_a_chained_decision_of_the_codec_form_is_what_a_stored_row_gives() -> None:
    # Given a decision as the worker writes it (the codec's form), and as a verifier reads
    # it back (the instant a datetime)
    request = submitted(submit_payload(approval_requirements=[{"approver_id": "alice"}]))
    outcome = applied(issue(request, "approve_requirement", actor_id="alice"))
    assert kinds(outcome.decisions) == ["approval.granted", "lifecycle.approved"]
    decision = outcome.decisions[0]
    as_written = decision_to_dict(decision)
    as_read = {**as_written, "occurred_at": decision.occurred_at}

    # Then both chain as one dictionary
    assert chained_decision("req-42", 2, 0, "c", as_written) == chained_decision(
        "req-42", 2, 0, "c", as_read
    )
    assert as_written["occurred_at"] == "2026-11-28T14:00:00Z"
    assert decision.occurred_at == NOW


def test_the_chain_hash_is_sha256_of_the_previous_hash_and_the_jcs_of_the_decision() -> None:
    decision = chained()
    previous = "0f" * 32

    assert decision_digest_material(decision) == (
        b'{"actor":{"id":"alice","name":"Alice","type":"user"},"category":"approval",'
        b'"command_id":"cmd-1","metadata":{"approval_id":"a-1","step_order":1},"occurred_at":'
        b'"2026-11-28T14:00:00Z","position":0,"reason":"fine","request_id":"req-42",'
        b'"revision":2,"type":"granted"}'
    )
    assert (
        chain_hash(previous, decision)
        == hashlib.sha256(previous.encode("ascii") + decision_digest_material(decision)).hexdigest()
    )
    assert (
        chain_hash(None, decision) == hashlib.sha256(decision_digest_material(decision)).hexdigest()
    )


def test_the_chain_hash_is_deterministic_and_independent_of_key_order() -> None:
    decision = chained()

    assert chain_hash("ab", decision) == chain_hash("ab", chained())
    assert chain_hash("ab", reordered(decision)) == chain_hash("ab", decision)
    assert len(chain_hash(None, decision)) == 64


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("request_id", "req-43"),
        ("revision", 3),
        ("position", 1),
        ("command_id", "cmd-2"),
        ("category", "lifecycle"),
        ("type", "rejected"),
        ("actor", {"id": "mallory", "name": "Alice", "type": "user"}),
        ("actor", {"id": "alice", "name": "Alicia", "type": "user"}),
        ("actor", {"id": "alice", "name": "Alice", "type": "service"}),
        ("reason", None),
        ("reason", "fine."),
        ("metadata", {"approval_id": "a-2", "step_order": 1}),
        ("metadata", {}),
        ("occurred_at", "2026-11-28T14:00:00.000001Z"),
    ],
)
def test_changing_any_field_of_a_decision_changes_its_hash(field: str, value: Any) -> None:
    assert chain_hash(None, chained(**{field: value})) != chain_hash(None, chained())


def test_each_hash_chains_on_the_previous_one() -> None:
    # Given three decisions chained one after the other
    first, second, third = (chained(position=i) for i in range(3))
    h1 = chain_hash(None, first)
    h2 = chain_hash(h1, second)
    h3 = chain_hash(h2, third)

    # Then every link depends on the one before: rewriting the first changes them all
    assert len({h1, h2, h3}) == 3
    forged = chain_hash(None, chained(position=0, reason="rewritten"))
    assert chain_hash(forged, second) != h2
    assert chain_hash(chain_hash(forged, second), third) != h3
    # And the first decision differs from one chained on something
    assert chain_hash("", first) == h1
    assert chain_hash(h1, first) != h1


def test_a_decision_that_cannot_be_canonicalised_raises_value_error() -> None:
    with pytest.raises(ValueError, match="the decision cannot be canonicalised"):
        chain_hash(None, chained(metadata={"n": 2**60}))


# --------------------------------------------------------------------------- canonical JSON

_JSON_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _JSON_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_JSON_TEXT, children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(_JSON_TEXT, _JSON, max_size=6))
def test_the_canonical_bytes_are_rfc_8785_whatever_the_json(value: dict[str, Any]) -> None:
    # The fast path (sorted compact JSON) must never differ from the reference canonicaliser:
    # a subscriber in another language verifies with a real RFC 8785 implementation.
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        with pytest.raises(ValueError, match="RFC 8785"):
            signed_bytes(value)
        return
    assert signed_bytes(value) == expected


def test_keys_outside_the_basic_plane_are_sorted_by_utf_16_as_rfc_8785_says() -> None:
    # U+1F600 is D83D DE00 in UTF-16, so it sorts before U+FF5E, though its code point is higher
    value = {"\uff5e": 2, "\U0001f600": 1}

    canonical = signed_bytes(value)

    assert canonical == rfc8785.dumps(value)
    assert canonical.index("\U0001f600".encode()) < canonical.index("\uff5e".encode())


def test_floats_are_written_as_ecmascript_writes_them() -> None:
    value = {"small": 1e-7, "large": 1e21, "plain": 2.5}

    assert signed_bytes(value) == b'{"large":1e+21,"plain":2.5,"small":1e-7}'
