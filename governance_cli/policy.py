"""``governance policy``: the deployment's approval policy, what every request needs.

Applied and read through the operator's own database access, like the registry (see
:mod:`worker.policy_store`); ``check --roster`` needs no database at all, and ``explain``
reads what the client library's :meth:`producer.queries.Queries.explain` reads.

Exit codes of ``apply`` and ``check``: 0 valid and satisfiable; 2 an invalid document, a
group or actor the registry does not have, or a failing case; 8 a rule the registry cannot
satisfy for some submitter (the message names the rule, the submitter and the shortfall).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import yaml

from governance.model import ApprovalStatus
from governance.policy import Attribute, Policy
from governance.policy_document import (
    RULE_FIELDS,
    STEP_FIELDS,
    PolicyError,
    parse_policy,
)
from governance.satisfiability import RosterActor, parse_roster
from governance_cli.actors import registry_connection
from governance_cli.client_format import echo_json, short_time, table
from governance_cli.errors import Refused, Unsatisfiable
from governance_cli.options import database_url_option
from producer.queries import Explanation, Queries, RequirementExplanation

#: As ``governance show``: the request asked for does not exist.
EXIT_NO_REQUEST = 4
#: What a submit is refused with while no policy is applied (required mode).
NO_POLICY = "no approval policy is applied: governance policy apply FILE"


def _read(path: str, what: str) -> bytes:
    """The bytes of ``path`` (``-``: standard input); exit 2 when it cannot be read."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise Refused(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


def _load_policy(path: str) -> Policy:
    try:
        return parse_policy(_read(path, "policy"))
    except PolicyError as exc:
        raise Refused(f"{_name(path)} is not a valid approval policy: {exc}") from exc


def _name(path: str) -> str:
    return "the policy on standard input" if path == "-" else path


def _unsatisfiable(path: str, shortfalls: Sequence[Any]) -> Unsatisfiable:
    reasons = "; ".join(str(shortfall) for shortfall in shortfalls)
    return Unsatisfiable(f"{_name(path)} cannot be satisfied by the registry: {reasons}")


@click.group()
def policy() -> None:
    """The approval policy: what every request needs, decided by the deployment.

    A policy is a YAML document of rules; the first rule that matches a request gives it
    its approval steps (see the README's "Approval policy"). Versions are append-only and
    audited; the newest is the one the workers submit under.

    \b
    Exit codes of apply and check:
      0  valid and satisfiable
      2  an invalid document, a group or actor the registry does not have, or a failing case
      8  a rule the registry cannot satisfy for some submitter
    """


@policy.command()
@database_url_option
@click.argument("file", metavar="FILE")
@click.option(
    "--force",
    is_flag=True,
    help="Apply it even if it names groups or actors the registry does not have, or a rule "
    "cannot be satisfied (the version records that it was forced).",
)
def apply(database_url: str, file: str, force: bool) -> None:
    """Apply the policy in FILE (`-`: standard input) as the new active version.

    Checked first against the registry: every group and actor it names must be registered
    (else exit 2), and every rule satisfiable by distinct eligible approvers for every
    possible submitter (else exit 8, naming the rule, the submitter and the shortfall).
    Prints the version and the sha256 of the document. Applying the active version's own
    document again adds no version.
    """
    from worker.policy_store import PolicyUnsatisfiable, apply_policy

    loaded = _load_policy(file)
    with registry_connection(database_url) as conn:
        try:
            applied = apply_policy(conn, loaded, force=force)
        except PolicyError as exc:
            raise Refused(f"{_name(file)} names what the registry does not have: {exc}") from exc
        except PolicyUnsatisfiable as exc:
            raise _unsatisfiable(file, exc.shortfalls) from exc
    if applied.forced_past:
        click.echo(f"warning: forced past: {'; '.join(applied.forced_past)}", err=True)
    version = applied.version
    if applied.new:
        click.echo(f"applied approval policy version {version.version} (sha256 {version.sha256})")
    else:
        click.echo(
            f"approval policy version {version.version} already has this document "
            f"(sha256 {version.sha256}); nothing applied"
        )


