"""The command contract: transition commands, their arguments, parsing and validation.

``parse_command`` turns a decoded JSON message into a :class:`Command` or raises
:class:`InvalidCommand` naming the offending field and what was expected. The limits are
those of the wire contract, and anything PostgreSQL would refuse to store (a NUL character,
a lone surrogate, an instant its clients cannot read back) is refused here, so that the
database never has to.

``command_digest`` fingerprints a validated command by what it means, for the idempotency
ledger; ``payload_hash`` fingerprints a raw payload that has no parsed form.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import UnionType
from typing import Annotated, Any, NoReturn, Union, cast, get_args, get_origin

import msgspec
from msgspec import Meta

from governance.model import (
    Actor,
    ActorType,
    BlastRadius,
    BlastScope,
    Intent,
    PendingReason,
    RiskLevel,
    Status,
)

MAX_ID_LENGTH = 128
MAX_REASON_LENGTH = 2_000
MAX_TEXT_LENGTH = 2_000
MAX_NAME_LENGTH = 200
MAX_METADATA_BYTES = 16 * 1024
MAX_NESTING_DEPTH = 32
MAX_REQUIREMENTS = 100
#: The most grants a group requirement may ask for (``min_approvals``).
MAX_MIN_APPROVALS = 100
#: An Ed25519 signature is 86 characters of base64url; the room above that is for a
#: malformed one to be refused by verification (``unauthenticated``), not by size.
MAX_SIGNATURE_LENGTH = 512
#: A passkey assertion's authenticator data and client data JSON, in base64url.
MAX_BLOB_LENGTH = 4_096
MAX_TAGS = 64
MAX_REVISION = 2**63 - 1
#: The largest integer RFC 8785 (IEEE 754 doubles) represents exactly.
MAX_SAFE = 2**53 - 1
#: The instants a command may name. One day inside Python's own range (years 1..9999): a
#: client whose session time zone is not UTC reads a ``timestamptz`` back in that zone, and
#: an instant at the very edge would fall outside the range there (any offset is under 24h).
EARLIEST_TIMESTAMP = datetime(1, 1, 2, tzinfo=UTC)
LATEST_TIMESTAMP = datetime(9999, 12, 30, 23, 59, 59, 999_999, tzinfo=UTC)
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class CommandType(StrEnum):
    """The transition commands of the contract."""

    SUBMIT = "submit"
    MOVE_TO_PENDING = "move_to_pending"
    APPROVE = "approve"
    REJECT = "reject"
    CANCEL = "cancel"
    EXPIRE = "expire"
    SUPERSEDE = "supersede"
    MARK_EXECUTED = "mark_executed"
    APPROVE_REQUIREMENT = "approve_requirement"
    REJECT_REQUIREMENT = "reject_requirement"
    RESOLVE_VERSION = "resolve_version"


class ResolutionStrategy(StrEnum):
    REJECT_STALE = "reject_stale"
    REQUIRE_RENEWED_APPROVAL = "require_renewed_approval"
    REVALIDATE_ON_LATEST_STATE = "revalidate_on_latest_state"


class InvalidCommand(ValueError):
    """A command that fails validation; ``field`` is the dotted path of the culprit."""

    def __init__(self, field: str, message: str) -> None:
        # A field name taken from the message may hold a lone surrogate: escape it, so that
        # the rejection that quotes it can itself be encoded.
        field, message = _printable(field), _printable(message)
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = f"{field}: {message}"


def _printable(text: str) -> str:
    # NUL too: the rejection event that quotes the text is stored as JSONB, which refuses it.
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _encodable(text: str) -> bool:
    """Whether ``text`` is valid Unicode: a JSON escape can spell a lone surrogate, which no
    UTF-8 event, log or database can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --------------------------------------------------------------------------- the JSON text


class DuplicateKeys(dict[str, Any]):
    """A JSON object that named a key more than once, as :func:`decode_json` reads it: the
    last value of each key (what ``json.loads`` keeps), marked, so that a command holding one
    anywhere is refused (``invalid_command``) instead of being read one way here and another
    way by a tool that keeps the first value."""

    __slots__ = ("duplicates", "pairs")

    def __init__(self, pairs: list[tuple[str, Any]], duplicates: tuple[str, ...]) -> None:
        super().__init__(pairs)
        self.duplicates = duplicates
        #: Every member as given, repeated keys included (see :func:`encode_json`).
        self.pairs = list(pairs)

    def __reduce__(self) -> Any:
        # Pickled (a prefork pool, a multiprocessing queue) as itself, marks included.
        return (DuplicateKeys, (self.pairs, self.duplicates))


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    decoded = dict(pairs)
    if len(decoded) == len(pairs):
        return decoded
    seen: set[str] = set()
    duplicates: list[str] = []
    for key, _ in pairs:
        if key in seen and key not in duplicates:
            duplicates.append(key)
        seen.add(key)
    return DuplicateKeys(pairs, tuple(duplicates))


