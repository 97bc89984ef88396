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
from typing import Any, NoReturn, TypeVar

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


@dataclass(frozen=True, slots=True)
class RequirementSpec:
    """An approval requirement as a submitter asks for it: decided by the actor
    ``approver_id``, or granted by ``min_approvals`` distinct members of ``approver_group``
    (exactly one of the two is set)."""

    approver_id: str | None = None
    approval_id: str | None = None
    approver_name: str | None = None
    description: str | None = None
    step_order: int = 1
    approver_group: str | None = None
    min_approvals: int = 1


@dataclass(frozen=True, slots=True)
class SubmitArgs:
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


@dataclass(frozen=True, slots=True)
class MoveToPendingArgs:
    pending_reason: PendingReason
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class NoArgs:
    pass


@dataclass(frozen=True, slots=True)
class SupersedeArgs:
    superseding_request_id: str


@dataclass(frozen=True, slots=True)
class RequirementArgs:
    approval_id: str


@dataclass(frozen=True, slots=True)
class ResolveVersionArgs:
    current_state_version: str
    strategy: ResolutionStrategy


CommandArgs = (
    SubmitArgs | MoveToPendingArgs | NoArgs | SupersedeArgs | RequirementArgs | ResolveVersionArgs
)


@dataclass(frozen=True, slots=True)
class CommandAuth:
    """A command's signature: which registered key, and the signature (base64url)."""

    key_id: str
    signature: str


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


# --------------------------------------------------------------------------- primitives

