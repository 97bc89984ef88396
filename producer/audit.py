"""Verifying a request's history: the hash chain over its decisions and the signed command
kept for every revision, re-checked against the registered keys (revoked ones too).

The checks run over plain data (rows as dictionaries), so the very same code judges the
database (:func:`read_request_history`) and an exported document (:func:`export_request`,
:func:`verify_export`) on a machine with no database at all.

Against someone who holds the database itself, a chain proves nothing on its own: whoever
can rewrite a decision can recompute every hash after it. An *anchor*
(:func:`write_anchor`) records each request's chain head and decision count, signed with an
operator's key, in a file kept off the database host; :func:`check_anchor` later proves that
no decision up to it was rewritten, given the operator keys it trusts from outside the
database (pinned).

Everything here only reads the database: transactions are read-only and short.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, Final, TypeGuard

import psycopg
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row, tuple_row

from governance.authentication import KeyRecord, passkey_proof_problem
from governance.codec import timestamp_to_wire
from governance.passkeys import DEFAULT_ORIGINS, SCHEME_ED25519, SCHEME_WEBAUTHN
from governance.proof import AUTH_MEMBER, b64url_decode, b64url_encode, chain_hash, signed_bytes
from governance.proof import chained_decision as _chained_decision
from governance.replay import Deployment, KeptCommand, PolicyHistory, RegistryHistory
from producer.keys import SigningKey
from producer.reexecution import (
    HistorySource,
    Reexecution,
    kept_commands,
    policy_versions,
    registry_changes,
    stored_by_revision,
)

#: A history as re-execution takes it: kept commands, and stored decisions by revision.
_Sources = tuple[list[KeptCommand], dict[int, list[Mapping[str, Any]]]]

EXPORT_FORMAT = "governance-export/2"
#: Formats ``verify --file`` reads: the first carries no registry nor policies, so it is
#: checked for form only.
EXPORT_FORMATS = frozenset({"governance-export/1", EXPORT_FORMAT})
ANCHOR_FORMAT = "governance-anchor/1"
SIGNATURE_LENGTH = 64
PUBLIC_KEY_LENGTH = 32
#: The roles whose keys may sign an anchor.
ANCHOR_ROLES = frozenset({"operator", "administrator"})
#: The actor and command-id prefix of the worker's own expiry, which is never signed.
SYSTEM_ACTOR = "system"
EXPIRY_PREFIX = "expire-"
#: Requests read per page by :func:`read_all_request_ids` (each page its own transaction).
PAGE_SIZE = 500


class Kind(StrEnum):
    """What a finding is about."""

    CHAIN = "chain"  # a decision's stored chain hash is not the one its content gives
    HEAD = "head"  # the request's chain head is not its last decision's chain hash
    ORDER = "order"  # a decision is missing, duplicated or out of place
    PROOF = "proof"  # the kept command is missing or does not match its decisions
    SIGNATURE = "signature"  # the kept command's signature does not verify
    KEY = "key"  # the signing key is unknown or belongs to another actor
    MALFORMED = "malformed"  # a row or document that is not what it must be
    REWRITTEN = "rewritten"  # the chain no longer ends in the anchored head
    ANCHOR = "anchor"  # the anchor file itself does not hold
    SUBSTANCE = "substance"  # re-executing the kept commands does not give what is stored
    UNSIGNED = "unsigned"  # a decision applied without a signature (note)
    UNCHAINED = "unchained"  # a decision written before the chain existed (note)


#: Kinds that are notes rather than proof of an alteration (failures only when signatures
#: are required).
NOTE_KINDS: Final = frozenset({Kind.UNSIGNED, Kind.UNCHAINED})


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing verification found: where (request, revision, position, command) and what.

    ``failure`` says whether it proves the history was altered (or, with signatures
    required, that a decision is not signed); a note (an unsigned decision) is not one.
    """

    request_id: str | None
    revision: int | None
    position: int | None
    command_id: str | None
    kind: Kind
    message: str
    failure: bool = True

    @property
    def label(self) -> str:
        """``unsigned``/``unchained`` for those notes (failing or not), else ``altered``."""
        return self.kind.value if self.kind in NOTE_KINDS else "altered"

    @property
    def where(self) -> str:
        """The request and decision named, e.g. ``request R, decision 3/1 (command C)``."""
        parts = []
        if self.request_id is not None:
            parts.append(f"request {self.request_id}")
        if self.revision is not None:
            if self.position is not None:
                parts.append(f"decision {self.revision}/{self.position}")
            else:
                parts.append(f"revision {self.revision}")
        text = ", ".join(parts) or "anchor"
        if self.command_id is not None:
            text += f" (command {self.command_id})"
        return text

    def __str__(self) -> str:
        return f"{self.label}: {self.where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "kind": self.kind.value,
            "failure": self.failure,
            "request_id": self.request_id,
            "revision": self.revision,
            "position": self.position,
            "command_id": self.command_id,
            "message": self.message,
        }


@dataclass
class Findings:
    """What a verification found over ``requests`` requests and ``decisions`` decisions;
    it holds when no finding is a failure."""

    items: list[Finding] = field(default_factory=list)
    requests: int = 0
    decisions: int = 0

    @property
    def failures(self) -> list[Finding]:
        return [item for item in self.items if item.failure]

    @property
    def unsigned(self) -> list[Finding]:
        return [item for item in self.items if item.kind is Kind.UNSIGNED]

    @property
    def ok(self) -> bool:
        """True when nothing was altered (notes such as unsigned decisions aside)."""
        return not self.failures

    def merge(self, other: Findings) -> None:
        """Add ``other``'s findings and counts to these."""
        self.items.extend(other.items)
        self.requests += other.requests
        self.decisions += other.decisions

    def lines(self) -> list[str]:
        """One line per finding."""
        return [str(item) for item in self.items]

    def summary(self) -> str:
        return (
            f"verified {self.requests} request(s), {self.decisions} decision(s): "
            f"{len(self.failures)} failure(s), {len(self.unsigned)} unsigned"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "requests": self.requests,
            "decisions": self.decisions,
            "failures": len(self.failures),
            "unsigned": len(self.unsigned),
            "findings": [item.to_dict() for item in self.items],
        }


class _Unchecked(Enum):
    UNCHECKED = "unchecked"


#: The default of ``chain_head``: no head to compare (None is a head, the missing one).
UNCHECKED: Final = _Unchecked.UNCHECKED


# --------------------------------------------------------------------------- helpers


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _actor_id(value: object) -> Any:
    return value.get("id") if isinstance(value, Mapping) else None


@dataclass(frozen=True, slots=True)
class _Row:
    """A decision row that has the shape the chain needs."""

    revision: int
    position: int
    command_id: str
    chain_hash: str | None
    data: Mapping[str, Any]

    @property
    def actor_id(self) -> Any:
        return _actor_id(self.data.get("actor"))


