"""``governance policy``, the registry commands that respect it, and ``pending --for``, as
real processes against a real database: their exit codes (0 valid and satisfiable, 2 invalid
or a failing case, 8 unsatisfiable) and what they print.

Every test has a database of its own, with no policy applied until the test applies one:
the active policy is the whole deployment's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from governance.authentication import Trust
from producer.keys import generate
from tests.conftest import migrated_database
from tests.support.commands import command, new_id, submit
from tests.support.identities import register
from tests.support.processes import PROJECT_ROOT, service_env
from tests.support.signed import apply_command
from worker import registry

pytestmark = pytest.mark.system

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/none"

POLICY = """\
policy: 1
rules:
  - id: critical-accounts
    description: Limits on accounts need two of cab, then the security officer.
    when:
      state_type: [account]
      risk_level: [high, critical]
    require:
      - group: cab
        min_approvals: 2
      - actor: sec-officer
  - id: default
    require:
      - group: cab
"""
CASES = """\
- name: a critical limit raise
  request: {state_type: account, risk_level: critical, requester: ci}
  expect: {rule: critical-accounts}
- request: {state_type: config, risk_level: critical}
  expect: {rule: default}
"""


def run(
    database_url: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "governance_cli.main", *args],
        cwd=PROJECT_ROOT,
        env=service_env(database_url, "amqp://unused//"),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def database(postgres_server_url: str) -> Iterator[str]:
    """A database of this test alone, no policy applied, with a requester (ci), three
    approvers in group cab (alice, bob, carol) and the security officer."""
    with migrated_database(postgres_server_url, policy=None) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            for actor_id, roles, groups in (
                ("ci", ["requester"], []),
                ("alice", ["approver"], ["cab"]),
                ("bob", ["approver"], ["cab"]),
                ("carol", ["approver"], ["cab"]),
                ("sec-officer", ["approver"], []),
            ):
                key = generate(actor_id).public_key_b64
                registry.add_actor(
                    conn, actor_id, None, "user", roles, groups, public_key=key, key_id=actor_id
                )
        yield url


@pytest.fixture
def governance(database: str) -> Any:
    def governance(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run(database, *args, stdin=stdin)

    return governance


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "cases.yaml").write_text(CASES)
    return tmp_path


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The error a command printed: exactly one line on stderr."""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def audit(database_url: str, action: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT actor_id, key_id, details FROM registry_audit WHERE action = %s ORDER BY id",
            (action,),
        ).fetchall()


# --------------------------------------------------------------------------- apply, show, history


def test_apply_prints_the_version_and_sha256_and_show_and_history_list_it(
    governance: Any, files: Path
) -> None:
    # When the policy is applied
    applied = governance("policy", "apply", str(files / "policy.yaml"))

    # Then it is version 1, and its sha256 is the one check computes for the file
    assert applied.returncode == 0, applied.stderr
    checked = governance("policy", "check", str(files / "policy.yaml"))
    sha256 = checked.stdout.split("sha256 ")[1].split()[0]
    assert applied.stdout == f"applied approval policy version 1 (sha256 {sha256})\n"

    # And show prints it, its document in the order a document is written
    shown = governance("policy", "show")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"version:    1\nsha256:     {sha256}\napplied:    ")
    assert "forced:     no" in shown.stdout
    document = shown.stdout.split("\n\n", 1)[1]
    assert document.startswith("policy: 1\nrules:\n- id: critical-accounts\n  description: ")
    assert "  when:\n    state_type: [account]\n    risk_level: [high, critical]\n" in document
    # As JSON, with the document as applied
    as_json = json.loads(governance("policy", "show", "--version", "1", "--json").stdout)
    assert (as_json["version"], as_json["sha256"], as_json["forced"]) == (1, sha256, False)
    assert as_json["document"]["rules"][1] == {"id": "default", "require": [{"group": "cab"}]}

    # And the history lists it
    history = governance("policy", "history")
    assert history.returncode == 0, history.stderr
    header, row = history.stdout.splitlines()
    assert header.split() == ["VERSION", "APPLIED", "AT", "BY", "FORCED", "RULES", "SHA256"]
    assert row.split()[0] == "1" and row.split()[-3:] == ["no", "2", sha256]


