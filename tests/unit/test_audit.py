"""Verifying a history over plain data: the decision chain, the kept signed commands and
their keys, and an exported document checked with no database."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from governance.codec import timestamp_to_wire
from governance.proof import chain_hash, chained_decision
from producer.audit import (
    ANCHOR_FORMAT,
    EXPORT_FORMAT,
    AnchorError,
    ExportFormatError,
    Findings,
    Kind,
    load_anchor,
    verify_export,
    verify_history,
)
from producer.keys import SigningKey, generate
from producer.signing import sign_command

from .builders import NOW

#: The export format whose verification is the form alone.
FORM_ONLY_EXPORT = "governance-export/1"

REQUEST_ID = "req-audit-1"
SUBMITTER = generate("submitter", "key-submitter")
OPERATOR = generate("operator", "key-operator")
STRANGER = generate("stranger", "key-stranger")
ANCHOR_FIELDS = {
    "format": ANCHOR_FORMAT,
    "created_at": timestamp_to_wire(NOW),
    "key_id": OPERATOR.key_id,
    "actor_id": OPERATOR.actor_id,
    "public_key": OPERATOR.public_key_b64,
    "signature": "AAAA",
}


@dataclass
class History:
    """A request's history as the worker writes it: decisions chained in order, one kept
    command per revision (signed unless no key is given)."""

    request_id: str = REQUEST_ID
    decisions: list[dict[str, Any]] = field(default_factory=list)
    proofs: list[dict[str, Any]] = field(default_factory=list)
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def revision(self) -> int:
        return max((d["revision"] for d in self.decisions), default=0)

    @property
    def head(self) -> str | None:
        return self.decisions[-1]["chain_hash"] if self.decisions else None

    def register(self, key: SigningKey, *, revoked: bool = False) -> None:
        self.keys[key.key_id] = {
            "key_id": key.key_id,
            "actor_id": key.actor_id,
            "public_key": key.public_key_b64,
            "revoked_at": timestamp_to_wire(NOW) if revoked else None,
        }

    def apply(
        self,
        type_: str,
        actor: str,
        decisions: list[tuple[str, str]],
        *,
        key: SigningKey | None = None,
        reason: str | None = None,
        command_id: str | None = None,
    ) -> dict[str, Any]:
        """Apply a command at the next revision: its decisions, its kept form; the command."""
        revision = self.revision + 1
        command: dict[str, Any] = {
            "command_id": command_id or f"cmd-{revision}",
            "type": type_,
            "request_id": self.request_id,
            "actor": {"id": actor},
        }
        if type_ != "submit":
            command["expected_revision"] = revision - 1
        if reason is not None:
            command["reason"] = reason
        if key is not None:
            self.register(key)
            command = sign_command(command, key, audience="governance", issued_at=NOW)
        for position, (category, decision_type) in enumerate(decisions, start=1):
            decision = {
                "request_id": self.request_id,
                "revision": revision,
                "position": position,
                "command_id": command["command_id"],
                "category": category,
                "type": decision_type,
                "actor": {"id": actor, "name": actor.title(), "type": "user"},
                "reason": reason,
                "metadata": {"step": position},
                "occurred_at": timestamp_to_wire(NOW + timedelta(minutes=revision)),
            }
            decision["chain_hash"] = chain_hash(self.head, self._chained(decision))
            self.decisions.append(decision)
        self.proofs.append(
            {
                "revision": revision,
                "command_id": command["command_id"],
                "key_id": key.key_id if key is not None else None,
                "signed_command": json.dumps(command),
            }
        )
        return command

    def _chained(self, decision: dict[str, Any]) -> dict[str, Any]:
        return chained_decision(
            self.request_id,
            decision["revision"],
            decision["position"],
            decision["command_id"],
            decision,
        )

    def rechain(self) -> None:
        """What someone holding the database can do after an edit: recompute every hash."""
        previous = None
        for decision in self.decisions:
            decision["chain_hash"] = previous = chain_hash(previous, self._chained(decision))

    def decision(self, revision: int, position: int) -> dict[str, Any]:
        return next(
            d for d in self.decisions if (d["revision"], d["position"]) == (revision, position)
        )

    def proof(self, revision: int) -> dict[str, Any]:
        return next(p for p in self.proofs if p["revision"] == revision)

    def verify(self, **options: Any) -> Findings:
        if "chain_head" not in options:
            options["chain_head"] = self.head
        if "revision" not in options:
            options["revision"] = self.revision
        return verify_history(self.request_id, self.decisions, self.proofs, self.keys, **options)

    def export(self) -> dict[str, Any]:
        # The first export format: the form alone (no registry, no policies to re-execute
        # with), which is what these tests are about.
        return {
            "format": FORM_ONLY_EXPORT,
            "exported_at": timestamp_to_wire(NOW),
            "request": {
                "request_id": self.request_id,
                "status": "expired",
                "revision": self.revision,
                "chain_head": self.head,
            },
            "decisions": self.decisions,
            "proofs": self.proofs,
            "keys": list(self.keys.values()),
        }


def signed_history() -> History:
    """Submitted, approved (two decisions), then expired by the system (unsigned)."""
    history = History()
    history.apply("submit", "submitter", [("lifecycle", "created")], key=SUBMITTER)
    history.apply(
        "approve",
        "operator",
        [("approval", "granted"), ("lifecycle", "approved")],
        key=OPERATOR,
        reason="looks fine",
    )
    history.apply(
        "expire",
        "system",
        [("lifecycle", "expired")],
        reason="expires_at has passed",
        command_id="expire-0f9a",
    )
    return history


def failures(findings: Findings) -> list[tuple[Kind, int | None, int | None]]:
    return [(f.kind, f.revision, f.position) for f in findings.failures]


# --------------------------------------------------------------------------- a clean history


def test_a_clean_history_holds_and_lists_its_unsigned_decisions() -> None:
    history = signed_history()

    findings = history.verify()

    assert findings.ok, findings.lines()
    assert (findings.requests, findings.decisions) == (1, 4)
    assert findings.lines() == [
        f"unsigned: request {REQUEST_ID}, decision 3/1 (command expire-0f9a): "
        "no signature (the system actor's expiry)"
    ]
    assert findings.to_dict()["ok"] is True
    assert findings.to_dict()["unsigned"] == 1


def test_the_system_actor_s_expiry_is_no_failure_when_signatures_are_required() -> None:
    # (it is never signed; re-execution proves it was due)
    history = signed_history()

    findings = history.verify(require_signed=True)

    assert findings.ok, findings.lines()


def test_development_mode_decisions_fail_when_signatures_are_required() -> None:
    history = History()
    history.apply("submit", "submitter", [("lifecycle", "created")])

    findings = history.verify(require_signed=True)

    assert not findings.ok
    assert failures(findings) == [(Kind.UNSIGNED, 1, 1)]
    assert str(findings.failures[0]).startswith(f"unsigned: request {REQUEST_ID}, decision 1/1")


def test_a_development_mode_decision_is_listed_as_unsigned() -> None:
    history = History()
    history.apply("submit", "submitter", [("lifecycle", "created")])

    findings = history.verify()

    assert findings.ok
    assert [f.message for f in findings.unsigned] == ["no signature (applied in development mode)"]


def test_the_head_is_only_compared_when_given() -> None:
    history = signed_history()

    assert verify_history(REQUEST_ID, history.decisions, history.proofs, history.keys).ok
    missing_head = history.verify(chain_head=None)
    assert failures(missing_head) == [(Kind.HEAD, 3, 1)]


def test_proofs_may_be_given_by_revision() -> None:
    history = signed_history()
    by_revision = {proof["revision"]: proof for proof in history.proofs}

    assert verify_history(REQUEST_ID, history.decisions, by_revision, history.keys).ok


# --------------------------------------------------------------------------- alterations


def test_an_edited_decision_is_named_by_revision_and_position() -> None:
    # Given a clean history whose approval decision's reason is then changed
    history = signed_history()
    history.decision(2, 1)["reason"] = "nobody looked"

    # When it is verified
    findings = history.verify()

    # Then that decision, and only it, is altered: its chain hash and the signed command
    assert not findings.ok
    assert failures(findings) == [(Kind.PROOF, 2, 1), (Kind.CHAIN, 2, 1)]
    lines = [str(f) for f in findings.failures]
    assert lines[1] == (
        f"altered: request {REQUEST_ID}, decision 2/1 (command cmd-2): its stored chain_hash is "
        "not the hash of its content after the decision before it: it (or the one before it) "
        "was changed or removed after it was written"
    )
    assert "its reason 'nobody looked' is not the signed command's 'looks fine'" in lines[0]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("type", "rejected"),
        ("category", "lifecycle"),
        ("metadata", {"step": 9}),
        ("occurred_at", timestamp_to_wire(NOW)),
        ("actor", {"id": "operator", "name": "Mallory", "type": "user"}),
    ],
)
def test_any_chained_field_edited_breaks_the_chain_there(name: str, value: Any) -> None:
    history = signed_history()
    history.decision(2, 1)[name] = value

    assert failures(history.verify()) == [(Kind.CHAIN, 2, 1)]


def test_an_edit_with_the_chain_recomputed_is_still_caught_by_the_signed_reason() -> None:
    # The chain alone cannot tell (the anchor is there for that), the signed command can
    history = signed_history()
    history.decision(2, 2)["reason"] = "rubber stamp"
    history.rechain()

    assert failures(history.verify(chain_head=history.head)) == [(Kind.PROOF, 2, 2)]


def test_a_rewritten_head_is_named() -> None:
    history = signed_history()

    findings = history.verify(chain_head="0" * 64)

    assert failures(findings) == [(Kind.HEAD, 3, 1)]
    assert "chain head is not its last decision's chain hash" in findings.failures[0].message


def test_a_removed_decision_is_found_where_the_chain_breaks() -> None:
    history = signed_history()
    history.decisions.remove(history.decision(2, 1))

    findings = history.verify()

    assert failures(findings) == [(Kind.ORDER, 2, 2), (Kind.CHAIN, 2, 2)]
    assert "decision 2/1 is missing (removed?)" in findings.failures[0].message


def test_a_removed_last_decision_leaves_the_head_behind() -> None:
    history = signed_history()
    head = history.head
    del history.decisions[-1]

    findings = history.verify(chain_head=head)

    assert (Kind.HEAD, 2, 2) in failures(findings)
    assert (Kind.ORDER, 3, None) in failures(findings)


def test_a_removed_revision_leaves_its_kept_command_alone() -> None:
    history = signed_history()
    history.decisions = [d for d in history.decisions if d["revision"] != 2]

    findings = history.verify()

    assert (Kind.ORDER, 3, 1) in failures(findings)
    assert (Kind.ORDER, 2, None) in failures(findings)  # kept command without decisions
    assert (Kind.CHAIN, 3, 1) in failures(findings)


def test_a_duplicated_or_reordered_decision_is_out_of_order() -> None:
    history = signed_history()
    history.decisions.insert(1, copy.deepcopy(history.decisions[0]))

    assert (Kind.ORDER, 1, 1) in failures(history.verify())


def test_swapped_kept_commands_do_not_match_their_revisions() -> None:
    # Given the kept commands of revisions 1 and 2 swapped
    history = signed_history()
    first, second = history.proof(1), history.proof(2)
    first["signed_command"], second["signed_command"] = (
        second["signed_command"],
        first["signed_command"],
    )

    findings = history.verify()

    # Then both revisions are named: wrong command, wrong revision, wrong actor
    messages = {(f.revision, f.message) for f in findings.failures}
    assert (1, "the kept command's command_id is 'cmd-2', not 'cmd-1'") in messages
    assert (1, "revision 1 must be a submit, the kept command is 'approve'") in messages
    assert (2, "expected_revision is None, not 1") in messages
    assert (2, "the kept command is by 'submitter', its decisions by operator") in messages


def test_a_command_of_another_request_is_not_this_ones() -> None:
    history = signed_history()
    other = History(request_id="req-other")
    other.apply("submit", "submitter", [("lifecycle", "created")], key=SUBMITTER)
    history.proof(1)["signed_command"] = other.proof(1)["signed_command"]
    history.proof(1)["command_id"] = "cmd-1"

    messages = [f.message for f in history.verify().failures]
    assert "the kept command is for request 'req-other'" in messages


def test_a_missing_or_doubled_kept_command_is_found() -> None:
    history = signed_history()
    doubled = copy.deepcopy(history.proof(2))
    history.proofs.remove(history.proof(1))
    history.proofs.append(doubled)

    findings = history.verify()

    assert [(f.kind, f.revision, f.message) for f in findings.failures] == [
        (Kind.PROOF, 1, "no kept command for this revision"),
        (Kind.PROOF, 2, "2 kept commands for this revision (exactly one expected)"),
    ]


def test_a_signature_by_another_key_does_not_verify() -> None:
    # Given the approval re-signed by a stranger's key, under the operator's key id
    history = signed_history()
    command = json.loads(history.proof(2)["signed_command"])
    forged = sign_command(
        {**command, "actor": {"id": "stranger"}}, STRANGER, audience="governance", issued_at=NOW
    )
    forged["actor"] = {"id": "operator"}
    forged["auth"]["key_id"] = OPERATOR.key_id
    history.proof(2)["signed_command"] = json.dumps(forged)

    findings = history.verify()

    assert failures(findings) == [(Kind.SIGNATURE, 2, None)]
    assert str(findings.failures[0]) == (
        f"altered: request {REQUEST_ID}, revision 2 (command cmd-2): the signature does not "
        f"verify (key {OPERATOR.key_id})"
    )


def test_an_altered_signed_command_does_not_verify() -> None:
    history = signed_history()
    command = json.loads(history.proof(2)["signed_command"])
    command["args"] = {"sneaked": True}
    history.proof(2)["signed_command"] = json.dumps(command)

    assert failures(history.verify()) == [(Kind.SIGNATURE, 2, None)]


def test_a_key_of_another_actor_or_an_unknown_key_is_refused() -> None:
    history = signed_history()
    history.keys[OPERATOR.key_id]["actor_id"] = "stranger"
    wrong_owner = history.verify()
    del history.keys[OPERATOR.key_id]
    unknown = history.verify()

    assert failures(wrong_owner) == [(Kind.KEY, 2, None)]
    assert "belongs to 'stranger', not to the command's actor 'operator'" in str(
        wrong_owner.failures[0]
    )
    assert [str(f) for f in unknown.failures] == [
        f"altered: request {REQUEST_ID}, revision 2 (command cmd-2): key {OPERATOR.key_id} is "
        "not registered"
    ]


def test_a_signature_of_a_revoked_key_still_verifies() -> None:
    # What a key signed before its revocation stays proved
    history = signed_history()
    history.register(OPERATOR, revoked=True)

    assert history.verify().ok


def test_a_kept_command_marked_signed_must_carry_that_signature() -> None:
    history = signed_history()
    history.proof(3)["key_id"] = OPERATOR.key_id
    stripped = json.loads(history.proof(2)["signed_command"])
    stripped["auth"]["key_id"] = "key-other"
    history.proof(2)["signed_command"] = json.dumps(stripped)

    messages = [(f.revision, f.message) for f in history.verify().failures]
    assert (3, f"kept as signed with key {OPERATOR.key_id}, but the command has no auth") in (
        messages
    )
    assert (2, f"kept as signed with key {OPERATOR.key_id}, the command names key 'key-other'") in (
        messages
    )


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        ("!!", "auth.signature is not base64url"),
        ("AAAA", "auth.signature is 3 bytes, not 64"),
        (None, "auth.signature is missing"),
    ],
)
def test_a_garbled_signature_is_named(signature: Any, message: str) -> None:
    history = signed_history()
    command = json.loads(history.proof(1)["signed_command"])
    command["auth"]["signature"] = signature
    history.proof(1)["signed_command"] = json.dumps(command)

    assert [f.message for f in history.verify().failures] == [f"{message} (key {SUBMITTER.key_id})"]


def test_a_garbled_registered_key_is_named() -> None:
    history = signed_history()
    history.keys[SUBMITTER.key_id]["public_key"] = "AAAA"

    assert [f.message for f in history.verify().failures] == [
        f"the registered public key is not a 32-byte Ed25519 key (key {SUBMITTER.key_id})"
    ]


def test_malformed_rows_are_findings_not_crashes() -> None:
    history = signed_history()
    history.decisions[0] = {**history.decisions[0], "position": "one"}
    history.decisions.append("not a row")  # type: ignore[arg-type]
    history.proof(2)["signed_command"] = "{not json"
    history.proofs.append({"revision": None})

    findings = history.verify(chain_head=None, revision=3)

    kinds = {f.kind for f in findings.failures}
    assert Kind.MALFORMED in kinds
    messages = [f.message for f in findings.failures]
    assert "decision #1 is malformed: position must be a positive integer, not 'one'" in messages
    assert any(m.startswith("signed_command is not JSON") for m in messages)
    assert "kept command #4 has no usable revision" in messages


def test_decisions_written_before_the_chain_are_noted_not_failed() -> None:
    # Given a request whose first revision predates the chain (no hash, no kept command),
    # the chain starting afresh with the first decision written after it existed
    history = History()
    history.apply("submit", "submitter", [("lifecycle", "created")], key=SUBMITTER)
    history.apply("approve", "operator", [("lifecycle", "approved")], key=OPERATOR)
    history.decisions[0]["chain_hash"] = None
    history.proofs.remove(history.proof(1))
    second = history.decisions[1]
    second["chain_hash"] = chain_hash(None, history._chained(second))

    findings = history.verify(chain_head=second["chain_hash"], revision=2)

    # Then it holds, the old decision listed as unchained (a failure if signatures are
    # required)
    assert findings.ok, findings.lines()
    assert [str(f) for f in findings.items] == [
        f"unchained: request {REQUEST_ID}, decision 1/1 (command cmd-1): written before the "
        "chain existed: no chain hash and no kept command"
    ]
    strict = history.verify(chain_head=second["chain_hash"], revision=2, require_signed=True)
    assert not strict.ok


def test_a_chain_hash_removed_after_the_chain_began_is_an_alteration() -> None:
    history = signed_history()
    history.decision(2, 2)["chain_hash"] = None

    findings = history.verify()

    assert (Kind.CHAIN, 2, 2) in failures(findings)


def test_a_finding_without_a_decision_names_what_it_can() -> None:
    findings = Findings()
    assert findings.summary() == "verified 0 request(s), 0 decision(s): 0 failure(s), 0 unsigned"
    history = signed_history()
    extra = history.verify(revision=5)
    assert [str(f) for f in extra.failures] == [
        f"altered: request {REQUEST_ID}, revision 5: the request is at revision 5, but "
        "revisions 4..5 have no decisions (removed?)"
    ]
    beyond = history.verify(revision=2)
    assert "beyond the request's revision 2" in beyond.failures[0].message


# --------------------------------------------------------------------------- export


def test_an_export_verifies_after_a_json_round_trip() -> None:
    document = json.loads(json.dumps(signed_history().export()))

    findings = verify_export(document)

    assert findings.ok, findings.lines()
    assert (findings.requests, findings.decisions) == (1, 4)
    assert len(findings.unsigned) == 1


def test_an_edited_export_is_altered() -> None:
    document = json.loads(json.dumps(signed_history().export()))
    document["decisions"][0]["type"] = "approved"

    findings = verify_export(document)

    assert failures(findings) == [(Kind.CHAIN, 1, 1)]


def test_an_export_with_a_substituted_key_fails_its_signatures() -> None:
    document = json.loads(json.dumps(signed_history().export()))
    document["keys"][0]["public_key"] = STRANGER.public_key_b64

    assert failures(verify_export(document)) == [(Kind.SIGNATURE, 1, None)]


def test_an_export_carrying_one_key_twice_differently_is_altered() -> None:
    document = json.loads(json.dumps(signed_history().export()))
    document["keys"].append({**document["keys"][0], "actor_id": "stranger"})
    document["keys"].append({"no": "key_id"})

    messages = [f.message for f in verify_export(document).failures]
    assert f"the export carries key {SUBMITTER.key_id} twice, differently" in messages
    assert "a key of the export has no key_id" in messages


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "not a governance export"),
        ({"format": "something/1"}, "not a governance export"),
        ({"format": EXPORT_FORMAT, "request": {}}, "has no request_id"),
        (
            {"format": EXPORT_FORMAT, "request": {"request_id": "r"}, "decisions": {}},
            "decisions must be a list",
        ),
    ],
)
def test_a_document_that_is_no_export_is_refused(document: Any, message: str) -> None:
    with pytest.raises(ExportFormatError, match=message):
        verify_export(document)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"revision": 0}, "revision must be a positive integer, not 0"),
        ({"position": True}, "position must be a positive integer, not True"),
        ({"command_id": 7}, "command_id must be a string, not 7"),
        ({"actor": {"name": "no id"}}, "actor must be an object with an id"),
        ({"chain_hash": 12}, "chain_hash must be a string or null"),
        ({"occurred_at": None}, "occurred_at must be a timestamp"),
        ({"request_id": "req-other"}, "it belongs to request 'req-other'"),
    ],
)
def test_a_malformed_decision_row_is_named(change: dict[str, Any], problem: str) -> None:
    history = signed_history()
    history.decisions[0] = {**history.decisions[0], **change}

    messages = [f.message for f in history.verify(revision=3).failures]

    assert f"decision #1 is malformed: {problem}" in messages


def test_a_decision_that_cannot_be_hashed_is_malformed() -> None:
    history = signed_history()
    history.decision(2, 1)["metadata"] = {"ratio": float("nan")}

    findings = history.verify()

    assert [(f.kind, f.revision, f.position) for f in findings.failures] == [(Kind.MALFORMED, 2, 1)]
    assert "cannot be canonicalised" in findings.failures[0].message


def test_a_command_that_cannot_be_canonicalised_does_not_verify() -> None:
    history = signed_history()
    command = json.loads(history.proof(2)["signed_command"])
    command["metadata"] = {"ratio": float("nan")}
    history.proof(2)["signed_command"] = json.dumps(command)

    (finding,) = history.verify().failures
    assert finding.kind is Kind.SIGNATURE and "cannot be canonicalised" in finding.message


def test_a_registered_key_that_is_no_base64url_is_named() -> None:
    history = signed_history()
    history.keys[SUBMITTER.key_id]["public_key"] = "not base64url!"

    assert [f.message for f in history.verify().failures] == [
        f"the registered public key is not a usable Ed25519 key (key {SUBMITTER.key_id})"
    ]


def test_decisions_naming_different_commands_in_one_revision() -> None:
    history = signed_history()
    history.decision(2, 2)["command_id"] = "cmd-sneaked"
    history.rechain()

    messages = {(f.revision, f.message) for f in history.verify(chain_head=history.head).failures}

    assert (2, "its decisions name different commands: cmd-2, cmd-sneaked") in messages


def test_a_kept_command_of_another_id_is_named() -> None:
    history = signed_history()
    history.proof(1)["command_id"] = "cmd-other"

    messages = {f.message for f in history.verify().failures}

    assert "the kept command is 'cmd-other', not the decisions' command" in messages


def test_a_head_without_chained_decisions_is_named() -> None:
    history = History()

    findings = verify_history(REQUEST_ID, [], [], {}, chain_head="f" * 64)

    assert [str(f) for f in findings.failures] == [
        f"altered: request {REQUEST_ID}: the request has a chain head but no chained decisions"
    ]
    assert verify_history(REQUEST_ID, history.decisions, [], {}, chain_head=None).ok


# --------------------------------------------------------------------------- anchor files


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "cannot read the anchor"),
        ('{"format": "x"}', "is not an anchor"),
        (json.dumps({"format": ANCHOR_FORMAT}), "has no created_at"),
        (json.dumps({**ANCHOR_FIELDS, "heads": []}), "has no heads"),
        (
            json.dumps({**ANCHOR_FIELDS, "heads": {"r": {"chain_head": 1, "decisions": 1}}}),
            "head of request r is malformed",
        ),
        (
            json.dumps(
                {
                    **ANCHOR_FIELDS,
                    "heads": {"r": {"chain_head": None, "decisions": 1, "unchained": 2}},
                }
            ),
            "head of request r is malformed",
        ),
    ],
)
def test_a_file_that_is_no_anchor_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "anchor.json"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(AnchorError, match=message):
        load_anchor(path)


def test_a_missing_anchor_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AnchorError, match="cannot read the anchor"):
        load_anchor(tmp_path / "missing.json")


def test_a_decision_missing_inside_a_revision_is_named() -> None:
    history = History()
    history.apply(
        "submit",
        "submitter",
        [("lifecycle", "created"), ("lifecycle", "pending"), ("approval", "required")],
        key=SUBMITTER,
    )
    history.decisions.remove(history.decision(1, 2))

    findings = history.verify()

    assert (Kind.ORDER, 1, 3) in failures(findings)
    assert "decision 1/2 is missing (removed?)" in findings.failures[0].message


@pytest.mark.parametrize(
    ("kept", "message"),
    [
        (5, "signed_command must be JSON text, not int"),
        ("[1, 2]", "signed_command is not a JSON object"),
    ],
)
def test_a_kept_command_that_is_no_object_is_malformed(kept: Any, message: str) -> None:
    history = signed_history()
    history.proof(1)["signed_command"] = kept

    assert [(f.kind, f.message) for f in history.verify().failures] == [(Kind.MALFORMED, message)]