def _decision_shape_problem(row: object, request_id: str) -> str | None:
    """Why ``row`` is not a decision row one can chain, or None."""
    if not isinstance(row, Mapping):
        return f"not an object but {type(row).__name__}"
    for name in ("revision", "position"):
        if not _is_int(row.get(name)) or row[name] < 1:
            return f"{name} must be a positive integer, not {row.get(name)!r}"
    for name in ("command_id", "category", "type"):
        if not isinstance(row.get(name), str):
            return f"{name} must be a string, not {row.get(name)!r}"
    if not isinstance(row.get("actor"), Mapping) or not isinstance(row["actor"].get("id"), str):
        return "actor must be an object with an id"
    if row.get("chain_hash") is not None and not isinstance(row.get("chain_hash"), str):
        return "chain_hash must be a string or null"
    if not isinstance(row.get("occurred_at"), str | datetime):
        return "occurred_at must be a timestamp"
    if row.get("request_id", request_id) != request_id:
        return f"it belongs to request {row.get('request_id')!r}"
    return None


def _chained(request_id: str, row: _Row) -> dict[str, Any]:
    return _chained_decision(request_id, row.revision, row.position, row.command_id, row.data)


def _link(request_id: str, previous: str | None, row: _Row) -> str:
    """The chain hash ``row`` must have after ``previous``; ValueError when it has none."""
    try:
        return chain_hash(previous, _chained(request_id, row))
    except (TypeError, AttributeError, UnicodeEncodeError) as exc:
        raise ValueError(f"cannot be hashed: {exc}") from exc


def _parse_command(text: object) -> Mapping[str, Any] | str:
    """The kept command as an object, or why it is not one."""
    if not isinstance(text, str):
        return f"signed_command must be JSON text, not {type(text).__name__}"
    try:
        command = json.loads(text)
    except ValueError as exc:
        return f"signed_command is not JSON ({exc})"
    if not isinstance(command, dict):
        return "signed_command is not a JSON object"
    return command


def _signature_problem(command: Mapping[str, Any], public_key: object) -> str | None:
    """Why ``command``'s ``auth.signature`` does not verify with ``public_key`` (base64url),
    or None when it does."""
    signature = command[AUTH_MEMBER].get("signature")
    if not isinstance(signature, str):
        return "auth.signature is missing"
    try:
        raw_signature = b64url_decode(signature)
    except ValueError:
        return "auth.signature is not base64url"
    if len(raw_signature) != SIGNATURE_LENGTH:
        return f"auth.signature is {len(raw_signature)} bytes, not {SIGNATURE_LENGTH}"
    try:
        raw_key = b64url_decode(public_key) if isinstance(public_key, str) else b""
        if len(raw_key) != PUBLIC_KEY_LENGTH:
            return "the registered public key is not a 32-byte Ed25519 key"
        verifier = Ed25519PublicKey.from_public_bytes(raw_key)
    except ValueError:
        return "the registered public key is not a usable Ed25519 key"
    try:
        message = signed_bytes(command)
    except ValueError as exc:
        return str(exc)
    try:
        verifier.verify(raw_signature, message)
    except InvalidSignature:
        return "the signature does not verify"
    return None


def _passkey_problem(
    command: Mapping[str, Any], key: Mapping[str, Any], origins: frozenset[str]
) -> str | None:
    """Why ``command``'s passkey proof does not verify with the registered ``key`` (a key
    row: ``key_id``, ``actor_id``, ``public_key``, ``scheme``, ``algorithm``), or None: the
    worker's own check (:func:`governance.authentication.passkey_proof_problem`)."""
    algorithm = key.get("algorithm")
    record = KeyRecord(
        str(key.get("key_id")),
        str(key.get("actor_id")),
        str(key.get("public_key")),
        None,
        str(key.get("scheme") or SCHEME_ED25519),
        algorithm if isinstance(algorithm, int) and not isinstance(algorithm, bool) else None,
    )
    return passkey_proof_problem(command, record, origins)


class _Report:
    """Findings of one request, each naming it."""

    def __init__(self, request_id: str, findings: Findings) -> None:
        self.request_id = request_id
        self.findings = findings

    def add(
        self,
        kind: Kind,
        message: str,
        revision: int | None = None,
        position: int | None = None,
        command_id: str | None = None,
        *,
        failure: bool = True,
    ) -> None:
        self.findings.items.append(
            Finding(self.request_id, revision, position, command_id, kind, message, failure)
        )


# --------------------------------------------------------------------------- verification


def verify_history(
    request_id: str,
    decisions: Sequence[Mapping[str, Any]],
    proofs: Mapping[int, Mapping[str, Any]] | Iterable[Mapping[str, Any]],
    keys: Mapping[str, Mapping[str, Any]],
    *,
    chain_head: str | _Unchecked | None = UNCHECKED,
    require_signed: bool = False,
    revision: int | None = None,
    signatures: bool = True,
    origins: frozenset[str] = DEFAULT_ORIGINS,
) -> Findings:
    """Everything wrong with one request's history, over plain data.

    ``decisions`` are its decision rows in revision/position order (the chained fields,
    ``chain_hash``, optionally ``request_id``); ``proofs`` its kept commands
    (``revision``, ``command_id``, ``key_id`` or None, ``signed_command`` as JSON text), by
    revision or as a list; ``keys`` the public keys by key_id (``actor_id``,
    ``public_key``; a revoked key verifies all the same: what it signed before its
    revocation stays proved). ``chain_head`` is the request's stored head (None when it has
    none; left out, it is not compared) and ``revision`` its current revision (left out,
    missing trailing revisions are only found by the head).

    Checks: the chain recomputed from the first decision gives every stored chain hash and
    the head; decisions run 1.. in revision and position without gaps; every revision has
    exactly one kept command, naming this request, the revision before (none for submit),
    the decisions' command and actor; a signed command's signature verifies with its key,
    which belongs to that actor. Unsigned decisions are notes, failures only with
    ``require_signed``.
    """
    findings = Findings(requests=1, decisions=len(decisions))
    report = _Report(request_id, findings)
    rows = _well_formed_rows(report, decisions)
    _check_order(report, rows, revision)
    by_revision: dict[int, list[_Row]] = {}
    for row in rows:
        by_revision.setdefault(row.revision, []).append(row)
    kept = _proofs_by_revision(report, proofs)
    legacy = _legacy_revisions(by_revision, kept)
    for number in sorted(set(by_revision) | set(kept)):
        if number in legacy:
            for row in by_revision[number]:
                report.add(
                    Kind.UNCHAINED,
                    "written before the chain existed: no chain hash and no kept command",
                    row.revision,
                    row.position,
                    row.command_id,
                    failure=require_signed,
                )
            continue
        _check_revision(
            report,
            number,
            by_revision.get(number, []),
            kept.get(number, []),
            keys,
            require_signed=require_signed,
            signatures=signatures,
            origins=origins,
        )
    chained = [row for row in rows if row.revision not in legacy]
    _check_chain(report, chained)
    if chain_head is not UNCHECKED:
        _check_head(report, chained, chain_head)
    return findings


def _legacy_revisions(
    by_revision: Mapping[int, list[_Row]], kept: Mapping[int, list[Mapping[str, Any]]]
) -> frozenset[int]:
    """The leading revisions written before the chain and the kept commands existed: no
    decision of theirs has a chain hash and no command is kept for them. Only leading ones:
    a revision stripped of its hashes and command after chained ones is an alteration."""
    legacy = set()
    for number in sorted(set(by_revision) | set(kept)):
        if number in kept or any(row.chain_hash is not None for row in by_revision[number]):
            break
        legacy.add(number)
    return frozenset(legacy)