def decode_json(text: str | bytes | bytearray | memoryview) -> Any:
    """Plain JSON, as every path that reads a command decodes it: no serializer's object
    hooks (an object is an object, whatever its keys), and an object that names a key more
    than once kept as a :class:`DuplicateKeys` for validation to refuse. Raises
    ``ValueError`` (``UnicodeDecodeError`` included) and ``RecursionError``."""
    if isinstance(text, memoryview | bytearray):
        text = bytes(text)
    return json.loads(text, object_pairs_hook=_object)


def encode_json(value: object, depth: int = 0) -> str:
    """``value`` as JSON text, an object read with a key given twice written back with every
    member it had (a dead letter must stay the message that was refused, not become a valid
    command). Anything JSON cannot hold is written as its ``repr``, as a string."""
    if depth > MAX_NESTING_DEPTH + 8:
        return json.dumps(repr(value), ensure_ascii=False)
    if isinstance(value, DuplicateKeys):
        members = value.pairs
    elif isinstance(value, dict):
        members = list(value.items())
    elif isinstance(value, list | tuple):
        return "[" + ", ".join(encode_json(item, depth + 1) for item in value) + "]"
    else:
        return json.dumps(value, ensure_ascii=False, default=repr)
    return (
        "{"
        + ", ".join(
            f"{json.dumps(str(key), ensure_ascii=False)}: {encode_json(item, depth + 1)}"
            for key, item in members
        )
        + "}"
    )


def duplicate_key(value: object, field: str = "", depth: int = 0) -> str | None:
    """The dotted path of the first key given twice in one object of ``value``, or None."""
    if depth > MAX_NESTING_DEPTH + 2:
        return None
    if isinstance(value, DuplicateKeys):
        return _joined(field, value.duplicates[0])
    if isinstance(value, dict):
        for key, item in value.items():
            found = duplicate_key(item, _joined(field, str(key)), depth + 1)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = duplicate_key(item, f"{field}[{index}]", depth + 1)
            if found is not None:
                return found
    return None


def _refuse_duplicate_keys(payload: object) -> None:
    found = duplicate_key(payload)
    if found is not None:
        _fail(found, "given more than once in one object (a command must read one way only)")


# --------------------------------------------------------------------------- the wire models
#
# The contract as msgspec types: ``msgspec.convert`` checks shapes, types, lengths, ranges,
# enums, required and unknown fields in C, and ``governance.schema`` derives the JSON
# Schemas from the same types. What a type cannot say (timestamps in range, metadata that
# JSONB can store, the rules between fields) is checked after conversion, in plain Python.
# The patterns use lookaheads and ``(?![\s\S])`` instead of ``$`` because ``$`` also
# matches before a final newline, and they must mean the same to JSON Schema validators.

IDENTIFIER_PATTERN = r"^(?![\s\S]*[\x00-\x1f\x7f])[\s\S]*\S"
NAME_PATTERN = r"^(?![\s\S]*\x00)[\s\S]*\S"
TEXT_PATTERN = r"^[^\x00]*(?![\s\S])"
REQUEST_ID_WIRE_PATTERN = r"^[A-Za-z0-9._:-]{1,128}(?![\s\S])"
_METADATA_RULES = (
    f"at most {MAX_METADATA_BYTES} bytes as compact JSON, {MAX_NESTING_DEPTH} levels deep, "
    f"numbers finite and within ±{MAX_SAFE}, no NUL characters"
)

#: An identifier: non-blank, no control characters.
Identifier = Annotated[
    str, Meta(min_length=1, max_length=MAX_ID_LENGTH, pattern=IDENTIFIER_PATTERN)
]
#: A name: non-blank, no NUL characters.
Name = Annotated[str, Meta(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN)]
StateVersion = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH, pattern=NAME_PATTERN)]
Signature = Annotated[
    str, Meta(min_length=1, max_length=MAX_SIGNATURE_LENGTH, pattern=NAME_PATTERN)
]
#: Bytes in base64url, as a passkey's assertion carries them (its authenticator data and
#: client data JSON): the room is for well-formed ones; verification judges their content.
Blob = Annotated[str, Meta(min_length=1, max_length=MAX_BLOB_LENGTH, pattern=NAME_PATTERN)]
#: Free text, possibly empty, without NUL characters.
Label = Annotated[str, Meta(max_length=MAX_NAME_LENGTH, pattern=TEXT_PATTERN)]
Prose = Annotated[str, Meta(max_length=MAX_TEXT_LENGTH, pattern=TEXT_PATTERN)]
VersionText = Annotated[str, Meta(max_length=MAX_ID_LENGTH, pattern=TEXT_PATTERN)]
RequestId = Annotated[str, Meta(pattern=REQUEST_ID_WIRE_PATTERN)]
#: Read by :func:`parse_timestamp`, which accepts what ``datetime.fromisoformat`` does.
Timestamp = Annotated[
    str,
    Meta(
        description="ISO-8601 with a time zone, between 0001-01-02 and 9999-12-30 UTC",
        extra_json_schema={"format": "date-time"},
    ),
]
Revision = Annotated[int, Meta(ge=0, le=MAX_REVISION)]
Metadata = Annotated[dict[str, Any], Meta(description=_METADATA_RULES)]


