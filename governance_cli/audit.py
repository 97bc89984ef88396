"""``governance verify`` and ``governance export``: is a request's history as it was
written? The chain over its decisions, the signed command kept for every revision and its
signature against the registered key; an anchor file, signed by an operator key pinned on
the command line, against a rewrite by whoever holds the database; and an exported history
checked with no database at all.

Exit codes of ``verify``: 0 all holds, 6 something was altered (one line per finding), 2
invalid usage (a missing anchor file without ``--init`` too), 4 no such request, 7 the
database cannot be reached or used.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import psycopg

from governance_cli.errors import ServiceUnavailable
from governance_cli.options import database_url_option
from producer.outcomes import EXIT_ALTERED, EXIT_USAGE

if TYPE_CHECKING:
    from governance.replay import Deployment
    from producer.audit import Findings
    from producer.keys import SigningKey

#: As ``governance show``: the request asked for does not exist.
EXIT_NO_REQUEST = 4


def _usage_error(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(EXIT_USAGE)


@contextlib.contextmanager
def _database(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection (every read takes its own short read-only transaction) to
    the URL the option checked; its errors become one-line messages, an unreachable database
    exit 7 (see governance_cli.errors)."""
    try:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
            yield conn
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
        raise ServiceUnavailable(
            "the database has no history chain yet: run `governance migrate` first"
        ) from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        raise click.ClickException(
            f"this database role may not read the history: {exc.diag.message_primary}"
        ) from exc


def _echo_findings(findings: Findings) -> None:
    for line in findings.lines():
        click.echo(line)


def _finish(findings: Findings, as_json: bool, extra: dict[str, Any] | None = None) -> NoReturn:
    """Print what was found and exit 0 when it all holds, 6 when not."""
    if as_json:
        click.echo(json.dumps({**findings.to_dict(), **(extra or {})}, ensure_ascii=False))
    else:
        _echo_findings(findings)
        click.echo(findings.summary(), err=True)
    sys.exit(0 if findings.ok else EXIT_ALTERED)