def _well_formed_rows(report: _Report, decisions: Sequence[Mapping[str, Any]]) -> list[_Row]:
    rows = []
    for index, raw in enumerate(decisions, start=1):
        problem = _decision_shape_problem(raw, report.request_id)
        if problem is not None:
            revision = raw.get("revision") if isinstance(raw, Mapping) else None
            position = raw.get("position") if isinstance(raw, Mapping) else None
            report.add(
                Kind.MALFORMED,
                f"decision #{index} is malformed: {problem}",
                revision if _is_int(revision) else None,
                position if _is_int(position) else None,
            )
            continue
        rows.append(
            _Row(raw["revision"], raw["position"], raw["command_id"], raw.get("chain_hash"), raw)
        )
    return rows


def _span(what: str, revision: int | None, first: int, last: int) -> str:
    """``decision 2/1 is`` or ``decisions 2/1..2/3 are`` (``revision``s without one)."""
    prefix = "" if revision is None else f"{revision}/"
    if first == last:
        return f"{what} {prefix}{first} is"
    return f"{what}s {prefix}{first}..{prefix}{last} are"


def _check_order(report: _Report, rows: list[_Row], revision: int | None) -> None:
    """Decisions run 1/1, 1/2, …, 2/1, … with no gap: a gap is a removed decision."""

    def missing(what: str, row: _Row) -> None:
        report.add(
            Kind.ORDER, f"{what} missing (removed?)", row.revision, row.position, row.command_id
        )

    previous: tuple[int, int] = (0, 0)
    for row in rows:
        if (row.revision, row.position) <= previous:
            report.add(
                Kind.ORDER,
                "out of order or duplicated (decisions run in revision and position order)",
                row.revision,
                row.position,
                row.command_id,
            )
            continue
        last_revision, last_position = previous
        if row.revision == last_revision:
            if row.position != last_position + 1:
                missing(_span("decision", row.revision, last_position + 1, row.position - 1), row)
        else:
            if row.revision > last_revision + 1:
                missing(_span("revision", None, last_revision + 1, row.revision - 1), row)
            if row.position != 1:
                missing(_span("decision", row.revision, 1, row.position - 1), row)
        previous = (row.revision, row.position)
    last = previous[0]
    if revision is not None and last < revision:
        gone = (
            f"revision {revision} has"
            if last + 1 == revision
            else f"revisions {last + 1}..{revision} have"
        )
        report.add(
            Kind.ORDER,
            f"the request is at revision {revision}, but {gone} no decisions (removed?)",
            revision,
        )
    elif revision is not None and last > revision:
        report.add(
            Kind.ORDER,
            f"decisions go up to revision {last}, beyond the request's revision {revision}",
            last,
        )


def _proofs_by_revision(
    report: _Report, proofs: Mapping[int, Mapping[str, Any]] | Iterable[Mapping[str, Any]]
) -> dict[int, list[Mapping[str, Any]]]:
    rows: Iterable[Any] = proofs.values() if isinstance(proofs, Mapping) else proofs
    kept: dict[int, list[Mapping[str, Any]]] = {}
    for index, proof in enumerate(rows, start=1):
        revision = proof.get("revision") if isinstance(proof, Mapping) else None
        if not _is_int(revision):
            report.add(Kind.MALFORMED, f"kept command #{index} has no usable revision")
            continue
        kept.setdefault(revision, []).append(proof)
    return kept


def _check_revision(
    report: _Report,
    revision: int,
    rows: list[_Row],
    proofs: list[Mapping[str, Any]],
    keys: Mapping[str, Mapping[str, Any]],
    *,
    require_signed: bool,
    signatures: bool = True,
    origins: frozenset[str] = DEFAULT_ORIGINS,
) -> None:
    """The kept command of ``revision`` against its decisions and its key (its signature
    too, unless ``signatures`` is False: re-execution checks it)."""
    command_ids = sorted({row.command_id for row in rows})
    command_id = command_ids[0] if len(command_ids) == 1 else None
    if len(command_ids) > 1:
        report.add(
            Kind.PROOF,
            f"its decisions name different commands: {', '.join(command_ids)}",
            revision,
        )
    if not proofs:
        report.add(Kind.PROOF, "no kept command for this revision", revision, None, command_id)
        return
    if len(proofs) > 1:
        report.add(
            Kind.PROOF,
            f"{len(proofs)} kept commands for this revision (exactly one expected)",
            revision,
            None,
            command_id,
        )
        return
    proof = proofs[0]
    kept_id = proof.get("command_id")
    if not rows:
        report.add(
            Kind.ORDER,
            "a command is kept for this revision but it has no decisions (removed?)",
            revision,
            None,
            kept_id if isinstance(kept_id, str) else None,
        )
    if command_id is not None and kept_id != command_id:
        report.add(
            Kind.PROOF,
            f"the kept command is {kept_id!r}, not the decisions' command",
            revision,
            None,
            command_id,
        )
    named = command_id or (kept_id if isinstance(kept_id, str) else None)
    command = _parse_command(proof.get("signed_command"))
    if isinstance(command, str):
        report.add(Kind.MALFORMED, command, revision, None, named)
        return
    for problem in _command_problems(report.request_id, revision, rows, command, kept_id):
        report.add(Kind.PROOF, problem, revision, None, named)
    for row in rows:
        # A decision's reason is its command's: a reason changed in the database shows here
        # even when the chain was recomputed after it, since nobody can re-sign the command.
        if row.data.get("reason") != command.get("reason"):
            report.add(
                Kind.PROOF,
                f"its reason {row.data.get('reason')!r} is not the signed command's "
                f"{command.get('reason')!r}",
                row.revision,
                row.position,
                row.command_id,
            )
    key_id = proof.get("key_id")
    if key_id is None:
        actor = _actor_id(command.get("actor"))
        expiry = actor == SYSTEM_ACTOR and str(kept_id).startswith(EXPIRY_PREFIX)
        why = "the system actor's expiry" if expiry else "applied in development mode"
        positions: list[int | None] = [row.position for row in rows] or [None]
        for position in positions:
            report.add(
                Kind.UNSIGNED,
                f"no signature ({why})",
                revision,
                position,
                named,
                # The worker's own expiry is never signed; whether it was due is proved by
                # re-execution, so it fails only there, when it was not.
                failure=require_signed and not expiry,
            )
        return
    if signatures:
        _check_signature(report, revision, named, command, key_id, keys, origins)


