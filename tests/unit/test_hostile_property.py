"""Property-based: the command streams of the lifecycle properties, now and then carrying a
NUL character or an instant at the very end of the years 1..9999.

Parsing such a command either refuses it with an ``InvalidCommand`` (never another
exception), which then changes nothing, or accepts it, and then everything the database will
store of it can be stored: metadata survives ``canonical_json`` and holds no NUL, and every
instant lies in the range a command may name.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from governance.commands import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    Command,
    InvalidCommand,
    SubmitArgs,
    canonical_json,
    command_digest,
    parse_command,
)
from governance.rules import Applied, decide

from .builders import NOW
from .test_invariants_property import (
    PROPERTY_SETTINGS,
    check_request,
    check_step,
    draw_command,
    submit_commands,
)


def _stamp(moment: datetime, offset_minutes: int) -> str:
    return moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes))).isoformat()


#: Strings with a NUL character somewhere: no JSONB value and no text column can hold one.
NUL_TEXTS = st.builds(
    lambda before, after: f"{before}\x00{after}", st.text(max_size=4), st.text(max_size=4)
)
#: Instants at either end of the years 1..9999 with offsets up to ±14:00, some of them not
#: even representable in UTC.
EXTREME_STAMPS = st.one_of(
    st.sampled_from(
        [
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:00:00-14:00",
            "0001-01-02T00:00:00Z",
            "9999-12-30T23:59:59.999999Z",
        ]
    ),
    st.builds(
        _stamp,
        st.datetimes(max_value=datetime(1, 1, 3)) | st.datetimes(min_value=datetime(9999, 12, 29)),
        st.sampled_from([-14 * 60, -1, 0, 1, 14 * 60]),
    ),
)
#: Metadata with NUL characters in keys and values at any depth (and some without).
NUL_METADATA = st.recursive(
    st.none() | st.integers() | st.text(max_size=4) | NUL_TEXTS,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=3) | NUL_TEXTS, children, max_size=3)
    ),
    max_leaves=6,
).map(lambda value: {"note": value})
#: Where ``hostile`` puts what it draws.
HOSTILE_FIELDS = [
    "reason",
    "actor.name",
    "metadata",
    "issued_at",
    "args.expires_at",
    "args.metadata",
    "args.intent.metadata",
    "args.intent.description",
]


@st.composite
def hostile(draw: st.DrawFn, payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` as it is, or one time in four with a NUL character or an extreme instant
    put into one of its fields."""
    if draw(st.integers(0, 3)) > 0:
        return payload
    result = copy.deepcopy(payload)
    where = draw(st.sampled_from(HOSTILE_FIELDS))
    if where.endswith("metadata"):
        value: Any = draw(NUL_METADATA)
    elif where.endswith(("issued_at", "expires_at")):
        value = draw(EXTREME_STAMPS)
    else:
        value = draw(NUL_TEXTS)
    *parents, last = where.split(".")
    target = result
    for part in parents:
        target = target.setdefault(part, {})
    target[last] = value
    return result


def strings_in(value: Any) -> list[str]:
    """Every string and key inside a JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in [key, *strings_in(item)]]
    if isinstance(value, list | tuple):
        return [s for item in value for s in strings_in(item)]
    return []


def parsed_or_refused(payload: dict[str, Any]) -> Command | None:
    """The parsed command, or None when validation refused it; any other exception escapes
    and fails the example."""
    try:
        command = parse_command(payload)
    except InvalidCommand as exc:
        # The refusal is itself stored, as a rejection event: it must hold no NUL either.
        assert "\x00" not in exc.message
        exc.message.encode("utf-8")
        return None
    metadata = [command.metadata]
    if isinstance(command.args, SubmitArgs):
        metadata += [command.args.metadata, command.args.intent.metadata]
    for value in metadata:
        assert json.loads(canonical_json(value)) == value
        assert not any("\x00" in text for text in strings_in(value))
    for when in (command.issued_at, getattr(command.args, "expires_at", None)):
        assert when is None or EARLIEST_TIMESTAMP <= when <= LATEST_TIMESTAMP
    assert len(command_digest(command)) == 64
    return command


@PROPERTY_SETTINGS
@given(data=st.data(), submit=submit_commands(), steps=st.integers(1, 25))
def test_a_command_stream_with_nul_characters_and_extreme_instants_keeps_the_invariants(
    data: st.DataObject, submit: dict[str, Any], steps: int
) -> None:
    first = decide(None, parse_command(submit), NOW)
    assert isinstance(first, Applied)
    request = first.request

    for step in range(steps):
        command = parsed_or_refused(data.draw(hostile(draw_command(data.draw, request, step))))
        if command is None:
            # Refused before any decision, as the worker answers it: nothing changes.
            continue
        snapshot = copy.deepcopy(request)

        outcome = decide(request, command, NOW)

        check_step(request, snapshot, command, outcome)
        if isinstance(outcome, Applied):
            request = outcome.request
            check_request(request)


@PROPERTY_SETTINGS
@given(submit=submit_commands().flatmap(hostile))
def test_a_submit_with_a_nul_character_or_an_extreme_instant_is_refused_or_applied(
    submit: dict[str, Any],
) -> None:
    command = parsed_or_refused(submit)
    if command is None:
        return

    outcome = decide(None, command, NOW)

    assert isinstance(outcome, Applied)
    check_request(outcome.request)