class _Wire(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A contract object: unknown fields are refused."""


class WireActor(_Wire, frozen=True):
    """Who sends the command."""

    id: Identifier
    name: Label | None = None
    type: ActorType = ActorType.USER


class WireBlastRadius(_Wire, frozen=True):
    scope: BlastScope = BlastScope.SINGLE
    estimated_affected_count: Revision = 1
    description: Prose | None = None


class WireIntent(_Wire, frozen=True):
    """What the mutation means to do and how risky it is."""

    operation_name: Name
    category: Name = "general"
    description: Prose | None = None
    risk_level: RiskLevel = RiskLevel.LOW
    is_reversible: bool = True
    blast_radius: WireBlastRadius | None = None
    tags: Annotated[tuple[Name, ...], Meta(max_length=MAX_TAGS)] = ()
    metadata: Metadata | None = None


class RequirementSpec(_Wire, frozen=True):
    """An approval requirement as a submitter asks for it: decided by the actor
    ``approver_id``, or granted by ``min_approvals`` distinct members of ``approver_group``
    (exactly one of the two is set)."""

    approval_id: Identifier | None = None
    approver_id: Identifier | None = None
    approver_group: Identifier | None = None
    min_approvals: Annotated[int, Meta(ge=1, le=MAX_MIN_APPROVALS)] = 1
    approver_name: Label | None = None
    description: Prose | None = None
    step_order: Annotated[int, Meta(ge=1, le=1_000)] = 1


class WireSubmitArgs(_Wire, frozen=True):
    state_id: Identifier
    state_type: Name
    mutation_type: Name
    intent: WireIntent
    # Typed as any status so that an unknown one is named as such; only three may start.
    initial_status: (
        Annotated[Status, Meta(extra_json_schema={"enum": ["created", "pending", "approved"]})]
        | None
    ) = None
    pending_reason: PendingReason | None = None
    approval_requirements: (
        Annotated[tuple[RequirementSpec, ...], Meta(max_length=MAX_REQUIREMENTS)] | None
    ) = None
    expected_state_version: VersionText | None = None
    expires_at: Timestamp | None = None
    metadata: Metadata | None = None


class WireMoveToPendingArgs(_Wire, frozen=True):
    pending_reason: PendingReason
    expires_at: Timestamp | None = None


# The args below, and the signature, are their own parsed form: nothing to derive.


class NoArgs(_Wire, frozen=True):
    """The args of a command that takes none: an empty object (or null, or left out)."""


class SupersedeArgs(_Wire, frozen=True, kw_only=False):
    superseding_request_id: RequestId


class RequirementArgs(_Wire, frozen=True, kw_only=False):
    approval_id: Identifier


class ResolveVersionArgs(_Wire, frozen=True, kw_only=False):
    current_state_version: StateVersion
    strategy: ResolutionStrategy


class CommandAuth(_Wire, frozen=True, kw_only=False):
    """A command's signature: which registered key, and the signature (base64url). A member
    left out is for authentication to refuse (as empty), not for validation.

    ``scheme`` absent is ``ed25519``; ``webauthn`` is a passkey's assertion, which carries
    the authenticator data and the client data JSON it signed (base64url)."""

    key_id: Identifier = ""
    signature: Signature = ""
    scheme: Identifier | None = None
    authenticator_data: Blob | None = None
    client_data_json: Blob | None = None


class WireEnvelope(_Wire, frozen=True, tag_field="type"):
    """The fields every command carries; ``type`` says which command it is."""

    command_id: Identifier
    request_id: RequestId
    actor: WireActor
    reason: Prose | None = None
    metadata: Metadata | None = None
    issued_at: Timestamp | None = None
    audience: Identifier | None = None
    auth: CommandAuth | None = None


class _Submission(WireEnvelope, frozen=True, kw_only=True):
    # A submit creates its request: it may only expect revision 0, the one before it.
    expected_revision: Annotated[int, Meta(ge=0, le=0)] | None = None


class _Transition(WireEnvelope, frozen=True, kw_only=True):
    expected_revision: Revision


#: The args each command type takes; the others take none (an empty object or null).
_ARGS_MODELS: dict[CommandType, Any] = {
    CommandType.SUBMIT: WireSubmitArgs,
    CommandType.MOVE_TO_PENDING: WireMoveToPendingArgs,
    CommandType.SUPERSEDE: SupersedeArgs,
    CommandType.APPROVE_REQUIREMENT: RequirementArgs,
    CommandType.REJECT_REQUIREMENT: RequirementArgs,
    CommandType.RESOLVE_VERSION: ResolveVersionArgs,
}


def _command_model(command_type: CommandType) -> Any:
    args = _ARGS_MODELS.get(command_type)
    return msgspec.defstruct(
        "Wire" + command_type.title().replace("_", ""),
        [("args", args) if args else ("args", NoArgs | None, None)],
        bases=(_Submission if command_type is CommandType.SUBMIT else _Transition,),
        module=__name__,
        tag=command_type.value,
        frozen=True,
        kw_only=True,
    )


#: The wire model of each command type (``WireSubmit``, ``WireApprove``, ...), by type.
WIRE_COMMANDS: dict[str, Any] = {t.value: _command_model(t) for t in CommandType}
#: Any command: the union msgspec picks a member of by ``type``.
WireCommand: Any = Union[tuple(WIRE_COMMANDS.values())]  # noqa: UP007 - built at run time


# --------------------------------------------------------------------------- the parsed form


@dataclass(frozen=True, slots=True)
class SubmitArgs:
    """A submit's args, parsed: ``initial_status`` is the status asked for or, when the
    submit names none, the one its other args imply (``initial_status_given`` says which)."""

    state_id: str
    state_type: str
    mutation_type: str
    intent: Intent
    initial_status: Status
    pending_reason: PendingReason | None = None
    approval_requirements: tuple[RequirementSpec, ...] = ()
    expected_state_version: str | None = None
    expires_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Under an approval policy a request that needs approval starts pending, which a submit
    #: that left its status out accepts and one that asked for ``created`` does not.
    initial_status_given: bool = False


@dataclass(frozen=True, slots=True)
class MoveToPendingArgs:
    pending_reason: PendingReason
    expires_at: datetime | None = None


CommandArgs = (
    SubmitArgs | MoveToPendingArgs | NoArgs | SupersedeArgs | RequirementArgs | ResolveVersionArgs
)


@dataclass(frozen=True, slots=True)
class Command:
    """A validated transition command.

    ``audience`` and ``auth`` are what a signed command carries (the deployment it is meant
    for, and its signature); validation only checks their form, the worker verifies them.
    """

    command_id: str
    type: CommandType
    request_id: str
    expected_revision: int | None
    actor: Actor
    args: CommandArgs = field(default_factory=NoArgs)
    reason: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    issued_at: datetime | None = None
    audience: str | None = None
    auth: CommandAuth | None = None


# --------------------------------------------------------------------------- refusals
#
# msgspec says what is wrong in its own words (``Expected `str` of length <= 128 - at
# `$.args.state_id```); a refusal says it in the contract's, from the declared type at that
# path and the value found there. This runs only for a command that is refused.

_MISSING: Any = object()
#: What a list of the contract holds, and what its items are called, for its refusals.
_LISTS = {
    "tags": ("a list of strings", "tags"),
    "approval_requirements": ("a list of requirement objects", "requirements"),
}
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _fail(field: str, message: str) -> NoReturn:
    raise InvalidCommand(field, message)


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return json.dumps(shown)
    if isinstance(value, int) and value.bit_length() > 256:
        # Python refuses to print an integer of some thousands of digits.
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _convert(value: object, target: Any, field: str) -> Any:
    """``value`` as the wire type ``target``, or :class:`InvalidCommand` naming the culprit
    by its dotted path under ``field``."""
    try:
        return msgspec.convert(value, target)
    except msgspec.ValidationError as exc:
        plain = _plain_strings(value)
        if plain is not value:
            return _convert(plain, target, field)
        _refuse(str(exc), value, target, field)
    except UnicodeEncodeError:
        # msgspec quoting a lone surrogate (an unknown field's name, say) in its message.
        _refuse_surrogate(value, field)
        _fail(field or "command", "expected valid Unicode text, got a lone surrogate")


def _plain_strings(value: Any, depth: int = 0) -> Any:
    """``value`` with every ``str`` subclass (a ``StrEnum`` member from a Python caller) as a
    plain ``str``, which msgspec insists on; ``value`` itself when it holds none."""
    if isinstance(value, str):
        return value if type(value) is str else str.__str__(value)
    if depth > MAX_NESTING_DEPTH + 2:
        return value
    if isinstance(value, dict):
        plain: Any = {key: _plain_strings(item, depth + 1) for key, item in value.items()}
        same = all(plain[key] is item for key, item in value.items())
    elif isinstance(value, list):
        plain = [_plain_strings(item, depth + 1) for item in value]
        same = all(new is old for new, old in zip(plain, value, strict=True))
    else:
        return value
    return value if same else plain


def _refuse(error: str, value: object, target: Any, field: str) -> NoReturn:
    text, _, where = error.partition(" - at `")
    in_key = where.startswith("key` in `")
    path = where.removeprefix("key` in `").rstrip("`").removeprefix("$").removeprefix(".")
    parts = [int(index) if index else key for key, index in _PATH_PART.findall(path)]
    name = _joined(field, path) or "command"
    kind = value.get("type") if isinstance(value, dict) else None
    declared = _declared(WireEnvelope if target is WireCommand else target, parts)
    found = _value_at(value, parts)
    if text.startswith("Object missing required field `"):
        missing = text.removeprefix("Object missing required field `").rstrip("`")
        revision = missing == "expected_revision"
        _fail(_joined(field, path, missing), f"required for {kind}" if revision else "required")
    if text.startswith("Object contains unknown field `"):
        allowed = {f.name for f in msgspec.structs.fields(_unwrapped(declared)[0])}
        allowed |= set() if parts or field else {"type"}
        unknown = min(key for key in found if isinstance(key, str) and key not in allowed)
        if not allowed:
            _fail(_joined(field, path, unknown), f"unknown field; {kind} takes no args")
        expected = ", ".join(sorted(allowed))
        _fail(_joined(field, path, unknown), f"unknown field; expected one of {expected}")
    if in_key:
        _fail(name, "expected an object with string keys")
    if name == "expected_revision" and found is None:
        _fail(name, f"required for {kind}")
    _explain(CommandType if name == "type" else declared, found, name)
    _fail(name, text[:1].lower() + text[1:])


def _joined(*parts: str) -> str:
    return ".".join(part for part in parts if part)


def _value_at(value: Any, parts: list[str | int]) -> Any:
    for part in parts:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return value


def _declared(target: Any, parts: list[str | int]) -> Any:
    """The declared type at ``parts`` inside the wire type ``target`` (a missing ``type``
    or one of no command has none)."""
    declared = target
    for part in parts:
        declared = _unwrapped(declared)[0]
        if isinstance(part, int):
            declared = get_args(declared)[0]
        elif isinstance(declared, type) and issubclass(declared, msgspec.Struct):
            declared = {f.name: f.type for f in msgspec.structs.fields(declared)}.get(part)
    return declared


def _unwrapped(declared: Any) -> tuple[Any, tuple[Any, ...]]:
    """``declared`` without ``| None`` and ``Annotated``, and its metadata."""
    members = [t for t in get_args(declared) if t is not type(None)]
    if get_origin(declared) in (Union, UnionType) and len(members) == 1:
        declared = members[0]
    if get_origin(declared) is Annotated:
        return get_args(declared)[0], declared.__metadata__
    return declared, ()


def _explain(declared: Any, value: Any, field: str) -> None:
    """Refuse ``value`` as a ``declared`` in the contract's words, if it is not one."""
    base, metadata = _unwrapped(declared)
    meta = next((m for m in metadata if isinstance(m, Meta)), Meta())
    got = _describe(value)
    if isinstance(base, type) and issubclass(base, StrEnum):
        allowed = [member.value for member in base]
        if not isinstance(value, str) or value not in allowed:
            _fail(field, f"expected one of {', '.join(allowed)}, got {got}")
    elif base is bool and not isinstance(value, bool):
        _fail(field, f"expected true or false, got {got}")
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(field, f"expected an integer, got {got}")
        low, high = int(meta.ge or 0), int(MAX_REVISION if meta.le is None else meta.le)
        if not low <= value <= high:
            shown = value if value.bit_length() <= 256 else got
            _fail(field, f"expected an integer from {low} to {high}, got {shown}")
    elif base is str and (meta.extra_json_schema or {}).get("format") == "date-time":
        parse_timestamp(value, field)
    elif base is str:
        _explain_string(value, field, meta)
    elif get_origin(base) is tuple:
        what, noun = _LISTS[field.rsplit(".", 1)[-1]]
        if not isinstance(value, list):
            _fail(field, f"expected {what}, got {got}")
        if meta.max_length is not None and len(value) > meta.max_length:
            _fail(field, f"expected at most {meta.max_length} {noun}, got {len(value)}")
    elif not isinstance(value, dict):
        _fail(field, f"expected a JSON object, got {got}")


def _explain_string(value: object, field: str, meta: Meta) -> None:
    if not isinstance(value, str):
        _fail(field, f"expected a string, got {_describe(value)}")
    if meta.pattern == REQUEST_ID_WIRE_PATTERN:
        _fail(field, f"expected 1..128 characters of [A-Za-z0-9._:-], got {_describe(value)}")
    if meta.min_length and len(value) < meta.min_length:
        _fail(field, f"expected at least {meta.min_length} character(s), got an empty string")
    if meta.max_length is not None and len(value) > meta.max_length:
        _fail(field, f"expected at most {meta.max_length} characters, got {len(value)}")
    if meta.pattern != TEXT_PATTERN and not value.strip():
        _fail(field, "expected a non-blank string")
    if "\x00" in value:
        _fail(field, "expected no NUL characters")
    if meta.pattern == IDENTIFIER_PATTERN:
        _fail(field, "expected no control characters")


def _refuse_surrogate(value: object, field: str, depth: int = 0) -> None:
    """Refuse the first lone surrogate in ``value``, a string or an object's key, by its
    path (looking no deeper than any value may nest)."""
    if isinstance(value, str) and not _encodable(value):
        _fail(field or "command", "expected valid Unicode text, got a lone surrogate")
    if depth > MAX_NESTING_DEPTH + 2:
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_surrogate(item, f"{field}[{index}]", depth + 1)
    if isinstance(value, dict):
        for key, item in value.items():
            inner = _joined(field, str(key))
            if isinstance(key, str) and not _encodable(key):
                _fail(inner, "expected valid Unicode text, got a lone surrogate")
            _refuse_surrogate(item, inner, depth + 1)


# --------------------------------------------------------------------------- what types cannot say


def check_timestamp(value: datetime, field: str) -> datetime:
    """``value`` in UTC; :class:`InvalidCommand` naming ``field`` when the instant is outside
    ``EARLIEST_TIMESTAMP`` .. ``LATEST_TIMESTAMP`` (a naive value is taken as local time)."""
    return _in_range(value, field, value.isoformat())


def _in_range(value: datetime, field: str, shown: str) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError, OSError):
        # Not even representable in UTC (year 1 with a positive offset, 9999 with a negative);
        # a naive value goes through the C library's local time, which fails in its own ways.
        utc = None
    if utc is None or not EARLIEST_TIMESTAMP <= utc <= LATEST_TIMESTAMP:
        _fail(
            field,
            f"expected a timestamp between {EARLIEST_TIMESTAMP.date().isoformat()} and "
            f"{LATEST_TIMESTAMP.date().isoformat()} UTC, got {_describe(shown)}",
        )
    return utc