def _command_problems(
    request_id: str,
    revision: int,
    rows: list[_Row],
    command: Mapping[str, Any],
    kept_id: object,
) -> Iterator[str]:
    """How the kept command disagrees with where its decisions stand."""
    if command.get("command_id") != kept_id:
        yield f"the kept command's command_id is {command.get('command_id')!r}, not {kept_id!r}"
    if command.get("request_id") != request_id:
        yield f"the kept command is for request {command.get('request_id')!r}"
    expected = command.get("expected_revision")
    if revision == 1:
        if command.get("type") != "submit":
            yield f"revision 1 must be a submit, the kept command is {command.get('type')!r}"
        if expected not in (None, 0) or isinstance(expected, bool):
            yield f"a submit has no expected_revision, the kept command says {expected!r}"
    else:
        if command.get("type") == "submit":
            yield f"revision {revision} cannot be a submit"
        if not _is_int(expected) or expected != revision - 1:
            yield f"expected_revision is {expected!r}, not {revision - 1}"
    actor = _actor_id(command.get("actor"))
    others = sorted({str(row.actor_id) for row in rows if row.actor_id != actor})
    if others:
        yield f"the kept command is by {actor!r}, its decisions by {', '.join(others)}"


def _check_signature(
    report: _Report,
    revision: int,
    command_id: str | None,
    command: Mapping[str, Any],
    key_id: object,
    keys: Mapping[str, Mapping[str, Any]],
    origins: frozenset[str] = DEFAULT_ORIGINS,
) -> None:
    auth = command.get(AUTH_MEMBER)
    if not isinstance(auth, Mapping):
        report.add(
            Kind.SIGNATURE,
            f"kept as signed with key {key_id}, but the command has no auth",
            revision,
            None,
            command_id,
        )
        return
    if auth.get("key_id") != key_id:
        report.add(
            Kind.SIGNATURE,
            f"kept as signed with key {key_id}, the command names key {auth.get('key_id')!r}",
            revision,
            None,
            command_id,
        )
        return
    key = keys.get(key_id) if isinstance(key_id, str) else None
    if key is None:
        report.add(Kind.KEY, f"key {key_id} is not registered", revision, None, command_id)
        return
    actor = _actor_id(command.get("actor"))
    if key.get("actor_id") != actor:
        report.add(
            Kind.KEY,
            f"key {key_id} belongs to {key.get('actor_id')!r}, not to the command's actor "
            f"{actor!r}",
            revision,
            None,
            command_id,
        )
    if auth.get("scheme") == SCHEME_WEBAUTHN or key.get("scheme") == SCHEME_WEBAUTHN:
        problem = _passkey_problem(command, key, origins)
    else:
        problem = _signature_problem(command, key.get("public_key"))
    if problem is not None:
        report.add(Kind.SIGNATURE, f"{problem} (key {key_id})", revision, None, command_id)


def _check_chain(report: _Report, rows: list[_Row]) -> None:
    """Every stored chain hash must be the one its decision's content gives after the stored
    hash before it. When all of them are, the chain recomputed from the first decision is
    the stored one, link by link; comparing link by link names the decision that changed
    rather than every decision after it."""
    previous: str | None = None
    for row in rows:
        try:
            expected = _link(report.request_id, previous, row)
        except ValueError as exc:
            report.add(Kind.MALFORMED, str(exc), row.revision, row.position, row.command_id)
        else:
            if row.chain_hash is None:
                report.add(
                    Kind.CHAIN,
                    "its chain_hash is missing (removed?)",
                    row.revision,
                    row.position,
                    row.command_id,
                )
            elif row.chain_hash != expected:
                report.add(
                    Kind.CHAIN,
                    "its stored chain_hash is not the hash of its content after the decision "
                    "before it: it (or the one before it) was changed or removed after it was "
                    "written",
                    row.revision,
                    row.position,
                    row.command_id,
                )
        previous = row.chain_hash


def _check_head(report: _Report, rows: list[_Row], chain_head: str | None) -> None:
    """The head must be the last decision's chain hash (which the links above tie to the
    chain recomputed from the first decision)."""
    if not rows:
        if chain_head is not None:
            report.add(Kind.HEAD, "the request has a chain head but no chained decisions")
        return
    last = rows[-1]
    if chain_head is None:
        report.add(
            Kind.HEAD,
            "the request has no chain head",
            last.revision,
            last.position,
            last.command_id,
        )
    elif chain_head != last.chain_hash:
        report.add(
            Kind.HEAD,
            "the request's chain head is not its last decision's chain hash (decisions "
            "removed or the head rewritten)",
            last.revision,
            last.position,
            last.command_id,
        )


# --------------------------------------------------------------------------- the database


@contextlib.contextmanager
def _snapshot(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """One short read-only transaction, unless the caller's own transaction is open (then
    its snapshot is used as it is)."""
    if conn.info.transaction_status is not TransactionStatus.IDLE:
        yield
        return
    with conn.transaction():
        # Repeatable read: the request row, its decisions and its proofs from one snapshot
        # (they commit together, so any snapshot sees them agree).
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def _tuples(
    conn: psycopg.Connection[Any], query: str, params: Sequence[Any] | Mapping[str, Any]
) -> list[tuple[Any, ...]]:
    """Rows as tuples, whatever row factory the caller's connection has."""
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchall()


def _wire(value: Any) -> Any:
    """A database value as JSON can hold it (instants in the wire form)."""
    if isinstance(value, datetime):
        return timestamp_to_wire(value)
    return value


def _wire_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _wire(value) for name, value in row.items()}


#: The integers RFC 8785 can represent (IEEE doubles without loss).
_SAFE_INTEGER = 2**53 - 1