def test_applying_the_active_document_again_adds_no_version(governance: Any, files: Path) -> None:
    assert governance("policy", "apply", str(files / "policy.yaml")).returncode == 0

    again = governance(
        "policy", "apply", "-", stdin=POLICY.replace("  - id: default", "  - id: default  # same")
    )

    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("approval policy version 1 already has this document")
    assert again.stdout.rstrip().endswith("nothing applied")
    lines = governance("policy", "history", "--json").stdout.splitlines()
    assert [json.loads(line)["version"] for line in lines] == [1]


def test_show_and_history_without_a_policy_say_how_to_apply_one(governance: Any) -> None:
    shown = governance("policy", "show")
    history = governance("policy", "history")

    assert shown.returncode == 1
    assert one_line_error(shown) == (
        "Error: no approval policy is applied: governance policy apply FILE"
    )
    assert (history.returncode, history.stdout.split()) == (
        0,
        ["VERSION", "APPLIED", "AT", "BY", "FORCED", "RULES", "SHA256"],
    )
    assert one_line_error(governance("policy", "show", "--version", "7")) == (
        "Error: there is no approval policy version 7"
    )


# --------------------------------------------------------------------------- static checks


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        pytest.param(
            "  - {id: any-critical, when: {risk_level: [critical]}, require: []}\n"
            "  - {id: critical-accounts, when: {risk_level: [critical], state_type: [account]},"
            " require: []}\n"
            "  - {id: default, require: []}\n",
            "rules[1]: rule 'critical-accounts' can never match: rules[0] (rule 'any-critical') "
            "comes first and matches every request it would",
            id="shadowed-rule",
        ),
        pytest.param(
            "  - {id: everything, require: []}\n"
            "  - {id: critical, when: {risk_level: [critical]}, require: []}\n",
            "rules[0]: only the last rule may leave out when; rule 'everything' matches every "
            "request, so no rule after it could ever match; rules[1].when: the last rule must "
            "have no when, so that every request matches a rule; rule 'critical' has one",
            id="catch-all-not-last",
        ),
        pytest.param(
            "  - {id: critical, when: {risk_level: [extreme]}, require: []}\n"
            "  - {id: default, require: []}\n",
            "rules[0].when.risk_level: 'extreme' is not one of low, medium, high, critical",
            id="enumeration",
        ),
        pytest.param(
            "  - {id: default, when: {scope: [global]}, require: []}\n"
            "  - {id: default, require: []}\n",
            "rules[1].id: 'default' is already the id of rules[0]",
            id="duplicate-id",
        ),
    ],
)
def test_a_document_breaking_a_static_rule_exits_2_naming_where(
    governance: Any, tmp_path: Path, rules: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"policy: 1\nrules:\n{rules}")

    for verb in ("check", "apply"):
        done = governance("policy", verb, str(path))
        assert done.returncode == 2, done.stderr
        assert one_line_error(done) == f"Error: {path} is not a valid approval policy: {message}"
    assert governance("policy", "show").returncode == 1  # nothing was applied


def test_a_policy_naming_unregistered_groups_or_actors_exits_2(
    governance: Any, tmp_path: Path
) -> None:
    path = tmp_path / "unknown.yaml"
    path.write_text(
        "policy: 1\nrules:\n"
        "  - id: contractors\n    when: {requester_group: [contractors]}\n"
        "    require: [{actor: sec-offcer}]\n"
        "  - id: default\n    require: [{group: sre}]\n"
    )

    checked = governance("policy", "check", str(path))
    applied = governance("policy", "apply", str(path))

    expected = (
        "rules[0].when.requester_group: 'contractors' is not a registered group; "
        "rules[0].require[0].actor: 'sec-offcer' is not a registered actor; "
        "rules[1].require[0].group: 'sre' is not a registered group"
    )
    assert (checked.returncode, applied.returncode) == (2, 2)
    assert (
        one_line_error(checked)
        == f"Error: {path} names what the registry does not have: {expected}"
    )
    assert (
        one_line_error(applied)
        == f"Error: {path} names what the registry does not have: {expected}"
    )