def parse_timestamp(value: object, field: str) -> datetime:
    """An ISO-8601 timestamp with a time zone, returned in UTC (see :func:`check_timestamp`
    for the instants accepted)."""
    if not isinstance(value, str):
        _fail(field, f"expected an ISO-8601 timestamp string, got {_describe(value)}")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        _fail(field, f"expected an ISO-8601 timestamp, got {_describe(value)}")
    if parsed.tzinfo is None:
        _fail(field, f"expected a timestamp with a time zone (e.g. Z), got {_describe(value)}")
    return _in_range(parsed, field, value)


def _optional_timestamp(value: str | None, field: str) -> datetime | None:
    return None if value is None else parse_timestamp(value, field)


def _check_json_value(value: object, field: str, depth: int = 0) -> None:
    """Refuse what JSON cannot spell or JSONB cannot store, naming the path of the culprit."""
    if depth > MAX_NESTING_DEPTH:
        _fail(field, f"expected at most {MAX_NESTING_DEPTH} levels of nesting")
    if isinstance(value, float) and not math.isfinite(value):
        _fail(field, f"expected a finite number, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool):
        _check_integer_digits(value, field)
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > MAX_SAFE:
        # Beyond ±(2**53 - 1) RFC 8785 cannot spell an integer, and JSONB reads a large
        # whole float back as one: the decision it lands in could be neither signed nor
        # chained the same way twice.
        _fail(field, f"expected a number within ±{MAX_SAFE}, got {value!r}")
    if isinstance(value, str):
        # JSONB refuses U+0000 in any string, where a text column would only refuse it raw.
        if "\x00" in value:
            _fail(field, "expected no NUL characters")
        if not _encodable(value):
            _fail(field, "expected valid Unicode text, got a lone surrogate")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                _fail(field, "expected an object with string keys")
            if "\x00" in key:
                _fail(field, f"expected keys without NUL characters, got {_describe(key)}")
            if not _encodable(key):
                _fail(field, "expected valid Unicode keys, got a lone surrogate")
            _check_json_value(item, f"{field}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json_value(item, f"{field}[{index}]", depth + 1)
    elif not (value is None or isinstance(value, str | int | float | bool)):
        _fail(field, f"expected a JSON value, got {type(value).__name__}")


def _check_integer_digits(value: int, field: str) -> None:
    # Python refuses to print an integer of too many digits (a ValueError that would escape
    # as a fault, not a refusal), and no longer one could fit the metadata size limit.
    digits = min(sys.get_int_max_str_digits() or MAX_METADATA_BYTES, MAX_METADATA_BYTES)
    # 10**digits has more than 3 bits a digit, so a shorter integer needs no comparison.
    if value.bit_length() > 3 * digits and abs(value) >= 10**digits:
        _fail(field, f"expected an integer of at most {digits} digits")


def _metadata(value: dict[str, Any] | None, field: str) -> dict[str, Any]:
    if not value:
        return {}
    _check_json_value(value, field)
    size = len(canonical_json(value).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        _fail(field, f"expected at most {MAX_METADATA_BYTES} bytes serialized, got {size}")
    return value


def _check_requirement(spec: RequirementSpec, given: Mapping[str, Any], field: str) -> None:
    # A null approver_group is as good as none, as for the other optional fields; a null
    # approver_id without a group stays the type error it always was.
    if spec.approver_group is None and spec.approver_id is None:
        missing = "approver_id" not in given
        _fail(
            f"{field}.approver_id",
            "required (or approver_group)" if missing else "expected a string, got null",
        )
    if spec.approver_group is not None and spec.approver_id is not None:
        _fail(f"{field}.approver_group", "expected either approver_id or approver_group, not both")
    if spec.min_approvals > 1 and spec.approver_group is None:
        _fail(
            f"{field}.min_approvals",
            f"expected 1 for a named approver, got {spec.min_approvals}; more than one approval "
            "needs approver_group",
        )


def _intent(wire: WireIntent) -> Intent:
    blast = wire.blast_radius or WireBlastRadius()
    return Intent(
        operation_name=wire.operation_name,
        category=wire.category,
        description=wire.description or "",
        risk_level=wire.risk_level,
        is_reversible=wire.is_reversible,
        blast_radius=BlastRadius(
            blast.scope, blast.estimated_affected_count, blast.description or ""
        ),
        tags=wire.tags,
        metadata=_metadata(wire.metadata, "args.intent.metadata"),
    )


def _submit_args(wire: WireSubmitArgs, given: Mapping[str, Any]) -> SubmitArgs:
    requirements = wire.approval_requirements or ()
    for index, spec in enumerate(requirements):
        as_given = given["approval_requirements"][index]
        _check_requirement(spec, as_given, f"args.approval_requirements[{index}]")
    given_ids = [spec.approval_id for spec in requirements if spec.approval_id is not None]
    if len(given_ids) != len(set(given_ids)):
        _fail("args.approval_requirements", "expected unique approval_id values")
    pending_reason = wire.pending_reason
    initial_status = wire.initial_status
    if initial_status is None:
        initial_status = Status.PENDING if requirements or pending_reason else Status.CREATED
    elif initial_status not in (Status.CREATED, Status.PENDING, Status.APPROVED):
        _fail(
            "args.initial_status",
            f"expected one of created, pending, approved, got {_describe(initial_status.value)}",
        )
    if requirements:
        if initial_status is not Status.PENDING:
            _fail(
                "args.initial_status",
                "approval_requirements imply pending; expected pending or no initial_status, "
                f"got {_describe(initial_status.value)}",
            )
        if pending_reason not in (None, PendingReason.APPROVAL):
            _fail(
                "args.pending_reason",
                "approval_requirements imply pending_reason approval, "
                f"got {_describe(pending_reason)}",
            )
    if initial_status is Status.PENDING and pending_reason is None:
        pending_reason = PendingReason.APPROVAL
    if initial_status is not Status.PENDING and pending_reason is not None:
        _fail(
            "args.pending_reason",
            "only allowed when initial_status is pending, "
            f"got initial_status {initial_status.value}",
        )
    if wire.expires_at is not None and initial_status is not Status.PENDING:
        _fail("args.expires_at", "only allowed when initial_status is pending")
    return SubmitArgs(
        state_id=wire.state_id,
        state_type=wire.state_type,
        mutation_type=wire.mutation_type,
        intent=_intent(wire.intent),
        initial_status=initial_status,
        pending_reason=pending_reason,
        approval_requirements=requirements,
        expected_state_version=wire.expected_state_version,
        expires_at=_optional_timestamp(wire.expires_at, "args.expires_at"),
        metadata=_metadata(wire.metadata, "args.metadata"),
        initial_status_given=wire.initial_status is not None,
    )


def _args(wire: object, given: Any) -> CommandArgs:
    """The parsed form of ``wire``, the args as converted from ``given``."""
    if isinstance(wire, WireSubmitArgs):
        return _submit_args(wire, given)
    if isinstance(wire, WireMoveToPendingArgs):
        return MoveToPendingArgs(
            wire.pending_reason, _optional_timestamp(wire.expires_at, "args.expires_at")
        )
    return NoArgs() if wire is None else cast("CommandArgs", wire)


def _actor(wire: WireActor) -> Actor:
    return Actor(id=wire.id, name=wire.name, type=wire.type)


def parse_actor(value: object, field: str = "actor") -> Actor:
    """An actor object: ``{"id": ..., "name"?: ..., "type"?: user|service|...}``."""
    actor = _actor(_convert(value, WireActor, field))
    _refuse_surrogate(value, field)
    return actor


def command_id_of(payload: object) -> str | None:
    """The command's usable ``command_id``, or None when the message cannot be answered."""
    if not isinstance(payload, dict):
        return None
    if isinstance(payload, DuplicateKeys) and "command_id" in payload.duplicates:
        # Two command ids: answering either would leave the sender of the other waiting.
        return None
    try:
        command_id: str = _convert(payload.get("command_id"), Identifier, "command_id")
    except InvalidCommand:
        return None
    return command_id if _encodable(command_id) else None


def parse_command(payload: object) -> Command:
    """Validate a decoded command message; raise :class:`InvalidCommand` naming the field."""
    _refuse_duplicate_keys(payload)
    kind = payload.get("type") if isinstance(payload, dict) else None
    # Straight to the type's model when the type is known (msgspec caches a class's decoding
    # plan, not a union's); the union words what is wrong with an unknown or missing one.
    target = WIRE_COMMANDS.get(kind, WireCommand) if isinstance(kind, str) else WireCommand
    wire = _convert(payload, target, "")
    command_type = CommandType(wire.__struct_config__.tag)
    command = Command(
        command_id=wire.command_id,
        type=command_type,
        request_id=wire.request_id,
        expected_revision=None if command_type is CommandType.SUBMIT else wire.expected_revision,
        actor=_actor(wire.actor),
        args=_args(wire.args, cast("dict[str, Any]", payload).get("args")),
        reason=wire.reason,
        metadata=_metadata(wire.metadata, "metadata"),
        issued_at=_optional_timestamp(wire.issued_at, "issued_at"),
        audience=wire.audience,
        auth=wire.auth,
    )
    try:
        # Every string is now known to be JSON, so only a lone surrogate can fail to encode.
        msgspec.json.encode(payload)
    except UnicodeEncodeError:
        _refuse_surrogate(payload, "")
        _fail("command", "expected valid Unicode text, got a lone surrogate")
    return command


def canonical_json(value: object) -> str:
    """Compact, key-sorted JSON: the same value always gives the same text."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def payload_hash(payload: Mapping[str, Any]) -> str:
    """The idempotency fingerprint of a raw command payload.

    ``issued_at`` and ``auth`` are left out: a producer re-sending the same command with a
    fresh stamp (and so a fresh signature) is still sending the same command.
    """
    material = {key: value for key, value in payload.items() if key not in _NOT_MEANING}
    try:
        text = canonical_json(material)
    except (TypeError, ValueError):
        text = repr(sorted(material.items(), key=lambda item: str(item[0])))
    duplicated = duplicate_key(payload)
    if duplicated is not None:
        # Not the same message as the one that gives each key once.
        text = f"duplicate key {duplicated}:{text}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


#: What a command carries about its sending, not about what it asks: left out of both
#: fingerprints.
_NOT_MEANING = frozenset({"issued_at", "auth"})

#: Set apart from ``payload_hash``'s material, so that no raw payload and no parsed command
#: can ever share a fingerprint.
_DIGEST_PREFIX = "parsed-command/1:"


def command_digest(command: Command) -> str:
    """The idempotency fingerprint of a validated command: what it means, not how it was
    spelled.

    Two payloads that parse to the same command (keys in another order, optional fields
    spelled out with their defaults, an instant in another time zone) get the same digest;
    a submit asking for ``created`` is not one that leaves its status out, which under an
    approval policy may start pending.
    ``issued_at`` and ``auth`` are left out, as in :func:`payload_hash`; ``audience`` stays
    in, since a command meant for another deployment is another command. Every field of
    the parsed form is in the material with its default filled in (a requirement's
    ``approver_group`` and ``min_approvals`` too), so a default spelled out or left out
    gives the same digest.
    """
    material = _canonical(command)
    for name in _NOT_MEANING:
        del material[name]
    args = command.args
    if isinstance(args, SubmitArgs) and not (
        args.initial_status_given and args.initial_status is Status.CREATED
    ):
        # Whether the status was given only changes what a submit means beside ``created``
        # (a given ``pending`` means what a derived one does, and ``approved`` is always
        # given): elsewhere it stays out, so that the digests recorded before it existed
        # are still those of the same commands.
        del material["args"]["initial_status_given"]
    text = _DIGEST_PREFIX + canonical_json(material)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _canonical(value: Any) -> Any:
    """A parsed value as plain JSON: every field present, enums by value, instants in UTC."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, StrEnum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, msgspec.Struct):
        return {name: _canonical(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, tuple | list):
        return [_canonical(item) for item in value]
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    return value