@policy.command()
@database_url_option
@click.argument("file", metavar="FILE")
@click.option(
    "--roster",
    metavar="ROSTER.json",
    help="Check against this registry (what `governance actors list --json` prints) instead "
    "of the database's; no database is used.",
)
@click.option(
    "--cases",
    metavar="CASES.yaml",
    help="A list of requests and the rule each must match: "
    "{request: {mutation_type, state_type, risk_level, scope, category, tags, requester}, "
    "expect: {rule: ID}}.",
)
def check(database_url: str, file: str, roster: str | None, cases: str | None) -> None:
    """Check the policy in FILE (`-`: standard input) without applying it.

    Its static rules, the groups and actors it names, its satisfiability for every
    possible submitter, and with --cases the rule each case's request matches (the
    requester's groups from the registry). Against the database's registry, or with
    --roster against a registry exported as JSON, with no database at all: a policy can be
    tested in its own CI. Exits 0 when it is valid and satisfiable and every case passes, 2
    for an invalid document, an unknown name or a failing case, 8 when it is unsatisfiable.
    """
    from governance.satisfiability import unsatisfiable
    from governance_cli.policy_cases import failing_cases, parse_cases
    from worker.policy_store import registry_problems

    loaded = _load_policy(file)
    listed = None
    if cases is not None:
        try:
            listed = parse_cases(_read(cases, "cases"))
        except PolicyError as exc:
            raise Refused(f"{cases} is not a valid list of cases: {exc}") from exc
    actors, source = _roster(database_url, roster)
    problems = registry_problems(loaded, actors)
    if problems:
        raise Refused(f"{_name(file)} names what {source} does not have: {'; '.join(problems)}")
    if listed is not None:
        try:
            failures = failing_cases(loaded, listed, actors)
        except PolicyError as exc:
            raise Refused(f"{cases}: {exc}") from exc
        if failures:
            raise Refused(
                f"{len(failures)} of {len(listed)} case(s) fail: "
                + "; ".join(str(failure) for failure in failures)
            )
    shortfalls = unsatisfiable(loaded, actors)
    if shortfalls:
        raise _unsatisfiable(file, shortfalls)
    submitters = sum(actor.may_submit for actor in actors)
    click.echo(f"{_name(file)}: valid, {len(loaded.rules)} rule(s), sha256 {loaded.sha256}")
    click.echo(
        f"satisfiable against {source} ({len(actors)} actor(s)): for each of "
        f"{submitters} requester(s) and for an outsider"
    )
    if listed is not None:
        click.echo(f"{len(listed)} case(s) pass")


def _roster(database_url: str, path: str | None) -> tuple[list[RosterActor], str]:
    """The registry to check against, and how messages name it."""
    if path is not None:
        try:
            return list(parse_roster(_read(path, "roster").decode("utf-8-sig"))), path
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise Refused(
                f"{path} is not a roster (`governance actors list --json`): {exc}"
            ) from exc
    from worker import registry

    with registry_connection(database_url) as conn:
        return registry.roster(conn), "the registry"