def test_an_unsatisfiable_policy_exits_8_naming_the_rule_the_submitter_and_the_shortfall(
    database: str, governance: Any, files: Path
) -> None:
    # Given bob and carol can no longer approve: cab has one eligible member left
    with psycopg.connect(database, autocommit=True) as conn:
        registry.set_active(conn, "bob", False)
        registry.revoke_key(conn, "carol")

    checked = governance("policy", "check", str(files / "policy.yaml"))
    applied = governance("policy", "apply", str(files / "policy.yaml"))

    assert (checked.returncode, applied.returncode) == (8, 8)
    error = one_line_error(applied)
    assert error == one_line_error(checked)
    assert error.startswith(f"Error: {files / 'policy.yaml'} cannot be satisfied by the registry: ")
    assert (
        "rule critical-accounts: for submitter ci, step 1 (group cab, 2 approvals) needs 2 "
        "distinct eligible approvers other than ci; only 1 can be matched: alice; not eligible: "
        "bob (inactive), carol (no unrevoked key)"
    ) in error
    assert "rule critical-accounts: for an outsider, step 1" in error
    assert governance("policy", "show").returncode == 1


def test_a_forced_apply_is_applied_with_a_warning_and_shown_as_forced(
    database: str, governance: Any, files: Path
) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        registry.set_active(conn, "bob", False)
        registry.set_active(conn, "carol", False)

    applied = governance("policy", "apply", str(files / "policy.yaml"), "--force")

    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.startswith("applied approval policy version 1 (sha256 ")
    assert one_line_error(applied).startswith(
        "warning: forced past: rule critical-accounts: for an outsider, step 1 (group cab, "
        "2 approvals) needs 2 distinct eligible approvers; only 1 can be matched: alice"
    )
    assert "forced:     yes" in governance("policy", "show").stdout
    assert audit(database, "policy_applied")[-1][2]["forced"] is True


def test_an_unreadable_file_exits_2(governance: Any, tmp_path: Path) -> None:
    done = governance("policy", "apply", str(tmp_path / "missing.yaml"))

    assert done.returncode == 2
    assert one_line_error(done) == (
        f"Error: cannot read the policy {tmp_path / 'missing.yaml'}: No such file or directory"
    )


# --------------------------------------------------------------------------- cases and rosters


def test_check_with_cases_that_all_pass_exits_0_and_counts_them(
    governance: Any, files: Path
) -> None:
    done = governance(
        "policy", "check", str(files / "policy.yaml"), "--cases", str(files / "cases.yaml")
    )

    assert done.returncode == 0, done.stderr
    sha256 = done.stdout.split("sha256 ")[1].split()[0]
    # The test's five actors and the workers' own (registered in every test database)
    assert done.stdout.splitlines() == [
        f"{files / 'policy.yaml'}: valid, 2 rule(s), sha256 {sha256}",
        "satisfiable against the registry (6 actor(s)): for each of 1 requester(s) and for an "
        "outsider",
        "2 case(s) pass",
    ]


def test_check_with_a_failing_case_exits_2_naming_the_case_and_both_rules(
    governance: Any, files: Path
) -> None:
    (files / "cases.yaml").write_text(
        CASES + "- name: high risk on a config\n"
        "  request: {state_type: config, risk_level: high}\n"
        "  expect: {rule: critical-accounts}\n"
    )

    done = governance(
        "policy", "check", str(files / "policy.yaml"), "--cases", str(files / "cases.yaml")
    )

    assert done.returncode == 2
    assert one_line_error(done) == (
        "Error: 1 of 3 case(s) fail: cases[2] (high risk on a config): expected rule "
        "critical-accounts, but rule default matches"
    )