def _from_jsonb(value: Any) -> Any:
    """A jsonb value as the writer hashed it.

    jsonb keeps numbers as decimals, so a float the writer held that is integral and large
    (``1e20``) reads back as an integer, which RFC 8785 refuses: the writer can never have
    hashed such an integer, so it was that float.
    """
    if isinstance(value, dict):
        return {key: _from_jsonb(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_from_jsonb(item) for item in value]
    if _is_int(value) and abs(value) > _SAFE_INTEGER:
        # The float whose shortest spelling jsonb kept (json writes floats that way); beyond
        # any float, the integer stays, and its hash cannot match.
        with contextlib.suppress(OverflowError):
            return float(value)
    return value


def _decision_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A decision row read from the database, as it was chained."""
    decision = _wire_row(row)
    for name in ("actor", "metadata"):
        decision[name] = _from_jsonb(decision.get(name))
    return decision


_DECISIONS = (
    "SELECT request_id, revision, position, command_id, category, type, actor, reason,"
    " metadata, occurred_at, chain_hash FROM request_decisions WHERE request_id = %s"
    " ORDER BY revision, position"
)
_PROOFS = (
    "SELECT revision, command_id, key_id, signed_command FROM command_proofs"
    " WHERE request_id = %s ORDER BY revision"
)
_KEYS = (
    "SELECT key_id, actor_id, public_key, created_at, revoked_at, scheme, algorithm"
    " FROM actor_keys"
    " WHERE key_id = ANY(%s) ORDER BY key_id"
)


def _key_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A key row in wire spelling; its scheme and algorithm named for passkeys only (a key
    with neither is an Ed25519 key, as every key of an earlier export)."""
    key = _wire_row(row)
    if key.get("scheme") == SCHEME_ED25519:
        key.pop("scheme", None)
        key.pop("algorithm", None)
    return key


@dataclass(frozen=True)
class RequestHistory:
    """A request's row, its decisions (with their chain hashes), its kept commands and the
    public keys they name, read from one snapshot; instants in the wire form."""

    request_id: str
    request: dict[str, Any]
    decisions: list[dict[str, Any]]
    proofs: list[dict[str, Any]]
    keys: dict[str, dict[str, Any]]

    def verify(
        self, *, require_signed: bool = False, reexecution: Reexecution | None = None
    ) -> Findings:
        """:func:`verify_history` of this history, with the row's head and revision; then,
        given ``reexecution``, the history derived again from its kept commands and
        compared with the stored decisions and the row (:func:`substance_findings`)."""
        revision = self.request.get("revision")
        sources = self.sources() if reexecution is not None else None
        reexecuted = sources is not None and _from_the_start(sources[0])
        findings = verify_history(
            self.request_id,
            self.decisions,
            self.proofs,
            self.keys,
            chain_head=self.request.get("chain_head"),
            require_signed=require_signed,
            revision=revision if _is_int(revision) else None,
            # Re-execution authenticates every kept command again, with the key as it was
            # registered at the decision: checking each signature here too would double the
            # cost of the dearest step for nothing.
            signatures=not reexecuted,
            origins=(
                reexecution.deployment.commands.webauthn_origins
                if reexecution is not None
                else DEFAULT_ORIGINS
            ),
        )
        if reexecution is not None:
            findings.items.extend(substance_findings(self, reexecution))
        return findings

    def sources(self) -> _Sources | None:
        """The kept commands and the stored decisions by revision, as re-execution takes
        them; None when a kept command is unreadable (the form checks say so)."""
        kept = kept_commands(self.proofs)
        return None if kept is None else (kept, stored_by_revision(self.decisions))


def substance_findings(history: RequestHistory, reexecution: Reexecution) -> list[Finding]:
    """Where ``history`` re-executed parts from what is stored, as failures naming the
    revision and what differs. A history written wholly before commands were kept (before
    the chain existed) is not re-executed: there is no command to start from. One whose
    first revisions have no kept command but later ones do cannot be re-executed either, and
    proves nothing of substance: in a signed deployment that is a failure (whoever holds the
    worker's role could otherwise write a request whose revision 1 has neither a chain hash
    nor a command, and approve it with an unsigned "expiry" nobody can re-execute)."""
    sources = history.sources()
    if sources is None:
        return []
    kept, stored = sources
    if not kept:
        return []
    first = min(kept, key=lambda k: k.revision)
    if first.revision != 1:
        if not reexecution.deployment.signed:
            return []
        before = (
            "revision 1 has" if first.revision == 2 else f"revisions 1..{first.revision - 1} have"
        )
        return [
            Finding(
                history.request_id,
                first.revision,
                None,
                first.command_id,
                Kind.SUBSTANCE,
                f"{before} no kept command, so the request "
                "cannot be derived from its submit: unsigned decisions a signed deployment "
                "cannot have written, nothing after them is proved",
            )
        ]
    return [
        Finding(history.request_id, revision, None, command_id, Kind.SUBSTANCE, message)
        for revision, message, command_id in reexecution.differences(
            history.request_id, kept, stored, history.request
        )
    ]


def _from_the_start(kept: Sequence[KeptCommand]) -> bool:
    """Whether commands are kept from the submit on (a history older than the chain starts
    with revisions that have none: there is no command to re-execute it from)."""
    return bool(kept) and min(k.revision for k in kept) == 1


def history_source(conn: psycopg.Connection[Any]) -> HistorySource:
    """Reads another request's history for re-execution (a supersede's successor)."""

    def read(request_id: str) -> _Sources | None:
        history = read_request_history(conn, request_id)
        return None if history is None else history.sources()

    return read


def reexecution_from_database(
    conn: psycopg.Connection[Any], deployment: Deployment | None = None
) -> Reexecution:
    """Re-execution with the registry's and the policies' histories as ``conn`` reads them."""
    with _snapshot(conn):
        return Reexecution.from_database(conn, deployment or Deployment(), history_source(conn))


def _key_ids(proofs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every key a kept command names: its row's, and its auth member's should they differ."""
    found = set()
    for proof in proofs:
        if isinstance(proof.get("key_id"), str):
            found.add(proof["key_id"])
        command = _parse_command(proof.get("signed_command"))
        if not isinstance(command, str) and isinstance(command.get(AUTH_MEMBER), Mapping):
            auth_key = command[AUTH_MEMBER].get("key_id")
            if isinstance(auth_key, str):
                found.add(auth_key)
    return sorted(found)


def read_request_history(conn: psycopg.Connection[Any], request_id: str) -> RequestHistory | None:
    """``request_id``'s history as the database holds it, or None when there is no such
    request."""
    with _snapshot(conn), conn.cursor(row_factory=dict_row) as cur:
        request = cur.execute(
            "SELECT * FROM mutation_requests WHERE request_id = %s", (request_id,)
        ).fetchone()
        if request is None:
            return None
        decisions = [_decision_row(row) for row in cur.execute(_DECISIONS, (request_id,))]
        proofs = [dict(row) for row in cur.execute(_PROOFS, (request_id,))]
        keys = {row["key_id"]: _key_row(row) for row in cur.execute(_KEYS, (_key_ids(proofs),))}
    return RequestHistory(request_id, _wire_row(request), decisions, proofs, keys)


_PAGE_REQUESTS = "SELECT * FROM mutation_requests WHERE request_id = ANY(%s) ORDER BY request_id"
_PAGE_DECISIONS = _DECISIONS.replace("request_id = %s", "request_id = ANY(%s)").replace(
    "ORDER BY revision", "ORDER BY request_id, revision"
)
_PAGE_PROOFS = (
    "SELECT request_id, revision, command_id, key_id, signed_command FROM command_proofs"
    " WHERE request_id = ANY(%s) ORDER BY request_id, revision"
)


def read_request_histories(
    conn: psycopg.Connection[Any], request_ids: Sequence[str]
) -> list[RequestHistory]:
    """The histories of ``request_ids`` (those that exist, in id order), read from one
    snapshot in four statements whatever their number: how ``verify --all`` reads a page."""
    with _snapshot(conn), conn.cursor(row_factory=dict_row) as cur:
        ids = list(request_ids)
        requests = list(cur.execute(_PAGE_REQUESTS, (ids,)))
        decisions: dict[str, list[dict[str, Any]]] = {}
        for row in cur.execute(_PAGE_DECISIONS, (ids,)):
            decisions.setdefault(row["request_id"], []).append(_decision_row(row))
        proofs: dict[str, list[dict[str, Any]]] = {}
        for row in cur.execute(_PAGE_PROOFS, (ids,)):
            request_id = row.pop("request_id")
            proofs.setdefault(request_id, []).append(dict(row))
        key_ids = _key_ids(proof for rows in proofs.values() for proof in rows)
        keys = {row["key_id"]: _key_row(row) for row in cur.execute(_KEYS, (key_ids,))}
    histories = []
    for request in requests:
        request_id = request["request_id"]
        kept = proofs.get(request_id, [])
        named = set(_key_ids(kept))
        histories.append(
            RequestHistory(
                request_id,
                _wire_row(request),
                decisions.get(request_id, []),
                kept,
                {key_id: record for key_id, record in keys.items() if key_id in named},
            )
        )
    return histories


def read_all_histories(
    conn: psycopg.Connection[Any], *, page_size: int = PAGE_SIZE
) -> Iterator[RequestHistory]:
    """Every request's history, a page of requests at a time (each page its own short
    snapshot, read in four statements)."""
    page: list[str] = []
    for request_id in read_all_request_ids(conn, page_size=page_size):
        page.append(request_id)
        if len(page) == page_size:
            yield from read_request_histories(conn, page)
            page = []
    if page:
        yield from read_request_histories(conn, page)


def read_all_request_ids(
    conn: psycopg.Connection[Any], *, page_size: int = PAGE_SIZE
) -> Iterator[str]:
    """Every request id, in order, read a page at a time, each page its own short
    transaction (a full scan must not hold one snapshot open, and the vacuum back, for its
    whole length). Requests created meanwhile may or may not be included."""
    after: str | None = None
    while True:
        with _snapshot(conn):
            rows = _tuples(
                conn,
                "SELECT request_id FROM mutation_requests"
                " WHERE %(after)s::text IS NULL OR request_id > %(after)s"
                " ORDER BY request_id LIMIT %(limit)s",
                {"after": after, "limit": page_size},
            )
        for row in rows:
            yield str(row[0])
        if len(rows) < page_size:
            return
        after = str(rows[-1][0])


def verify_request(
    conn: psycopg.Connection[Any],
    request_id: str,
    *,
    require_signed: bool = False,
    deployment: Deployment | None = None,
) -> Findings | None:
    """The findings of ``request_id``'s history in the database, re-executed under
    ``deployment``'s modes (signed, policy required, by default); None when it does not
    exist."""
    history = read_request_history(conn, request_id)
    if history is None:
        return None
    return history.verify(
        require_signed=require_signed,
        reexecution=reexecution_from_database(conn, deployment),
    )


# --------------------------------------------------------------------------- export


class UnknownRequest(LookupError):
    """No request has the id asked for."""


class ExportFormatError(ValueError):
    """A document that is not an export of this format."""


def export_request(conn: psycopg.Connection[Any], request_id: str) -> dict[str, Any]:
    """One JSON document enough for :func:`verify_export` to re-execute the history with no
    database: the request row, its decisions with their chain hashes, its kept commands
    (signatures included), the public keys involved, the registry's history of every actor
    involved, every approval policy version, and the histories of the requests its
    supersede commands name. Raises :class:`UnknownRequest`."""
    with _snapshot(conn):
        history = read_request_history(conn, request_id)
        if history is None:
            raise UnknownRequest(f"no request {request_id}")
        related: list[dict[str, Any]] = []
        for successor in sorted(_successors(history)):
            other = read_request_history(conn, successor)
            if other is not None:
                related.append(
                    {"request": other.request, "decisions": other.decisions, "proofs": other.proofs}
                )
        actors = sorted(
            {str(_actor_id(d.get("actor"))) for d in history.decisions}
            | {
                str(g.get("actor_id"))
                for r in history.request.get("approval_requirements") or []
                for g in (r.get("grants") or [])
            }
            | {str(_actor_id(d.get("actor"))) for h in related for d in h["decisions"]}
        )
        with conn.cursor(row_factory=dict_row) as cur:
            registry = [
                _wire_row(row)
                for row in cur.execute(
                    "SELECT at, action, actor_id, key_id, details FROM registry_audit"
                    " WHERE actor_id = ANY(%s) ORDER BY at, id",
                    (actors,),
                )
            ]
            policies = [
                _wire_row(row)
                for row in cur.execute(
                    "SELECT version, sha256, applied_at, document FROM policy_versions"
                    " ORDER BY version"
                )
            ]
    return {
        "format": EXPORT_FORMAT,
        "exported_at": timestamp_to_wire(datetime.now(UTC)),
        "request": history.request,
        "decisions": history.decisions,
        "proofs": history.proofs,
        "keys": list(history.keys.values()),
        "registry": registry,
        "policies": policies,
        "related": related,
    }


def _successors(history: RequestHistory) -> set[str]:
    """The requests ``history``'s supersede commands name (re-execution needs them as they
    stood when each supersede was decided)."""
    found = set()
    for proof in history.proofs:
        command = _parse_command(proof.get("signed_command"))
        if isinstance(command, str) or command.get("type") != "supersede":
            continue
        args = command.get("args")
        successor = args.get("superseding_request_id") if isinstance(args, Mapping) else None
        if isinstance(successor, str) and successor != history.request_id:
            found.add(successor)
    return found


def load_trusted_keys(document: object) -> dict[str, dict[str, Any]]:
    """A trusted key set: a JSON list of ``{"key_id", "actor_id", "public_key"}`` (what
    ``governance actors list --json`` gives per key, or an operator writes by hand), by
    key_id. Raises :class:`ExportFormatError` when it is not one."""
    entries = document.get("keys") if isinstance(document, Mapping) else document
    if not isinstance(entries, list):
        raise ExportFormatError('a trusted key set is a JSON list of keys (or {"keys": [...]})')
    trusted: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if not (
            isinstance(entry, Mapping)
            and isinstance(entry.get("key_id"), str)
            and isinstance(entry.get("public_key"), str)
        ):
            raise ExportFormatError("every trusted key needs a key_id and a public_key")
        trusted[entry["key_id"]] = dict(entry)
    return trusted


def verify_export(
    document: object,
    *,
    require_signed: bool = False,
    deployment: Deployment | None = None,
    trusted_keys: Mapping[str, Mapping[str, Any]] | None = None,
) -> Findings:
    """The findings of an exported history: its form checked with the keys it carries and,
    for an export of this format, its commands re-executed with the registry's history and
    the policy versions it carries. With ``trusted_keys`` every key the export relies on
    must be one of them (same actor, same public key); without, the keys are only the
    export's own word (say so to whoever reads the result).

    Raises :class:`ExportFormatError` when ``document`` is not an export at all.
    """
    if not isinstance(document, Mapping) or document.get("format") not in EXPORT_FORMATS:
        raise ExportFormatError(f"not a governance export (format {EXPORT_FORMAT!r} expected)")
    request = document.get("request")
    if not isinstance(request, Mapping) or not isinstance(request.get("request_id"), str):
        raise ExportFormatError("the export's request has no request_id")
    reexecutes = document.get("format") == EXPORT_FORMAT
    names = ("decisions", "proofs", "keys") + (
        ("registry", "policies", "related") if reexecutes else ()
    )
    members = {name: document.get(name) for name in names}
    for name, value in members.items():
        if not isinstance(value, list):
            raise ExportFormatError(f"the export's {name} must be a list")
    request_id = request["request_id"]
    findings = Findings()
    report = _Report(request_id, findings)
    keys: dict[str, Mapping[str, Any]] = {}
    for entry in members["keys"] or ():
        key_id = entry.get("key_id") if isinstance(entry, Mapping) else None
        if not isinstance(key_id, str):
            report.add(Kind.MALFORMED, "a key of the export has no key_id")
        elif key_id in keys and keys[key_id] != entry:
            report.add(Kind.KEY, f"the export carries key {key_id} twice, differently")
        else:
            keys[key_id] = entry
    if trusted_keys is not None:
        _check_trusted(report, keys, members.get("registry") or [], trusted_keys)
    revision = request.get("revision")
    history = RequestHistory(
        request_id,
        dict(request),
        list(members["decisions"] or []),
        list(members["proofs"] or []),
        {k: dict(v) for k, v in keys.items()},
    )
    formed = verify_history(
        request_id,
        history.decisions,
        history.proofs,
        keys,
        chain_head=request.get("chain_head"),
        require_signed=require_signed,
        revision=revision if _is_int(revision) else None,
        origins=(deployment or Deployment()).commands.webauthn_origins,
    )
    findings.merge(formed)
    if reexecutes:
        try:
            reexecution = _reexecution_of_export(members, deployment or Deployment())
        except (KeyError, TypeError, ValueError) as exc:
            report.add(Kind.MALFORMED, f"the export's registry or policies are unusable: {exc}")
        else:
            findings.items.extend(substance_findings(history, reexecution))
    return findings


def _check_trusted(
    report: _Report,
    keys: Mapping[str, Mapping[str, Any]],
    registry: Sequence[object],
    trusted: Mapping[str, Mapping[str, Any]],
) -> None:
    """Every key the export names (its keys, its registry's added keys) must be trusted."""
    named: dict[str, tuple[object, object]] = {
        key_id: (entry.get("actor_id"), entry.get("public_key")) for key_id, entry in keys.items()
    }
    for row in registry:
        if isinstance(row, Mapping) and row.get("action") == "key_added":
            details = row.get("details")
            public_key = details.get("public_key") if isinstance(details, Mapping) else None
            named.setdefault(str(row.get("key_id")), (row.get("actor_id"), public_key))
    for key_id, (actor_id, public_key) in sorted(named.items()):
        entry = trusted.get(key_id)
        if entry is None:
            report.add(Kind.KEY, f"key {key_id} of {actor_id!r} is not in the trusted key set")
        elif entry.get("public_key") != public_key or (
            entry.get("actor_id") is not None and entry.get("actor_id") != actor_id
        ):
            report.add(
                Kind.KEY,
                f"key {key_id} of {actor_id!r} is not the trusted key of that id",
            )


def _reexecution_of_export(members: Mapping[str, Any], deployment: Deployment) -> Reexecution:
    related: dict[str, _Sources] = {}
    for entry in members["related"]:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("request"), Mapping):
            continue
        other = RequestHistory(
            str(entry["request"].get("request_id")),
            dict(entry["request"]),
            list(entry.get("decisions") or []),
            list(entry.get("proofs") or []),
            {},
        )
        sources = other.sources()
        if sources is not None:
            related[other.request_id] = sources
    return Reexecution(
        RegistryHistory(registry_changes(r for r in members["registry"] if isinstance(r, Mapping))),
        PolicyHistory(policy_versions(p for p in members["policies"] if isinstance(p, Mapping))),
        deployment,
        related.get,
    )