def _read_export(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _usage_error(f"cannot read {path}: {exc}")
    try:
        return json.loads(text)
    except ValueError as exc:
        _usage_error(f"{path} is not JSON: {exc}")


def _verify_file(
    path: str,
    require_signed: bool,
    as_json: bool,
    deployment: Deployment,
    keys_path: str | None,
) -> NoReturn:
    from producer.audit import ExportFormatError, load_trusted_keys, verify_export

    trusted = None
    if keys_path is not None:
        try:
            trusted = load_trusted_keys(_read_export(keys_path))
        except ExportFormatError as exc:
            _usage_error(f"{keys_path}: {exc}")
    try:
        findings = verify_export(
            _read_export(path),
            require_signed=require_signed,
            deployment=deployment,
            trusted_keys=trusted,
        )
    except ExportFormatError as exc:
        _usage_error(f"{path}: {exc}")
    keys = (
        f"checked against the trusted key set {keys_path}"
        if keys_path is not None
        else "taken from the export only, not checked against a trusted set (give --keys FILE)"
    )
    if not as_json:
        click.echo(f"keys: {keys}", err=True)
    _finish(findings, as_json, {"file": path, "keys": keys})


def _deployment(
    auth: str, policy_mode: str, audience: str, max_command_age: float, origins: str
) -> Deployment:
    from datetime import timedelta

    from governance.authentication import Policy
    from governance.passkeys import origins_from
    from governance.replay import Deployment

    if max_command_age <= 0:
        _usage_error("--max-command-age must be a positive number of seconds")
    try:
        accepted = origins_from(origins)
    except ValueError as exc:
        _usage_error(f"--webauthn-origins: {exc}")
    if not accepted:
        _usage_error("--webauthn-origins names no origin")
    return Deployment(
        signed=auth == "signed",
        policy_required=policy_mode == "required",
        commands=Policy(audience, timedelta(seconds=max_command_age), accepted),
    )


def _load_operator_key(path: str | None) -> SigningKey:
    from producer.keys import KeyFileError, load_key_file

    if path is None:
        _usage_error(
            "--anchor writes a fresh anchor: give an operator's key with --signing-key FILE "
            "or GOVERNANCE_SIGNING_KEY"
        )
    try:
        return load_key_file(path)
    except KeyFileError as exc:
        _usage_error(str(exc))


@dataclass(frozen=True)
class _Anchoring:
    """What ``verify --all --anchor`` checks the anchor with and writes the next one with."""

    key: SigningKey
    pinned: list[str]
    init: bool


def _pinned_keys(values: tuple[str, ...]) -> list[str]:
    """The public keys given with --anchor-key; a usage error when none are, or one is not
    a key."""
    from producer.keys import KeyFileError, load_public_key

    if not values:
        _usage_error(
            "--anchor checks the anchor against the operator public keys you trust: give "
            "them with --anchor-key KEY_OR_FILE (repeatable), from outside the database"
        )
    pinned = []
    for value in values:
        try:
            pinned.append(load_public_key(value))
        except (KeyFileError, ValueError) as exc:
            _usage_error(f"--anchor-key: {exc}")
    return pinned


def _check_anchor_options(
    anchor_path: str | None, anchor_keys: tuple[str, ...], init: bool, signing_key: str | None
) -> _Anchoring | None:
    """The key to sign a fresh anchor with and the pinned keys, checked before the long
    verification; None without --anchor."""
    if anchor_path is None:
        return None
    pinned = _pinned_keys(anchor_keys)
    if not init and not os.path.exists(anchor_path):
        _missing_anchor(anchor_path)
    key = _load_operator_key(signing_key)
    if key.public_key_b64 not in pinned:
        # The anchor it would write could not pass the next check with these pins.
        _usage_error(
            f"the signing key {key.key_id} is not one of the pinned --anchor-key keys: the "
            "anchor it writes would fail the next check"
        )
    return _Anchoring(key, pinned, init)


def _missing_anchor(anchor_path: str) -> NoReturn:
    # A missing anchor is not a first run: it may be the evidence someone removed.
    _usage_error(
        f"there is no anchor {anchor_path}: give --init to write the first one (only then "
        "is a missing anchor expected)"
    )


def _verify_all(
    conn: psycopg.Connection[Any],
    require_signed: bool,
    anchor_path: str | None,
    anchoring: _Anchoring | None,
    as_json: bool,
    deployment: Deployment,
    database_url: str,
    jobs: int,
    page_size: int,
) -> NoReturn:
    from producer.audit import AnchorError, Findings, check_anchor, write_anchor
    from producer.verify_all import verify_all

    findings = Findings()
    heads = {}
    # The registry's and the policies' histories are read once per process, before the
    # requests: a change made meanwhile only concerns decisions this run may not see either.
    for page in verify_all(
        conn,
        database_url,
        require_signed=require_signed,
        deployment=deployment,
        jobs=jobs,
        page_size=page_size,
    ):
        if not as_json:
            # Streamed: a large database shows its findings as they are found.
            _echo_findings(page.findings)
        findings.merge(page.findings)
        # What the anchor will hold is what was just verified, request by request.
        heads.update(page.heads)
    streamed = len(findings.items)
    extra: dict[str, Any] = {}
    if anchor_path is not None and anchoring is not None:
        key = anchoring.key
        extra["anchor"] = {"file": anchor_path, "checked": False, "written": False}
        # Asked again after the long verification: a file that appeared meanwhile is checked,
        # never written over unchecked, and one that vanished needs --init all the same.
        if os.path.exists(anchor_path):
            try:
                anchored = check_anchor(conn, anchor_path, pinned=anchoring.pinned)
            except AnchorError as exc:
                _usage_error(f"{exc} (left as it is)")
            findings.items.extend(anchored.items)
            extra["anchor"].update(checked=True, requests=anchored.requests)
        elif not anchoring.init:
            _missing_anchor(anchor_path)
        if findings.ok:
            try:
                written = write_anchor(conn, key, anchor_path, heads=heads)
            except AnchorError as exc:
                raise click.ClickException(str(exc)) from exc
            extra["anchor"].update(written=True, created_at=written["created_at"])
    if as_json:
        _finish(findings, as_json, extra)
    for line in findings.lines()[streamed:]:
        click.echo(line)
    click.echo(findings.summary(), err=True)
    if "anchor" in extra:
        anchor = extra["anchor"]
        if anchor["checked"]:
            click.echo(f"anchor {anchor_path}: {anchor['requests']} request(s) checked", err=True)
        if anchor["written"]:
            click.echo(f"anchor {anchor_path}: written ({len(heads)} request(s))", err=True)
        else:
            # Never over an anchor that failed, nor to bless a history that did: the old
            # file is the evidence.
            click.echo(f"anchor {anchor_path}: not renewed (something was altered)", err=True)
    sys.exit(0 if findings.ok else EXIT_ALTERED)


@click.command()
@click.argument("request_id", required=False)
@click.option("--all", "all_requests", is_flag=True, help="Verify every request.")
@click.option(
    "--require-signed",
    is_flag=True,
    help="Count decisions applied unsigned in development mode as failures (the worker's "
    "own expiry of a due request never is).",
)
@click.option(
    "--anchor",
    "anchor_path",
    type=click.Path(dir_okay=False),
    help="With --all: check this anchor file (no decision up to it may have been rewritten; "
    "it must be signed by an --anchor-key), then write a fresh one to it, signed with "
    "--signing-key. A missing file is an error unless --init. Keep it off the database host.",
)
@click.option(
    "--anchor-key",
    "anchor_keys",
    multiple=True,
    metavar="KEY_OR_FILE",
    help="An operator public key the anchor may be signed by, taken from outside the "
    "database (repeatable; at least one with --anchor): the base64url key `governance "
    "keygen` prints, a file holding it, or that operator's key file.",
)
@click.option(
    "--init",
    is_flag=True,
    help="With --anchor: the anchor file may be missing; write the first one. An existing "
    "file is checked all the same.",
)
@click.option(
    "--signing-key",
    "signing_key",
    envvar="GOVERNANCE_SIGNING_KEY",
    type=click.Path(dir_okay=False),
    help="An operator's key file, to sign the anchor [env GOVERNANCE_SIGNING_KEY].",
)
@click.option(
    "--file",
    "export_file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Verify a document written by `governance export` (no database needed).",
)
@click.option(
    "--auth",
    type=click.Choice(["signed", "off"]),
    default="signed",
    envvar="GOVERNANCE_AUTH",
    show_default=True,
    help="How the deployment's workers judged commands, as they were set "
    "[env GOVERNANCE_AUTH]: signed, or off (development mode, unsigned decisions expected).",
)
@click.option(
    "--policy",
    "policy_mode",
    type=click.Choice(["required", "requester"]),
    default="required",
    envvar="GOVERNANCE_POLICY",
    show_default=True,
    help="How submits took their approvals [env GOVERNANCE_POLICY].",
)
@click.option(
    "--audience",
    default="governance",
    envvar="GOVERNANCE_AUDIENCE",
    show_default=True,
    help="The audience signed commands had to name [env GOVERNANCE_AUDIENCE].",
)
@click.option(
    "--max-command-age",
    type=float,
    default=86_400.0,
    envvar="GOVERNANCE_MAX_COMMAND_AGE",
    show_default=True,
    help="Seconds a signed command could be old when applied [env GOVERNANCE_MAX_COMMAND_AGE].",
)
@click.option(
    "--webauthn-origins",
    "webauthn_origins",
    default="http://localhost:8080",
    envvar="GOVERNANCE_WEBAUTHN_ORIGINS",
    show_default=True,
    help="The console origins passkey-signed commands could come from, comma-separated "
    "[env GOVERNANCE_WEBAUTHN_ORIGINS].",
)
@click.option(
    "--keys",
    "keys_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="With --file: the trusted public keys (a JSON list of key_id, actor_id, "
    "public_key); every key the export relies on must be one of them. Without it the "
    "export's keys are taken on its own word, and the result says so.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="With --all: verify in this many processes (it is CPU-bound: one per core).",
)
@click.option(
    "--page-size",
    type=click.IntRange(min=1),
    default=500,
    hidden=True,
    help="With --all: requests read (and handed to a process) at a time.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@database_url_option
def verify(
    request_id: str | None,
    all_requests: bool,
    require_signed: bool,
    anchor_path: str | None,
    anchor_keys: tuple[str, ...],
    init: bool,
    signing_key: str | None,
    export_file: str | None,
    auth: str,
    policy_mode: str,
    audience: str,
    max_command_age: float,
    webauthn_origins: str,
    keys_path: str | None,
    jobs: int,
    page_size: int,
    as_json: bool,
    database_url: str,
) -> None:
    """Verify REQUEST_ID's history (or --all, or an export --file): every decision's
    chain hash, and every kept command re-executed through the rules with the registry
    and the policy as they stood then, which must give the stored decisions and row.

    \b
    Prints one line per finding, naming the request, the decision (revision/position)
    or revision and what is wrong; unsigned decisions are listed ("unsigned: ...").
    In a signed deployment only the worker's expiries of due requests may be unsigned;
    development-mode ones fail with --require-signed.

    \b
    With --all --anchor FILE --anchor-key KEY --signing-key KEYFILE: FILE, signed by one of
    the pinned --anchor-key keys, proves no decision up to it was rewritten; when all
    holds, a fresh anchor is written over it (never over a failed check). The first run,
    with no anchor yet, takes --init.

    \b
    Exit codes: 0 all holds, 6 something was altered (an anchor signed by a key not pinned
    too), 2 invalid usage (a missing anchor file without --init too), 4 no such request,
    7 the database cannot be reached or used.
    """
    from producer.audit import verify_request

    deployment = _deployment(auth, policy_mode, audience, max_command_age, webauthn_origins)
    chosen = sum((request_id is not None, all_requests, export_file is not None))
    if chosen != 1:
        raise click.UsageError("give exactly one of REQUEST_ID, --all or --file F")
    if anchor_path is not None and not all_requests:
        raise click.UsageError("--anchor goes with --all")
    if jobs > 1 and not all_requests:
        raise click.UsageError("--jobs goes with --all")
    if keys_path is not None and export_file is None:
        raise click.UsageError("--keys goes with --file")
    if anchor_path is None and (anchor_keys or init):
        raise click.UsageError("--anchor-key and --init go with --anchor")
    if export_file is not None:
        _verify_file(export_file, require_signed, as_json, deployment, keys_path)
    anchoring = _check_anchor_options(anchor_path, anchor_keys, init, signing_key)
    with _database(database_url) as conn:
        if all_requests:
            if anchoring is not None:
                _check_key(conn, anchoring.key)
            _verify_all(
                conn,
                require_signed,
                anchor_path,
                anchoring,
                as_json,
                deployment,
                database_url,
                jobs,
                page_size,
            )
        assert request_id is not None
        findings = verify_request(
            conn, request_id, require_signed=require_signed, deployment=deployment
        )
    if findings is None:
        click.echo(f"Error: no request {request_id}", err=True)
        sys.exit(EXIT_NO_REQUEST)
    _finish(findings, as_json)


@click.command()
@click.argument("request_id")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="The file to write [default: stdout].",
)
@database_url_option
def export(request_id: str, out: str, database_url: str) -> None:
    """Write REQUEST_ID's history as one JSON document: the request, its decisions with
    their chain hashes, the signed commands behind them and the public keys involved.
    `governance verify --file F` checks it with no database.

    Exits 4 when the request does not exist.
    """
    from producer.audit import UnknownRequest, export_request

    with _database(database_url) as conn:
        try:
            document = export_request(conn, request_id)
        except UnknownRequest:
            click.echo(f"Error: no request {request_id}", err=True)
            sys.exit(EXIT_NO_REQUEST)
    # default=str: a column of a type JSON lacks is shown, not fatal (it is not verified).
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    text += "\n"
    if out == "-":
        click.echo(text, nl=False)
        return
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror or exc}") from exc
    click.echo(
        f"exported request {request_id} ({len(document['decisions'])} decision(s)) to {out}",
        err=True,
    )


def _check_key(conn: psycopg.Connection[Any], key: SigningKey) -> None:
    """Refuse, before the long verification, a key that may not sign an anchor."""
    from producer.audit import AnchorError, check_operator_key

    try:
        check_operator_key(conn, key)
    except AnchorError as exc:
        _usage_error(str(exc))


COMMANDS = (verify, export)