def test_check_with_a_roster_needs_no_database(database: str, governance: Any, files: Path) -> None:
    # Given the registry exported as the policy's CI would keep it
    exported = governance("actors", "list", "--json")
    assert exported.returncode == 0, exported.stderr
    (files / "roster.json").write_text(exported.stdout)
    args = ("policy", "check", str(files / "policy.yaml"), "--roster", str(files / "roster.json"))

    # When the policy and its cases are checked against it, with no database to be reached
    checked = run(UNREACHABLE, *args, "--cases", str(files / "cases.yaml"))

    # Then they pass, against the roster
    assert checked.returncode == 0, checked.stderr
    # (the test's five actors and the workers' own)
    assert f"satisfiable against {files / 'roster.json'} (6 actor(s))" in checked.stdout
    assert "2 case(s) pass" in checked.stdout

    # And a roster that cannot satisfy it exits 8, still without a database
    roster = [json.loads(line) for line in exported.stdout.splitlines()]
    for actor in roster:
        if actor["actor_id"] in ("bob", "carol"):
            actor["active"] = False
    (files / "roster.json").write_text(json.dumps(roster))
    unsatisfiable = run(UNREACHABLE, *args)
    assert unsatisfiable.returncode == 8
    assert "only 1 can be matched: alice" in one_line_error(unsatisfiable)

    # While without a roster the unreachable database is the error
    assert run(UNREACHABLE, "policy", "check", str(files / "policy.yaml")).returncode == 7


def test_check_reads_the_policy_from_standard_input(governance: Any) -> None:
    done = governance("policy", "check", "-", stdin=POLICY)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("the policy on standard input: valid, 2 rule(s), sha256 ")


def test_a_malformed_roster_or_cases_file_exits_2(governance: Any, files: Path) -> None:
    (files / "roster.json").write_text('[{"name": "no id"}]')
    (files / "bad-cases.yaml").write_text("- {request: {scope: galaxy}, expect: {rule: default}}")

    roster = governance(
        "policy", "check", str(files / "policy.yaml"), "--roster", str(files / "roster.json")
    )
    cases = governance(
        "policy", "check", str(files / "policy.yaml"), "--cases", str(files / "bad-cases.yaml")
    )

    assert (roster.returncode, cases.returncode) == (2, 2)
    assert "is not a roster" in one_line_error(roster)
    assert one_line_error(cases) == (
        f"Error: {files / 'bad-cases.yaml'} is not a valid list of cases: cases[0].request.scope: "
        "'galaxy' is not one of single, module, system, global"
    )


# --------------------------------------------------------------------------- registry changes