# --------------------------------------------------------------------------- anchors


class AnchorError(Exception):
    """An anchor that cannot be written, or a file that is not an anchor."""


@dataclass(frozen=True, slots=True)
class AnchoredHead:
    """What an anchor holds of one request: its chain head after its first ``decisions``
    decisions, the first ``unchained`` of which predate the chain."""

    chain_head: str | None
    decisions: int
    unchained: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain_head": self.chain_head,
            "decisions": self.decisions,
            "unchained": self.unchained,
        }


def head_of(history: RequestHistory) -> AnchoredHead:
    """The anchored head of a history read (and verified) whole."""
    unchained = 0
    for row in history.decisions:
        if row.get("chain_hash") is not None:
            break
        unchained += 1
    return AnchoredHead(history.request.get("chain_head"), len(history.decisions), unchained)


#: Each request's head, its decision count, and how many of its leading decisions predate
#: the chain (those before its first chained revision).
_HEADS = """
SELECT r.request_id, r.chain_head, n.total, n.unchained
  FROM mutation_requests AS r
 CROSS JOIN LATERAL (SELECT min(revision) AS revision FROM request_decisions
                      WHERE request_id = r.request_id AND chain_hash IS NOT NULL) AS first
 CROSS JOIN LATERAL (SELECT count(*) AS total,
                            count(*) FILTER (WHERE first.revision IS NULL
                                                OR revision < first.revision) AS unchained
                       FROM request_decisions WHERE request_id = r.request_id) AS n
 WHERE %(after)s::text IS NULL OR r.request_id > %(after)s
 ORDER BY r.request_id
 LIMIT %(limit)s
"""