@policy.command()
@database_url_option
@click.option(
    "--version",
    "number",
    type=click.IntRange(min=1),
    help="This version [default: the active one].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
def show(database_url: str, number: int | None, as_json: bool) -> None:
    """Show the active approval policy (or version N): who applied it and when, and its
    document."""
    from worker.policy_store import active_policy, policy_version

    with registry_connection(database_url) as conn:
        found = policy_version(conn, number) if number is not None else active_policy(conn)
    if found is None:
        raise click.ClickException(NO_POLICY)
    if as_json:
        echo_json(found.to_dict())
        return
    click.echo(f"version:    {found.version}")
    click.echo(f"sha256:     {found.sha256}")
    click.echo(f"applied:    {short_time(found.to_dict()['applied_at'])} by {found.applied_by}")
    click.echo(f"forced:     {'yes' if found.forced else 'no'}")
    click.echo("")
    click.echo(
        yaml.safe_dump(
            _display_order(found.document),
            sort_keys=False,
            allow_unicode=True,
            default_flow_style=None,
            width=100,
        ).rstrip()
    )


def _display_order(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document in the order the README writes one (the database keeps its own)."""

    def ordered(raw: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
        return {field: raw[field] for field in fields if field in raw}

    rules = []
    for raw in document.get("rules") or ():
        rule = ordered(raw, RULE_FIELDS)
        if isinstance(rule.get("when"), Mapping):
            rule["when"] = ordered(rule["when"], [attribute.value for attribute in Attribute])
        rule["require"] = [ordered(step, STEP_FIELDS) for step in rule.get("require") or ()]
        rules.append(rule)
    return {"policy": document.get("policy"), "rules": rules}


@policy.command()
@database_url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines, documents included.")
def history(database_url: str, as_json: bool) -> None:
    """List every version of the approval policy, oldest first (the newest is active)."""
    from worker.policy_store import policy_history

    with registry_connection(database_url) as conn:
        versions = policy_history(conn)
    if as_json:
        for version in versions:
            echo_json(version.to_dict())
        return
    rows = [
        [
            v.version,
            short_time(v.to_dict()["applied_at"]),
            v.applied_by,
            "yes" if v.forced else "no",
            len(v.document.get("rules") or ()),
            v.sha256,
        ]
        for v in versions
    ]
    click.echo(table(["version", "applied at", "by", "forced", "rules", "sha256"], rows))
    if not versions:
        click.echo(NO_POLICY, err=True)


@policy.command()
@click.argument("request_id")
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON.")
@database_url_option
def explain(request_id: str, as_json: bool, database_url: str) -> None:
    """Explain what REQUEST_ID needs and who may decide it now.

    The policy version and rule it was submitted under, every requirement with its source,
    step, status and grants, and for each one still pending the actors who may decide it
    now: eligible (active, the approver role, an unrevoked key, named or a member of its
    group), not the submitter, not already a decider of the request. Only the open step
    (the lowest with a pending requirement) can be decided now. Exits 4 when the request
    does not exist.
    """
    found = Queries(database_url).explain(request_id)
    if found is None:
        click.echo(f"Error: no request {request_id}", err=True)
        sys.exit(EXIT_NO_REQUEST)
    if as_json:
        echo_json(found.to_dict())
    else:
        click.echo(explanation_text(found))


def explanation_text(found: Explanation) -> str:
    """An explanation as ``governance policy explain`` prints it."""
    request = found.request
    status = request.status.value
    if request.pending_reason is not None:
        status += f" ({request.pending_reason.value})"
    lines = [
        f"request {request.request_id}: {status}, revision {request.revision}, "
        f"submitted by {found.submitter}"
    ]
    if request.policy is None:
        lines.append(
            "policy: none; the requester chose its own requirements (requester mode, or a "
            "request older than the approval policy)"
        )
    else:
        reference = request.policy
        lines.append(
            f"policy: version {reference.version} (sha256 {reference.sha256}), "
            f"rule {reference.rule_id}"
        )
        rule = found.rule or {}
        if rule.get("description"):
            lines.append(f"  {rule['description']}")
        when = rule.get("when")
        if isinstance(when, Mapping):
            conditions = [
                f"{attribute.value} in {', '.join(when[attribute.value])}"
                for attribute in Attribute
                if attribute.value in when
            ]
            lines.append(f"  matched: {'; '.join(conditions)}")
        else:
            lines.append("  matched: every request (the last rule)")
    if not request.approval_requirements:
        lines.append("requirements: none")
        return "\n".join(lines)
    if found.open_step is not None:
        lines.append(
            f"open step: {found.open_step} (only its pending requirements can be decided now; "
            "one actor decides at most one requirement of a request)"
        )
    else:
        lines.append(f"nothing can be decided now: the request is {status}, not pending approval")
    rows = [
        [
            r.requirement.step_order,
            r.requirement.approval_id,
            r.requirement.source.value,
            _approver(r),
            r.requirement.status.value,
            _grants(r),
            r.requirement.decided_by or "-",
            _who_now(r, found.open_step),
        ]
        for r in found.requirements
    ]
    headers = ["step", "approval_id", "source", "approver", "status", "grants", "decided by"]
    lines.append(table([*headers, "may decide now"], rows))
    for r in found.requirements:
        if r.not_eligible:
            reasons = ", ".join(f"{actor} ({why})" for actor, why in r.not_eligible)
            lines.append(f"{r.requirement.approval_id}: not eligible: {reasons}")
    return "\n".join(lines)


def _approver(explained: RequirementExplanation) -> str:
    requirement = explained.requirement
    if requirement.approver_id is not None:
        return f"actor {requirement.approver_id}"
    return f"group {requirement.approver_group}"


def _grants(explained: RequirementExplanation) -> str:
    """Grants given of those needed, and by whom (a named approver's approval is its one)."""
    requirement = explained.requirement
    names = [grant.actor_id for grant in requirement.grants]
    if requirement.approver_id is not None and requirement.status is ApprovalStatus.APPROVED:
        names = [requirement.decided_by or requirement.approver_id]
    return f"{len(names)}/{requirement.min_approvals}" + (f" ({', '.join(names)})" if names else "")


def _who_now(explained: RequirementExplanation, open_step: int | None) -> str:
    if explained.requirement.status is not ApprovalStatus.PENDING or open_step is None:
        return "-"
    if explained.waiting_for_step is not None:
        return f"- (waits for step {explained.waiting_for_step})"
    if explained.may_decide_now:
        return ", ".join(explained.may_decide_now)
    return "nobody"


COMMANDS = (policy,)