@pytest.mark.parametrize(
    ("args", "done_message"),
    [
        (["actors", "deactivate", "bob"], "deactivated actor bob"),
        (["actors", "key", "revoke", "bob"], "revoked key bob of actor bob at "),
        (["actors", "role", "remove", "bob", "approver"], "actor bob no longer has role approver"),
        (["actors", "group", "remove", "bob", "cab"], "actor bob is no longer in group cab"),
        # bob a requester too: for bob as the submitter, two of cab are alice and carol
        (["actors", "role", "add", "alice", "requester"], "actor alice has role requester"),
    ],
    ids=["deactivate", "key-revoke", "role-remove", "group-remove", "role-add"],
)
def test_a_registry_change_that_would_break_the_active_policy_exits_8_unless_forced(
    database: str, governance: Any, files: Path, args: list[str], done_message: str
) -> None:
    # Given a policy that needs two of cab, and cab has three approvers, one of them gone
    assert governance("policy", "apply", str(files / "policy.yaml")).returncode == 0
    assert governance("actors", "deactivate", "carol").returncode == 0
    before = governance("actors", "list", "--json").stdout

    # When a change would leave cab with too few approvers for someone
    refused = governance(*args)

    # Then it is refused, naming the version, the rule, the submitter and the shortfall
    assert refused.returncode == 8, refused.stderr
    error = one_line_error(refused)
    assert error.startswith(
        "Error: refused: this change would leave approval policy version 1 unsatisfiable: "
        "rule critical-accounts: for "
    )
    assert "step 1 (group cab, 2 approvals) needs 2 distinct eligible approvers" in error
    assert error.endswith("(--force makes it anyway)")
    assert governance("actors", "list", "--json").stdout == before

    # And with --force it is made, with a warning and an audit row saying what it broke
    forced = governance(*args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.startswith(done_message)
    assert one_line_error(forced).startswith(
        "warning: forced: approval policy version 1 is now unsatisfiable: rule critical-accounts"
    )
    ((_, _, details),) = audit(database, "policy_check_forced")
    assert details["policy_version"] == 1
    assert details["shortfalls"] and all(s.startswith("rule ") for s in details["shortfalls"])
    assert governance("actors", "list", "--json").stdout != before


def test_role_and_group_commands_change_an_actor_and_are_audited(
    database: str, governance: Any
) -> None:
    done = [
        governance("actors", "role", "add", "ci", "operator"),
        governance("actors", "group", "add", "ci", "release"),
        governance("actors", "role", "remove", "ci", "operator"),
        governance("actors", "group", "remove", "ci", "release"),
    ]

    assert [d.returncode for d in done] == [0, 0, 0, 0], [d.stderr for d in done]
    assert [d.stdout for d in done] == [
        "actor ci has role operator (roles operator,requester)\n",
        "actor ci is in group release (groups release)\n",
        "actor ci no longer has role operator (roles requester)\n",
        "actor ci is no longer in group release (groups -)\n",
    ]
    changes = [row[2] for row in audit(database, "actor_updated") if row[0] == "ci"]
    assert [sorted(change) for change in changes] == [["roles"], ["groups"], ["roles"], ["groups"]]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["actors", "role", "add", "ci", "root"], 2, "'root' is not one of"),
        (["actors", "group", "add", "ci", " "], 2, "group must not be blank"),
        (["actors", "role", "add", "ci", "requester"], 1, "already has role 'requester'"),
        (["actors", "group", "remove", "ci", "cab"], 1, "has no group 'cab'"),
        (["actors", "role", "add", "ghost", "approver"], 1, "unknown actor 'ghost'"),
    ],
)
def test_a_role_or_group_change_that_cannot_be_made_is_a_one_line_error(
    governance: Any, args: list[str], code: int, message: str
) -> None:
    done = governance(*args)

    assert done.returncode == code
    assert message in one_line_error(done)


# --------------------------------------------------------------------------- explain, pending --for


@pytest.fixture
def pending_request(database: str, files: Path) -> str:
    """A critical account change by ci, under the policy, granted once by alice."""
    assert run(database, "policy", "apply", str(files / "policy.yaml")).returncode == 0
    register(database, "ci")  # the test key, for the in-process transaction to verify
    for approver in ("alice", "bob", "carol", "sec-officer"):
        register(database, approver)
    request_id = new_id("acct")
    payload = submit(request_id, actor="ci")
    payload["args"].update(
        state_type="account",
        intent={"operation_name": "raise-limit", "risk_level": "critical"},
    )
    with psycopg.connect(database, autocommit=True) as conn:
        for signed in (
            payload,
            command("approve_requirement", request_id, 1, actor="alice",
                    args={"approval_id": "policy-1"}),
        ):  # fmt: skip
            stored = apply_command(conn, signed)
            assert stored.event["event_type"] == "transition.applied", stored.event
    return request_id


def test_explain_shows_the_rule_the_requirements_and_who_may_decide_now(
    governance: Any, pending_request: str
) -> None:
    done = governance("policy", "explain", pending_request)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"request {pending_request}: pending (approval), revision 2, submitted by ci"
    assert lines[1].startswith("policy: version 1 (sha256 ") and lines[1].endswith(
        "rule critical-accounts"
    )
    assert lines[2] == "  Limits on accounts need two of cab, then the security officer."
    assert lines[3] == "  matched: state_type in account; risk_level in high, critical"
    assert lines[4].startswith("open step: 1 (only its pending requirements can be decided now")
    assert lines[5].split() == [
        "STEP", "APPROVAL_ID", "SOURCE", "APPROVER", "STATUS", "GRANTS", "DECIDED", "BY",
        "MAY", "DECIDE", "NOW",
    ]  # fmt: skip
    assert lines[6].split() == [
        "1", "policy-1", "policy", "group", "cab", "pending", "1/2", "(alice)", "-", "bob,", "carol"
    ]  # fmt: skip
    assert lines[7].split() == [
        "2", "policy-2", "policy", "actor", "sec-officer", "pending", "0/1", "-", "-", "(waits",
        "for", "step", "1)",
    ]  # fmt: skip
    assert lines[8] == "policy-1: not eligible: alice (already a decider of this request)"