_T = TypeVar("_T", bound=StrEnum)


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
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _object(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        _fail(field, f"expected a JSON object, got {_describe(value)}")
    for key in value:
        if not isinstance(key, str):
            _fail(field, "expected an object with string keys")
    return value


def _no_unknown_keys(obj: Mapping[str, Any], allowed: frozenset[str], prefix: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        _fail(
            f"{prefix}{unknown[0]}", f"unknown field; expected one of {', '.join(sorted(allowed))}"
        )


def _string(
    value: object, field: str, *, max_length: int, min_length: int = 1, strip_check: bool = True
) -> str:
    if not isinstance(value, str):
        _fail(field, f"expected a string, got {_describe(value)}")
    if len(value) < min_length:
        _fail(field, f"expected at least {min_length} character(s), got an empty string")
    if len(value) > max_length:
        _fail(field, f"expected at most {max_length} characters, got {len(value)}")
    if strip_check and min_length > 0 and not value.strip():
        _fail(field, "expected a non-blank string")
    if any(ch in value for ch in "\x00"):
        _fail(field, "expected no NUL characters")
    if not _encodable(value):
        _fail(field, "expected valid Unicode text, got a lone surrogate")
    return value


def _optional_string(value: object, field: str, *, max_length: int) -> str | None:
    if value is None:
        return None
    return _string(value, field, max_length=max_length, min_length=0, strip_check=False)


def _identifier(value: object, field: str) -> str:
    text = _string(value, field, max_length=MAX_ID_LENGTH)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        _fail(field, "expected no control characters")
    return text


def _request_id(value: object, field: str) -> str:
    if not isinstance(value, str):
        _fail(field, f"expected a string, got {_describe(value)}")
    if not REQUEST_ID_PATTERN.fullmatch(value):
        _fail(field, f"expected 1..128 characters of [A-Za-z0-9._:-], got {_describe(value)}")
    return value


def _integer(value: object, field: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(field, f"expected an integer, got {_describe(value)}")
    if value < minimum or value > maximum:
        _fail(field, f"expected an integer from {minimum} to {maximum}, got {value}")
    return value


def _boolean(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        _fail(field, f"expected true or false, got {_describe(value)}")
    return value


def _enum(enum_type: type[_T], value: object, field: str) -> _T:
    allowed = ", ".join(member.value for member in enum_type)
    if not isinstance(value, str):
        _fail(field, f"expected one of {allowed}, got {_describe(value)}")
    try:
        return enum_type(value)
    except ValueError:
        _fail(field, f"expected one of {allowed}, got {_describe(value)}")


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


def _optional_timestamp(value: object, field: str) -> datetime | None:
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


def _metadata(value: object, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    obj = _object(value, field)
    _check_json_value(obj, field)
    size = len(canonical_json(obj).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        _fail(field, f"expected at most {MAX_METADATA_BYTES} bytes serialized, got {size}")
    return dict(obj)


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
    spelled out with their defaults, an instant in another time zone) get the same digest.
    ``issued_at`` and ``auth`` are left out, as in :func:`payload_hash`; ``audience`` stays
    in, since a command meant for another deployment is another command. Every field of
    the parsed form is in the material with its default filled in (a requirement's
    ``approver_group`` and ``min_approvals`` too), so a default spelled out or left out
    gives the same digest.
    """
    material = _canonical(command)
    for name in _NOT_MEANING:
        del material[name]
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
    if isinstance(value, tuple | list):
        return [_canonical(item) for item in value]
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    return value


# --------------------------------------------------------------------------- sections

_TOP_LEVEL = frozenset(
    {
        "command_id",
        "type",
        "request_id",
        "expected_revision",
        "actor",
        "reason",
        "metadata",
        "args",
        "issued_at",
        "audience",
        "auth",
    }
)
_AUTH_FIELDS = frozenset({"key_id", "signature"})
_ACTOR_FIELDS = frozenset({"id", "name", "type"})
_INTENT_FIELDS = frozenset(
    {
        "operation_name",
        "category",
        "description",
        "risk_level",
        "is_reversible",
        "blast_radius",
        "tags",
        "metadata",
    }
)
_BLAST_FIELDS = frozenset({"scope", "estimated_affected_count", "description"})
_REQUIREMENT_FIELDS = frozenset(
    {
        "approval_id",
        "approver_id",
        "approver_group",
        "min_approvals",
        "approver_name",
        "description",
        "step_order",
    }
)
_ARGS_FIELDS: dict[CommandType, frozenset[str]] = {
    CommandType.SUBMIT: frozenset(
        {
            "state_id",
            "state_type",
            "mutation_type",
            "intent",
            "initial_status",
            "pending_reason",
            "approval_requirements",
            "expected_state_version",
            "expires_at",
            "metadata",
        }
    ),
    CommandType.MOVE_TO_PENDING: frozenset({"pending_reason", "expires_at"}),
    CommandType.SUPERSEDE: frozenset({"superseding_request_id"}),
    CommandType.APPROVE_REQUIREMENT: frozenset({"approval_id"}),
    CommandType.REJECT_REQUIREMENT: frozenset({"approval_id"}),
    CommandType.RESOLVE_VERSION: frozenset({"current_state_version", "strategy"}),
}


def parse_actor(value: object, field: str = "actor") -> Actor:
    """An actor object: ``{"id": ..., "name"?: ..., "type"?: user|service|...}``."""
    obj = _object(value, field)
    _no_unknown_keys(obj, _ACTOR_FIELDS, f"{field}.")
    if "id" not in obj:
        _fail(f"{field}.id", "required")
    return Actor(
        id=_identifier(obj["id"], f"{field}.id"),
        name=_optional_string(obj.get("name"), f"{field}.name", max_length=MAX_NAME_LENGTH),
        type=_enum(ActorType, obj.get("type", "user"), f"{field}.type"),
    )


def _parse_blast_radius(value: object, field: str) -> BlastRadius:
    if value is None:
        return BlastRadius()
    obj = _object(value, field)
    _no_unknown_keys(obj, _BLAST_FIELDS, f"{field}.")
    return BlastRadius(
        scope=_enum(BlastScope, obj.get("scope", "single"), f"{field}.scope"),
        estimated_affected_count=_integer(
            obj.get("estimated_affected_count", 1),
            f"{field}.estimated_affected_count",
            minimum=0,
            maximum=MAX_REVISION,
        ),
        description=_optional_string(
            obj.get("description"), f"{field}.description", max_length=MAX_TEXT_LENGTH
        )
        or "",
    )


def _parse_intent(value: object, field: str) -> Intent:
    obj = _object(value, field)
    _no_unknown_keys(obj, _INTENT_FIELDS, f"{field}.")
    if "operation_name" not in obj:
        _fail(f"{field}.operation_name", "required")
    tags_value = obj.get("tags", [])
    if not isinstance(tags_value, list):
        _fail(f"{field}.tags", f"expected a list of strings, got {_describe(tags_value)}")
    if len(tags_value) > MAX_TAGS:
        _fail(f"{field}.tags", f"expected at most {MAX_TAGS} tags, got {len(tags_value)}")
    tags = tuple(
        _string(tag, f"{field}.tags[{index}]", max_length=MAX_NAME_LENGTH)
        for index, tag in enumerate(tags_value)
    )
    return Intent(
        operation_name=_string(
            obj["operation_name"], f"{field}.operation_name", max_length=MAX_NAME_LENGTH
        ),
        category=_string(
            obj.get("category", "general"), f"{field}.category", max_length=MAX_NAME_LENGTH
        ),
        description=_optional_string(
            obj.get("description"), f"{field}.description", max_length=MAX_TEXT_LENGTH
        )
        or "",
        risk_level=_enum(RiskLevel, obj.get("risk_level", "low"), f"{field}.risk_level"),
        is_reversible=_boolean(obj.get("is_reversible", True), f"{field}.is_reversible"),
        blast_radius=_parse_blast_radius(obj.get("blast_radius"), f"{field}.blast_radius"),
        tags=tags,
        metadata=_metadata(obj.get("metadata"), f"{field}.metadata"),
    )


def _parse_requirement(value: object, field: str) -> RequirementSpec:
    obj = _object(value, field)
    _no_unknown_keys(obj, _REQUIREMENT_FIELDS, f"{field}.")
    # A null approver_group is as good as none, as for the other optional fields; a null
    # approver_id without a group stays the type error it always was.
    group_value = obj.get("approver_group")
    if group_value is None:
        if "approver_id" not in obj:
            _fail(f"{field}.approver_id", "required (or approver_group)")
        approver_id: str | None = _identifier(obj["approver_id"], f"{field}.approver_id")
        approver_group = None
    else:
        if obj.get("approver_id") is not None:
            _fail(
                f"{field}.approver_group",
                "expected either approver_id or approver_group, not both",
            )
        approver_id = None
        approver_group = _identifier(group_value, f"{field}.approver_group")
    min_approvals = _integer(
        obj.get("min_approvals", 1),
        f"{field}.min_approvals",
        minimum=1,
        maximum=MAX_MIN_APPROVALS,
    )
    if min_approvals > 1 and approver_group is None:
        _fail(
            f"{field}.min_approvals",
            f"expected 1 for a named approver, got {min_approvals}; more than one approval "
            "needs approver_group",
        )
    approval_id = obj.get("approval_id")
    return RequirementSpec(
        approver_id=approver_id,
        approver_group=approver_group,
        min_approvals=min_approvals,
        approval_id=None
        if approval_id is None
        else _identifier(approval_id, f"{field}.approval_id"),
        approver_name=_optional_string(
            obj.get("approver_name"), f"{field}.approver_name", max_length=MAX_NAME_LENGTH
        ),
        description=_optional_string(
            obj.get("description"), f"{field}.description", max_length=MAX_TEXT_LENGTH
        ),
        step_order=_integer(
            obj.get("step_order", 1), f"{field}.step_order", minimum=1, maximum=1_000
        ),
    )


def _parse_submit_args(args: Mapping[str, Any]) -> SubmitArgs:
    for name in ("state_id", "state_type", "mutation_type", "intent"):
        if name not in args:
            _fail(f"args.{name}", "required")
    raw_requirements = args.get("approval_requirements")
    if raw_requirements is None:
        raw_requirements = []
    if not isinstance(raw_requirements, list):
        _fail(
            "args.approval_requirements",
            f"expected a list of requirement objects, got {_describe(raw_requirements)}",
        )
    if len(raw_requirements) > MAX_REQUIREMENTS:
        _fail(
            "args.approval_requirements",
            f"expected at most {MAX_REQUIREMENTS} requirements, got {len(raw_requirements)}",
        )
    requirements = tuple(
        _parse_requirement(item, f"args.approval_requirements[{index}]")
        for index, item in enumerate(raw_requirements)
    )
    given_ids = [spec.approval_id for spec in requirements if spec.approval_id is not None]
    if len(given_ids) != len(set(given_ids)):
        _fail("args.approval_requirements", "expected unique approval_id values")

    pending_reason = (
        None
        if args.get("pending_reason") is None
        else _enum(PendingReason, args["pending_reason"], "args.pending_reason")
    )
    if args.get("initial_status") is None:
        initial_status = (
            Status.PENDING if requirements or pending_reason is not None else Status.CREATED
        )
    else:
        initial_status = _enum(Status, args["initial_status"], "args.initial_status")
        if initial_status not in (Status.CREATED, Status.PENDING, Status.APPROVED):
            _fail(
                "args.initial_status",
                "expected one of created, pending, approved, "
                f"got {_describe(initial_status.value)}",
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
        pending_reason = PendingReason.APPROVAL
    if initial_status is Status.PENDING and pending_reason is None:
        pending_reason = PendingReason.APPROVAL
    if initial_status is not Status.PENDING and pending_reason is not None:
        _fail(
            "args.pending_reason",
            f"only allowed when initial_status is pending, "
            f"got initial_status {initial_status.value}",
        )
    expires_at = _optional_timestamp(args.get("expires_at"), "args.expires_at")
    if expires_at is not None and initial_status is not Status.PENDING:
        _fail("args.expires_at", "only allowed when initial_status is pending")

    return SubmitArgs(
        state_id=_identifier(args["state_id"], "args.state_id"),
        state_type=_string(args["state_type"], "args.state_type", max_length=MAX_NAME_LENGTH),
        mutation_type=_string(
            args["mutation_type"], "args.mutation_type", max_length=MAX_NAME_LENGTH
        ),
        intent=_parse_intent(args["intent"], "args.intent"),
        initial_status=initial_status,
        pending_reason=pending_reason,
        approval_requirements=requirements,
        expected_state_version=_optional_string(
            args.get("expected_state_version"),
            "args.expected_state_version",
            max_length=MAX_ID_LENGTH,
        ),
        expires_at=expires_at,
        metadata=_metadata(args.get("metadata"), "args.metadata"),
    )


def _parse_args(command_type: CommandType, value: object) -> CommandArgs:
    args = _object({} if value is None else value, "args")
    allowed = _ARGS_FIELDS.get(command_type, frozenset())
    if not allowed and args:
        _fail(f"args.{sorted(args)[0]}", f"unknown field; {command_type.value} takes no args")
    _no_unknown_keys(args, allowed, "args.")
    match command_type:
        case CommandType.SUBMIT:
            return _parse_submit_args(args)
        case CommandType.MOVE_TO_PENDING:
            if "pending_reason" not in args:
                _fail("args.pending_reason", "required")
            return MoveToPendingArgs(
                pending_reason=_enum(PendingReason, args["pending_reason"], "args.pending_reason"),
                expires_at=_optional_timestamp(args.get("expires_at"), "args.expires_at"),
            )
        case CommandType.SUPERSEDE:
            if "superseding_request_id" not in args:
                _fail("args.superseding_request_id", "required")
            return SupersedeArgs(
                _request_id(args["superseding_request_id"], "args.superseding_request_id")
            )
        case CommandType.APPROVE_REQUIREMENT | CommandType.REJECT_REQUIREMENT:
            if "approval_id" not in args:
                _fail("args.approval_id", "required")
            return RequirementArgs(_identifier(args["approval_id"], "args.approval_id"))
        case CommandType.RESOLVE_VERSION:
            for name in ("current_state_version", "strategy"):
                if name not in args:
                    _fail(f"args.{name}", "required")
            return ResolveVersionArgs(
                current_state_version=_string(
                    args["current_state_version"],
                    "args.current_state_version",
                    max_length=MAX_ID_LENGTH,
                ),
                strategy=_enum(ResolutionStrategy, args["strategy"], "args.strategy"),
            )
        case _:
            return NoArgs()


def _parse_auth(value: object) -> CommandAuth:
    obj = _object(value, "auth")
    _no_unknown_keys(obj, _AUTH_FIELDS, "auth.")
    # A member left out is not malformed: authentication refuses it as unauthenticated,
    # saying which one is missing. Empty stands for missing.
    return CommandAuth(
        key_id=_identifier(obj["key_id"], "auth.key_id") if "key_id" in obj else "",
        signature=(
            _string(obj["signature"], "auth.signature", max_length=MAX_SIGNATURE_LENGTH)
            if "signature" in obj
            else ""
        ),
    )


def command_id_of(payload: object) -> str | None:
    """The command's usable ``command_id``, or None when the message cannot be answered."""
    if not isinstance(payload, dict):
        return None
    value = payload.get("command_id")
    try:
        return _identifier(value, "command_id")
    except InvalidCommand:
        return None


def parse_command(payload: object) -> Command:
    """Validate a decoded command message; raise :class:`InvalidCommand` naming the field."""
    obj = _object(payload, "command")
    for name in ("command_id", "type", "request_id"):
        if name not in obj:
            _fail(name, "required")
    command_id = _identifier(obj["command_id"], "command_id")
    command_type = _enum(CommandType, obj["type"], "type")
    _no_unknown_keys(obj, _TOP_LEVEL, "")
    request_id = _request_id(obj["request_id"], "request_id")

    raw_revision = obj.get("expected_revision")
    if command_type is CommandType.SUBMIT:
        if raw_revision is not None:
            _integer(raw_revision, "expected_revision", minimum=0, maximum=0)
        expected_revision = None
    else:
        if raw_revision is None:
            _fail("expected_revision", f"required for {command_type.value}")
        expected_revision = _integer(
            raw_revision, "expected_revision", minimum=0, maximum=MAX_REVISION
        )

    if "actor" not in obj:
        _fail("actor", "required")
    return Command(
        command_id=command_id,
        type=command_type,
        request_id=request_id,
        expected_revision=expected_revision,
        actor=parse_actor(obj["actor"]),
        args=_parse_args(command_type, obj.get("args")),
        reason=_optional_string(obj.get("reason"), "reason", max_length=MAX_REASON_LENGTH),
        metadata=_metadata(obj.get("metadata"), "metadata"),
        issued_at=_optional_timestamp(obj.get("issued_at"), "issued_at"),
        audience=None if obj.get("audience") is None else _identifier(obj["audience"], "audience"),
        auth=None if obj.get("auth") is None else _parse_auth(obj["auth"]),
    )