def _read_heads(conn: psycopg.Connection[Any], page_size: int) -> dict[str, AnchoredHead]:
    heads: dict[str, AnchoredHead] = {}
    after: str | None = None
    while True:
        # Head and counts come from one statement, so from one snapshot: a request's
        # decisions commit with the row update that moves its head.
        with _snapshot(conn):
            rows = _tuples(conn, _HEADS, {"after": after, "limit": page_size})
        for request_id, head, count, unchained in rows:
            heads[str(request_id)] = AnchoredHead(head, int(count), int(unchained))
        if len(rows) < page_size:
            return heads
        after = str(rows[-1][0])


def check_operator_key(conn: psycopg.Connection[Any], key: SigningKey) -> None:
    """Raise :class:`AnchorError` unless ``key`` is registered, unrevoked, for an active
    actor with the operator (or administrator) role."""
    with _snapshot(conn):
        rows = _tuples(
            conn,
            "SELECT k.actor_id, k.public_key, k.revoked_at, a.roles, a.active"
            " FROM actor_keys AS k JOIN actors AS a USING (actor_id) WHERE k.key_id = %s",
            (key.key_id,),
        )
    if not rows:
        raise AnchorError(f"key {key.key_id} is not registered: an anchor needs an operator key")
    actor_id, public_key, revoked_at, roles, active = rows[0]
    if actor_id != key.actor_id or public_key != key.public_key_b64:
        raise AnchorError(
            f"key {key.key_id} is registered for {actor_id} with another public key than "
            "the key file's"
        )
    if revoked_at is not None:
        raise AnchorError(f"key {key.key_id} was revoked at {timestamp_to_wire(revoked_at)}")
    if not active:
        raise AnchorError(f"actor {actor_id} is not active")
    if not ANCHOR_ROLES.intersection(roles or ()):
        raise AnchorError(f"actor {actor_id} has no operator role: an anchor needs an operator key")


def _anchor_bytes(body: Mapping[str, Any]) -> bytes:
    return rfc8785.dumps({name: value for name, value in body.items() if name != "signature"})