def test_explain_as_json_and_of_an_unknown_request(governance: Any, pending_request: str) -> None:
    document = json.loads(governance("policy", "explain", pending_request, "--json").stdout)
    unknown = governance("policy", "explain", "no-such-request")

    assert (document["request_id"], document["open_step"]) == (pending_request, 1)
    assert [r["may_decide_now"] for r in document["requirements"]] == [["bob", "carol"], []]
    assert document["rule"]["id"] == "critical-accounts"
    assert unknown.returncode == 4
    assert one_line_error(unknown) == "Error: no request no-such-request"


def test_pending_for_lists_what_an_actor_may_decide_now(
    governance: Any, pending_request: str
) -> None:
    bob = governance("pending", "--for", "bob")
    alice = governance("pending", "--for", "alice", "--json")
    officer = governance("pending", "--for", "sec-officer", "--json")

    assert bob.returncode == 0, bob.stderr
    header, row = bob.stdout.splitlines()
    assert header.split()[:6] == ["REQUEST", "STATE", "MUTATION", "REV", "SUBMITTED", "BY"]
    assert row.split()[:6] == [pending_request, "state-1", "update", "2", "ci", "policy-1"]
    # alice granted already; the security officer's step is not open yet
    assert (json.loads(alice.stdout), json.loads(officer.stdout)) == ([], [])


def test_pending_for_takes_no_approver_or_reason(governance: Any) -> None:
    done = governance("pending", "--for", "bob", "--approver", "bob")

    assert done.returncode == 2
    assert one_line_error(done) == (
        "Error: --for lists what one actor may decide now; it takes no --reason or --approver"
    )


def test_explain_of_requests_without_a_policy_or_already_decided(
    database: str, governance: Any
) -> None:
    # Given three requests of requester mode: one naming alice, who approved it, one naming
    # an approver nobody registered, and one that needs nothing
    for actor in ("ci", "alice"):
        register(database, actor)
    requester_mode = Trust(policy_required=False)
    decided, waiting, created = new_id("named"), new_id("ghost"), new_id("bare")
    with psycopg.connect(database, autocommit=True) as conn:
        for payload in (
            submit(
                decided, actor="ci", requirements=[{"approval_id": "a1", "approver_id": "alice"}]
            ),
            command("approve_requirement", decided, 1, actor="alice", args={"approval_id": "a1"}),
            submit(
                waiting, actor="ci", requirements=[{"approval_id": "a1", "approver_id": "ghost"}]
            ),
            submit(created, actor="ci"),
        ):
            stored = apply_command(conn, payload, requester_mode)
            assert stored.event["event_type"] == "transition.applied", stored.event

    shown = {
        r: governance("policy", "explain", r).stdout.splitlines()
        for r in (decided, waiting, created)
    }

    assert shown[decided][1].startswith("policy: none; the requester chose its own requirements")
    assert (
        shown[decided][2]
        == "nothing can be decided now: the request is approved, not pending approval"
    )
    assert shown[decided][4].split() == [
        "1", "a1", "requester", "actor", "alice", "approved", "1/1", "(alice)", "alice", "-",
    ]  # fmt: skip
    assert shown[waiting][4].split()[-1] == "nobody"
    assert shown[waiting][5] == "a1: not eligible: ghost (not registered)"
    assert shown[created][1].startswith("policy: none")
    assert shown[created][2:] == ["requirements: none"]


def test_check_with_a_case_expecting_an_unknown_rule_exits_2(governance: Any, files: Path) -> None:
    (files / "cases.yaml").write_text("- {request: {}, expect: {rule: critical}}\n")

    done = governance(
        "policy", "check", str(files / "policy.yaml"), "--cases", str(files / "cases.yaml")
    )

    assert done.returncode == 2
    assert one_line_error(done) == (
        f"Error: {files / 'cases.yaml'}: cases[0].expect.rule: 'critical' is not a rule of the "
        "policy (its rules: critical-accounts, default)"
    )