def write_anchor(
    conn: psycopg.Connection[Any],
    key: SigningKey,
    path: str | os.PathLike[str],
    *,
    heads: Mapping[str, AnchoredHead] | None = None,
    page_size: int = PAGE_SIZE,
) -> dict[str, Any]:
    """Write the chain heads of every request (head and decision count), signed with the
    operator's ``key`` (Ed25519 over the RFC 8785 bytes of the anchor without its
    signature), to ``path``, replacing it at once (never half-written); the anchor.

    ``heads`` are the heads a verification just read (so the anchor holds exactly what was
    verified); without them they are read from the database.
    """
    check_operator_key(conn, key)
    if heads is None:
        heads = _read_heads(conn, page_size)
    body: dict[str, Any] = {
        "format": ANCHOR_FORMAT,
        "created_at": timestamp_to_wire(datetime.now(UTC)),
        "key_id": key.key_id,
        "actor_id": key.actor_id,
        "public_key": key.public_key_b64,
        "heads": {request_id: heads[request_id].to_dict() for request_id in sorted(heads)},
    }
    body["signature"] = b64url_encode(key.sign(_anchor_bytes(body)))
    target = Path(path)
    text = json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    try:
        # A new file beside the target, then renamed over it: a reader (or a crash) never
        # meets a half-written anchor, and the earlier one stays until the new one is whole.
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as exc:
        raise AnchorError(f"cannot write the anchor {target}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise AnchorError(f"cannot write the anchor {target}: {exc.strerror or exc}") from exc
    return body


def load_anchor(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The anchor in ``path``, its shape checked (not its signature); AnchorError else."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AnchorError(f"cannot read the anchor {os.fspath(path)}: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != ANCHOR_FORMAT:
        raise AnchorError(f"{os.fspath(path)} is not an anchor (format {ANCHOR_FORMAT!r})")
    for name in ("created_at", "key_id", "actor_id", "public_key", "signature"):
        if not isinstance(document.get(name), str):
            raise AnchorError(f"the anchor {os.fspath(path)} has no {name}")
    heads = document.get("heads")
    if not isinstance(heads, dict):
        raise AnchorError(f"the anchor {os.fspath(path)} has no heads")
    for request_id, head in heads.items():
        if (
            not isinstance(head, dict)
            or not (head.get("chain_head") is None or isinstance(head.get("chain_head"), str))
            or not _is_int(head.get("decisions"))
            or not _is_int(head.get("unchained", 0))
            or not 0 <= head.get("unchained", 0) <= head["decisions"]
        ):
            raise AnchorError(f"the anchor's head of request {request_id} is malformed")
    return document


def _pinned_keys(pinned: Collection[str]) -> frozenset[bytes]:
    """The raw bytes of the pinned public keys; AnchorError when there are none (a check
    trusting whatever key the anchor carries would prove nothing) or one is no key."""
    if isinstance(pinned, str):
        raise TypeError("pinned is a collection of public keys, not one string")
    trusted = set()
    for key in pinned:
        try:
            raw = b64url_decode(key)
        except ValueError:
            raw = b""
        if len(raw) != PUBLIC_KEY_LENGTH:
            raise AnchorError(f"the pinned key {key!r} is not a base64url Ed25519 public key")
        trusted.add(raw)
    if not trusted:
        raise AnchorError("an anchor is checked against pinned operator keys: none were given")
    return frozenset(trusted)


def _anchor_signature_problem(document: Mapping[str, Any]) -> str | None:
    try:
        raw_key = b64url_decode(document["public_key"])
        raw_signature = b64url_decode(document["signature"])
        verifier = Ed25519PublicKey.from_public_bytes(raw_key)
        verifier.verify(raw_signature, _anchor_bytes(document))
    except (ValueError, InvalidSignature, rfc8785.CanonicalizationError):
        return "its signature does not verify with the public key it carries: it was altered"
    return None


def check_anchor(
    conn: psycopg.Connection[Any], path: str | os.PathLike[str], *, pinned: Collection[str]
) -> Findings:
    """Prove that no decision up to the anchor in ``path`` was rewritten.

    ``pinned`` are the operator public keys (base64url) trusted from outside the database:
    the anchor's signature must verify with the public key it carries, and that key must be
    one of them (whoever holds the database can register a key of their own, and sign an
    anchor over a history they rewrote with it). When the anchor's key id is registered,
    it must also be that key. Then, for every anchored request, the chain recomputed over
    its current decisions up to the anchored count must give the anchored head: a rewritten
    decision changes it even when every hash after it was recomputed in the database, since
    the anchor is kept off the database host.
    Raises :class:`AnchorError` when the file is not an anchor, or nothing is pinned.
    """
    trusted = _pinned_keys(pinned)
    document = load_anchor(path)
    findings = Findings()
    anchor = f"the anchor of {document['created_at']} ({os.fspath(path)})"

    def problem(message: str) -> None:
        findings.items.append(Finding(None, None, None, None, Kind.ANCHOR, f"{anchor}: {message}"))

    signature = _anchor_signature_problem(document)
    if signature is not None:
        problem(signature)
        return findings
    if b64url_decode(document["public_key"]) not in trusted:
        problem(
            f"it is signed by key {document['key_id']} of {document['actor_id']} (public key "
            f"{document['public_key']}), which is not a pinned key: it proves nothing"
        )
        return findings
    with _snapshot(conn):
        registered = _tuples(
            conn,
            "SELECT actor_id, public_key FROM actor_keys WHERE key_id = %s",
            (document["key_id"],),
        )
    if registered and registered[0] != (document["actor_id"], document["public_key"]):
        problem(
            f"key {document['key_id']} is registered for {registered[0][0]} with another "
            "public key than the anchor carries"
        )
        return findings
    for request_id, head in sorted(document["heads"].items()):
        findings.requests += 1
        findings.decisions += head["decisions"]
        _check_anchored(conn, request_id, head, anchor, findings)
    return findings


def _check_anchored(
    conn: psycopg.Connection[Any],
    request_id: str,
    head: Mapping[str, Any],
    anchor: str,
    findings: Findings,
) -> None:
    report = _Report(request_id, findings)
    count, unchained = head["decisions"], head.get("unchained", 0)
    with _snapshot(conn), conn.cursor(row_factory=dict_row) as cur:
        exists = cur.execute(
            "SELECT 1 FROM mutation_requests WHERE request_id = %s", (request_id,)
        ).fetchone()
        rows = [
            _decision_row(row) for row in cur.execute(_DECISIONS + " LIMIT %s", (request_id, count))
        ]
    if exists is None:
        report.add(Kind.REWRITTEN, f"it is in {anchor} but no longer exists")
        return
    if len(rows) < count:
        report.add(
            Kind.REWRITTEN,
            f"{anchor} has {count} decision(s), only {len(rows)} remain (removed)",
        )
        return
    recomputed: str | None = None
    for row in rows[unchained:]:
        problem = _decision_shape_problem(row, request_id)
        if problem is not None:
            report.add(Kind.MALFORMED, problem, row.get("revision"), row.get("position"))
            return
        decision = _Row(row["revision"], row["position"], row["command_id"], None, row)
        try:
            recomputed = _link(request_id, recomputed, decision)
        except ValueError as exc:
            report.add(Kind.MALFORMED, str(exc), decision.revision, decision.position)
            return
    if recomputed != head["chain_head"]:
        last = rows[-1] if rows else None
        report.add(
            Kind.REWRITTEN,
            f"the chain over its first {count} decision(s) no longer gives the head in "
            f"{anchor}: a decision up to this one was rewritten",
            last["revision"] if last else None,
            last["position"] if last else None,
            last["command_id"] if last else None,
        )
